"""torch dtypes <-> TF ``DataType``, and tensor bytes without copies.

The format layer speaks numpy *storage* dtypes (bfloat16 and float8 as unsigned
bit patterns, see :mod:`torchckpt.format.dtypes`); torch has the real types, so
the conversion happens here with ``Tensor.view(dtype)``, which reinterprets the
bytes without copying.

Mapping (TF ``DataType`` -> torch dtype, what :func:`array_to_tensor` returns):

* float16/32/64, bfloat16, int8-64, uint8-64, bool, complex64/128 and
  float8 e5m2 / e4m3fn / e4m3fnuz / e5m2fnuz: the torch dtype of the same name.
* quantized qint8/quint8/qint16/quint16/qint32: their plain integer type, as
  ``tf.train.load_checkpoint(...).get_tensor`` returns them (torch's own
  quantized dtypes carry a scale and zero point, TF's do not).
* int4/int2 (one byte per element on disk): int8, sign-extended from the low
  bits; uint4/uint2: uint8, masked to the low bits.
* float4_e2m1fn and float8_e4m3b11fnuz: uint8 bit patterns (torch has no such
  unpacked type). :func:`torch_dtype_or_name` names these, and the sub-byte
  integers, by their TF name so callers can tell.
* DT_STRING has no tensor type; strings stay numpy object arrays of ``bytes``.

torch tensors are always in the host's byte order; TF bundles are written
little-endian, which is every platform torch supports for this purpose.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import UntrackableError
from ..format._fast_entries import PayloadLocation
from ..format.dtypes import FIXED_WIDTH, DataType, dtype_name

_TORCH_TO_TF: dict[torch.dtype, DataType] = {
    torch.float32: DataType.DT_FLOAT,
    torch.float64: DataType.DT_DOUBLE,
    torch.float16: DataType.DT_HALF,
    torch.bfloat16: DataType.DT_BFLOAT16,
    torch.int8: DataType.DT_INT8,
    torch.int16: DataType.DT_INT16,
    torch.int32: DataType.DT_INT32,
    torch.int64: DataType.DT_INT64,
    torch.uint8: DataType.DT_UINT8,
    torch.bool: DataType.DT_BOOL,
    torch.complex64: DataType.DT_COMPLEX64,
    torch.complex128: DataType.DT_COMPLEX128,
}
# Newer torch dtypes, looked up by name so that torch >= 2.4 without one still imports.
for _name, _dt in (("uint16", DataType.DT_UINT16), ("uint32", DataType.DT_UINT32),
                   ("uint64", DataType.DT_UINT64), ("float8_e5m2", DataType.DT_FLOAT8_E5M2),
                   ("float8_e4m3fn", DataType.DT_FLOAT8_E4M3FN),
                   ("float8_e4m3fnuz", DataType.DT_FLOAT8_E4M3FNUZ),
                   ("float8_e5m2fnuz", DataType.DT_FLOAT8_E5M2FNUZ)):
    if hasattr(torch, _name):
        _TORCH_TO_TF[getattr(torch, _name)] = _dt

_TF_TO_TORCH: dict[int, torch.dtype] = {int(v): k for k, v in _TORCH_TO_TF.items()}
#: torch dtype -> its TF dtype, for lookups that must not raise (see tf_dtype_of)
TF_DTYPES: Mapping[torch.dtype, DataType] = MappingProxyType(_TORCH_TO_TF)
#: TF dtype -> the torch dtype of the same values (only exact, one-to-one pairs)
TORCH_DTYPES: Mapping[int, torch.dtype] = MappingProxyType(
    {int(v): k for k, v in _TORCH_TO_TF.items()})
# Types torch holds only as plain integers (values exact, type identity lost).
_AS_INTEGERS: dict[DataType, torch.dtype] = {
    DataType.DT_QINT8: torch.int8, DataType.DT_QUINT8: torch.uint8,
    DataType.DT_QINT16: torch.int16, DataType.DT_QINT32: torch.int32,
    DataType.DT_QUINT16: getattr(torch, "uint16", torch.int16),
    DataType.DT_INT4: torch.int8, DataType.DT_INT2: torch.int8,
    DataType.DT_UINT4: torch.uint8, DataType.DT_UINT2: torch.uint8,
    DataType.DT_FLOAT4_E2M1FN: torch.uint8, DataType.DT_FLOAT8_E4M3B11FNUZ: torch.uint8,
}
for _dt, _torch in _AS_INTEGERS.items():
    _TF_TO_TORCH.setdefault(int(_dt), _torch)

# Sub-byte integers: (bits, signed). The file holds one byte per element, value in
# the low bits (TF writes int4 -1 as 0x0f), so the high bits are normalized on read.
_SUB_BYTE = {DataType.DT_INT4: (4, True), DataType.DT_INT2: (2, True),
             DataType.DT_UINT4: (4, False), DataType.DT_UINT2: (2, False)}
# TF types whose values no torch dtype names: reported by name in dtype maps.
_NAMED_ONLY = frozenset({DataType.DT_STRING, DataType.DT_FLOAT4_E2M1FN,
                         DataType.DT_FLOAT8_E4M3B11FNUZ, *_SUB_BYTE})

# Same-width integer types used to expose bytes of types numpy cannot hold.
_BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NUMPY_HOLDS = frozenset({torch.float32, torch.float64, torch.float16, torch.int8, torch.int16,
                          torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64,
                          torch.complex128})


def tf_dtype_of(dtype: torch.dtype) -> DataType:
    """The TF dtype of a torch dtype.

    Raises:
        UntrackableError: a torch dtype TensorFlow has no type for (complex32,
            torch's quantized types, packed float4, ...). It is a ``TypeError``.
    """
    found = _TORCH_TO_TF.get(dtype)
    if found is None:
        raise UntrackableError(f"torch dtype {dtype} has no TensorFlow checkpoint dtype")
    return found


def torch_dtype_of(dtype: int) -> torch.dtype:
    """The torch dtype :func:`array_to_tensor` returns for TF dtype ``dtype``.

    Raises:
        TypeError: ``dtype`` has no tensor form (DT_STRING, DT_VARIANT, unknown values).
    """
    found = _TF_TO_TORCH.get(int(dtype))
    if found is None:
        raise TypeError(f"TF dtype {dtype_name(dtype)} has no torch counterpart")
    return found


def torch_dtype_or_name(dtype: int) -> torch.dtype | str:
    """``torch_dtype_of(dtype)``, or TF's dtype name where torch has no such type.

    Strings give ``"string"``; int4/uint4/int2/uint2/float4_e2m1fn/float8_e4m3b11fnuz
    give their TF names (their tensors come back as int8/uint8, see the module doc).
    Unknown values give ``"DT_<n>"``.
    """
    if dtype in _NAMED_ONLY or int(dtype) not in _TF_TO_TORCH:
        return dtype_name(dtype)
    return _TF_TO_TORCH[int(dtype)]


def tensor_to_buffer(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor as a flat ``memoryview``, with no copy.

    bfloat16, float8 and the unsigned types numpy lacks are exposed through a
    same-width integer view. The view keeps the tensor's storage alive.

    REQUIRES: ``t`` is a dense CPU tensor, contiguous, without a lazy conjugate
    or negative bit (callers copy with ``.contiguous()`` / ``.resolve_conj()``).

    Raises:
        ValueError: ``t`` breaks the requirements above.
        UntrackableError: ``t``'s dtype has no TF dtype.
    """
    tf_dtype_of(t.dtype)
    if t.layout != torch.strided or t.device.type != "cpu":
        raise ValueError(f"tensor on {t.device} with layout {t.layout}: move it to a dense CPU "
                         "tensor first")
    if not t.is_contiguous():
        raise ValueError("tensor is not contiguous: call .contiguous() first")
    if t.is_conj() or t.is_neg():
        raise ValueError("tensor has a lazy conjugate/negative bit: call .resolve_conj() / "
                         ".resolve_neg() first")
    t = t.detach()
    if t.dtype not in _NUMPY_HOLDS:
        t = t.view(_BITS_VIEW[t.element_size()])
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.numpy()).cast("B")  # type: ignore[arg-type, unused-ignore]


