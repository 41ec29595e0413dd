"""``torchckpt.adapters.tensors``: the dtype mapping and zero-copy tensor bytes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from torchckpt.adapters.tensors import (
    array_to_tensor,
    tensor_to_buffer,
    tf_dtype_of,
    torch_dtype_of,
    torch_dtype_or_name,
)
from torchckpt.errors import UntrackableError
from torchckpt.format.dtypes import FIXED_WIDTH, DataType

D = DataType
MAPPING = {
    torch.float32: D.DT_FLOAT, torch.float64: D.DT_DOUBLE, torch.float16: D.DT_HALF,
    torch.bfloat16: D.DT_BFLOAT16, torch.int8: D.DT_INT8, torch.int16: D.DT_INT16,
    torch.int32: D.DT_INT32, torch.int64: D.DT_INT64, torch.uint8: D.DT_UINT8,
    torch.uint16: D.DT_UINT16, torch.uint32: D.DT_UINT32, torch.uint64: D.DT_UINT64,
    torch.bool: D.DT_BOOL, torch.complex64: D.DT_COMPLEX64, torch.complex128: D.DT_COMPLEX128,
    torch.float8_e5m2: D.DT_FLOAT8_E5M2, torch.float8_e4m3fn: D.DT_FLOAT8_E4M3FN,
    torch.float8_e4m3fnuz: D.DT_FLOAT8_E4M3FNUZ, torch.float8_e5m2fnuz: D.DT_FLOAT8_E5M2FNUZ,
}


@pytest.mark.parametrize("dtype", list(MAPPING), ids=str)
def test_mapping_both_ways(dtype: torch.dtype) -> None:
    assert tf_dtype_of(dtype) == MAPPING[dtype]
    assert torch_dtype_of(MAPPING[dtype]) == dtype
    assert torch_dtype_or_name(MAPPING[dtype]) == dtype
    assert torch.empty((), dtype=dtype).element_size() == FIXED_WIDTH[MAPPING[dtype]].itemsize


@pytest.mark.parametrize("dtype", [torch.complex32, torch.qint8, torch.quint8,
                                   torch.float4_e2m1fn_x2, torch.float8_e8m0fnu], ids=str)
def test_torch_dtypes_tf_lacks(dtype: torch.dtype) -> None:
    with pytest.raises(UntrackableError, match="no TensorFlow"):
        tf_dtype_of(dtype)
    assert issubclass(UntrackableError, TypeError)


def test_tf_dtypes_torch_lacks() -> None:
    assert torch_dtype_of(D.DT_QINT32) == torch_dtype_or_name(D.DT_QINT32) == torch.int32
    assert torch_dtype_of(D.DT_INT4) == torch.int8 and torch_dtype_or_name(D.DT_INT4) == "int4"
    assert torch_dtype_or_name(D.DT_STRING) == "string"
    assert torch_dtype_or_name(99) == "DT_<99>"
    with pytest.raises(TypeError):
        torch_dtype_of(D.DT_STRING)
    with pytest.raises(TypeError):
        array_to_tensor(np.array([b"x"], dtype=object), D.DT_STRING)


def _sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape)) if shape else 1
    width = torch.empty((), dtype=dtype).element_size()
    raw = torch.arange(n * width, dtype=torch.int64).remainder(251).to(torch.uint8)
    if dtype == torch.bool:
        return (raw[:n] % 2).bool().reshape(shape)
    return raw.view(dtype).reshape(shape)


@pytest.mark.parametrize("shape", [(3, 4), (), (2, 0)], ids=["matrix", "scalar", "empty"])
@pytest.mark.parametrize("dtype", list(MAPPING), ids=str)
def test_bytes_round_trip(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    t = _sample(dtype, shape)
    buf = tensor_to_buffer(t)
    assert buf.nbytes == t.numel() * t.element_size() and buf.format == "B"
    storage = np.frombuffer(bytes(buf), dtype=FIXED_WIDTH[MAPPING[dtype]].storage).reshape(shape)
    back = array_to_tensor(storage.copy(), MAPPING[dtype])
    assert back.dtype == dtype and back.shape == t.shape  # 0-d stays 0-d
    assert bytes(tensor_to_buffer(back)) == bytes(buf)


def test_tensor_to_buffer_is_a_view() -> None:
    t = torch.zeros(4, dtype=torch.bfloat16, requires_grad=True)
    buf = tensor_to_buffer(t)
    with torch.no_grad():
        t[1] = 1.0
    assert bytes(buf)[2:4] == bytes(torch.tensor([1.0], dtype=torch.bfloat16).view(torch.uint8))
    offset = torch.arange(10.0)[4:]  # contiguous with a storage offset
    assert bytes(tensor_to_buffer(offset)) == offset.numpy().tobytes()


def test_array_to_tensor_shares_writable_memory() -> None:
    array = np.arange(6, dtype=np.uint16).reshape(2, 3)
    t = array_to_tensor(array, D.DT_BFLOAT16)
    assert t.dtype == torch.bfloat16 and np.shares_memory(t.view(torch.int16).numpy(), array)
    readonly = np.frombuffer(b"\x00\x00\x80\x3f", dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps read-only memory
        copy = array_to_tensor(readonly, D.DT_FLOAT)
    assert copy.tolist() == [1.0]
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    assert array_to_tensor(strided, D.DT_FLOAT).tolist() == strided.tolist()
    big_endian = np.array([1.5, 2.0], dtype=">f4")
    assert array_to_tensor(big_endian, D.DT_FLOAT).tolist() == [1.5, 2.0]


@pytest.mark.parametrize("bad,why", [
    (torch.arange(12.0).reshape(3, 4).t(), "contiguous"),
    (torch.tensor([1 + 1j]).conj(), "conjugate"),
    (torch.zeros(2, dtype=torch.complex32), "no TensorFlow"),
])
def test_tensor_to_buffer_preconditions(bad: torch.Tensor, why: str) -> None:
    with pytest.raises((ValueError, TypeError), match=why):
        tensor_to_buffer(bad)


def test_sub_byte_values_are_normalized() -> None:
    stored = np.array([0x0F, 0x08, 0x07, 0xF9, 0x00], np.uint8)
    assert array_to_tensor(stored.view(np.int8), D.DT_INT4).tolist() == [-1, -8, 7, -7, 0]
    assert array_to_tensor(stored, D.DT_UINT4).tolist() == [15, 8, 7, 9, 0]
    assert array_to_tensor(np.array([3, 2, 1, 0], np.uint8), D.DT_INT2).tolist() == [-1, -2, 1, 0]
    assert array_to_tensor(np.array([7, 2], np.uint8), D.DT_UINT2).tolist() == [3, 2]
    scalar = array_to_tensor(np.array(0x0E, np.int8), D.DT_INT4)  # 0-d stays a 0-d tensor
    assert scalar.shape == () and scalar.item() == -2