_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def plain_host(t: torch.Tensor) -> bool:
    """A dense, contiguous CPU ``torch.Tensor``/``Parameter`` (no subclass) without lazy
    conjugate/negative bits: its memory holds exactly its values, in order."""
    return type(t) in _PLAIN_TENSOR_TYPES and t.is_cpu and t.layout is _STRIDED \
        and t.is_contiguous() and not t.is_conj() and not t.is_neg()


_STRIDED = torch.strided


def plain_host_array(t: torch.Tensor) -> np.ndarray | None:
    """:func:`tensor_to_buffer` for the common case, fast: a numpy view of a plain host
    tensor (:func:`plain_host`) of a dtype numpy holds, with elements; ``None`` for
    anything else (subclasses, other devices or layouts, lazy conjugate/negative
    bits, bfloat16, empty tensors), which callers take through their general path.
    The view shares the tensor's memory.

    Why: a checkpoint of 50,000 small tensors converts 50,000 of them; the general
    function's checks cost ~4 us each, these ~1 us.
    """
    if t.dtype not in _NUMPY_HOLDS or not t.numel() or not plain_host(t):
        return None
    return (t.detach() if t.requires_grad else t).numpy()


def host_array_holding(t: torch.Tensor, dtype: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """:func:`plain_host_array` of ``t`` when ``t`` holds values of TF dtype ``dtype`` and
    ``shape`` exactly, so that a payload of them can be read straight into it; else ``None``."""
    if _TORCH_TO_TF.get(t.dtype) != dtype or t.shape != shape:
        return None
    return plain_host_array(t)


def host_addresses_holding(tensors: Sequence[torch.Tensor],
                           locations: Sequence[PayloadLocation | None]) -> list[int]:
    """Per tensor, the address of its memory when it is a plain host tensor
    (:func:`plain_host`) with elements that holds values of its location's dtype and
    shape exactly, so that the payload there can be copied straight to it
    (``BundleReader.read_at``); else (a ``None`` location too) 0. One loop for all: a
    restore asks for 50,000.

    Why: ``data_ptr()`` costs ~0.1 us, a numpy view ~2 us; every torch dtype with a TF
    dtype has the same bytes in both (bfloat16 and float8 included, which numpy lacks).
    Each question asked of a tensor costs ~0.1 us, so none is asked twice.
    """
    to_tf = _TORCH_TO_TF.get
    return [t.data_ptr() if loc is not None and to_tf(t.dtype) == loc.dtype
            and t.shape == loc.shape and 0 not in loc.shape and plain_host(t) else 0
            for t, loc in zip(tensors, locations)]


def array_to_tensor(array: np.ndarray, dtype: int) -> torch.Tensor:
    """A tensor of TF dtype ``dtype`` from the format layer's storage array.

    Takes ownership: a writable, C-contiguous array in the storage dtype becomes
    the tensor's memory without a copy (bfloat16/float8 bit patterns are
    reinterpreted in place).

    Raises:
        TypeError: ``dtype`` has no tensor form (DT_STRING and unknown types).
    """
    target = torch_dtype_of(dtype)
    info = FIXED_WIDTH[DataType(dtype)]
    # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
    array = np.asarray(array).astype(info.storage, order="C", copy=False)
    if not array.flags.writeable:
        array = array.copy()  # torch.from_numpy would share read-only memory
    sub_byte = _SUB_BYTE.get(DataType(dtype))
    if sub_byte is not None:
        array = _normalize_sub_byte(array, *sub_byte)
    storage = torch.from_numpy(array)
    if storage.dtype == target:
        return storage
    if storage.element_size() == target.itemsize:
        return storage.view(target)  # bit patterns (bfloat16, float8) reinterpreted in place
    return storage.to(target)


def _normalize_sub_byte(array: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    out = np.bitwise_and(array.view(np.uint8), (1 << bits) - 1, dtype=np.uint8)
    if signed:
        sign = 1 << (bits - 1)
        out = np.subtract(np.bitwise_xor(out, sign, dtype=np.uint8).view(np.int8), sign,
                          dtype=np.int8)
    # ufuncs turn a 0-d array into a numpy scalar, which torch.from_numpy refuses
    return out if isinstance(out, np.ndarray) else np.array(out)
