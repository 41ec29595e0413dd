"""TensorFlow 2.21 reads what torchckpt writes.

``tf.train.load_checkpoint(...).get_tensor``, ``tf.train.list_variables``,
``inspect_checkpoint`` and ``tf.train.latest_checkpoint`` on a bundle written
from torch tensors: every dtype, strings, scalars, zero-size tensors, two data
shards and sliced entries.
"""

from __future__ import annotations

import contextlib
import io
import math
import os

import numpy as np
import pytest
import torch

import torchckpt
from torchckpt.adapters.tensors import tensor_to_buffer, tf_dtype_of
from torchckpt.format import BundleWriter, DataType, dtype_name, write_state
from torchckpt.format.records import Extent, TensorSlice

pytestmark = pytest.mark.tf


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    r = torch.randn(6, generator=g)
    return {
        "float/f32": torch.tensor([[1.5, -0.0, float("nan")], [float("inf"), 1e-45, -2.0]]),
        "float/f16": r.half(), "float/f64": r.double(), "float/bf16": r.bfloat16(),
        "float/f8_e4m3fn": r.to(torch.float8_e4m3fn), "float/f8_e5m2": r.to(torch.float8_e5m2),
        "float/f8_e4m3fnuz": r.to(torch.float8_e4m3fnuz),
        "float/f8_e5m2fnuz": r.to(torch.float8_e5m2fnuz),
        "int/i8": torch.tensor([-128, 127], dtype=torch.int8),
        "int/i16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "int/i32": torch.tensor([[-(2**31), 2**31 - 1]], dtype=torch.int32),
        "int/i64": torch.tensor([-(2**63), 2**63 - 1]),
        "int/u8": torch.tensor([0, 255], dtype=torch.uint8),
        "int/u16": torch.tensor([0, 65535], dtype=torch.uint16),
        "int/u32": torch.tensor([2**32 - 1], dtype=torch.uint32),
        "int/u64": torch.tensor([2**64 - 1], dtype=torch.uint64),
        "other/bool": torch.tensor([[True, False], [False, True]]),
        "other/c64": torch.tensor([1 + 2j, -0.5j], dtype=torch.complex64),
        "other/c128": torch.tensor([3 - 4j], dtype=torch.complex128),
        "scalar/f32": torch.tensor(2.5), "scalar/i64": torch.tensor(-7),
        "scalar/bool": torch.tensor(True), "scalar/bf16": torch.tensor(1.25).bfloat16(),
        "empty/f32": torch.zeros(0), "empty/i32x0": torch.zeros(2, 0, dtype=torch.int32),
    }


STRINGS = {
    "str/words": ([b"alpha", b"", "b\u00e9ta".encode(), b"\x00\xff\xfe"], [2, 2]),
    "str/long": ([b"y" * 300, b"z" * 128], [2]),
    "str/scalar": ([b"hello"], []),
    "str/none": ([], [0]),
}
SLICED = {  # key -> full tensor, row split
    "sliced/f32": (torch.arange(35, dtype=torch.float32).reshape(7, 5), 4),
    "sliced/i64": (torch.arange(12).reshape(6, 2), 1),
    "sliced/bool": (torch.tensor([True, False, True, True, False]), 2),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A two-shard bundle plus state file, written by torchckpt; the prefix."""
    directory = str(tmp_path_factory.mktemp("ours"))
    prefix = os.path.join(directory, "ckpt-1")
    w = BundleWriter(prefix, num_shards=2)
    for i, (key, t) in enumerate(_tensors().items()):
        w.add(key, tensor_to_buffer(t), tf_dtype_of(t.dtype), t.shape, shard=i % 2)
    for i, (key, (values, shape)) in enumerate(STRINGS.items()):
        w.add_strings(key, values, shape, shard=i % 2)
    for key, (full, cut) in SLICED.items():
        rank = full.dim()
        head = TensorSlice((Extent(0, cut),) + (Extent(),) * (rank - 1))
        tail = TensorSlice((Extent(cut, full.shape[0] - cut),) + (Extent(),) * (rank - 1))
        w.add_sliced(key, tf_dtype_of(full.dtype), full.shape,
                     [(head, tensor_to_buffer(full[:cut].contiguous())),
                      (tail, tensor_to_buffer(full[cut:].contiguous()))], shard=1)
    # int4 is stored one element per byte, value in the low bits (TF writes -1 as 0x0f)
    w.add("int/i4", np.array([-1, 7, -8, 0], np.int8) & 0x0F, DataType.DT_INT4, [4])
    w.finish()
    write_state(directory, prefix)
    return prefix


def _bits(value: object) -> bytes:
    return np.ascontiguousarray(value).tobytes()


def _expected() -> dict[str, object]:
    out: dict[str, object] = dict(_tensors())
    out.update({k: full for k, (full, _) in SLICED.items()})
    return out


def test_tf_get_tensor_returns_our_values(tf, written: str) -> None:  # noqa: ANN001
    reader = tf.train.load_checkpoint(written)
    dtypes = reader.get_variable_to_dtype_map()
    for key, t in _expected().items():
        got = reader.get_tensor(key)
        assert dtypes[key].name == dtype_name(tf_dtype_of(t.dtype)), key
        assert list(np.shape(got)) == list(t.shape), key
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz,
                       torch.float8_e5m2fnuz):
            raw = t.view(torch.uint8)
        assert _bits(got) == raw.numpy().tobytes(), key
    for key, (values, shape) in STRINGS.items():
        got = reader.get_tensor(key)
        if shape == []:
            assert got == values[0]
        else:
            assert got.shape == tuple(shape) and got.reshape(-1).tolist() == values, key
    assert reader.get_tensor("int/i4").astype(np.int8).tolist() == [-1, 7, -8, 0]
    assert torchckpt.load_variable(written, "int/i4").tolist() == [-1, 7, -8, 0]


def test_tf_maps_and_listing_match_ours(tf, written: str) -> None:  # noqa: ANN001
    theirs = tf.train.load_checkpoint(written)
    with torchckpt.load_checkpoint(written) as ours:
        assert ours.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()
        assert ours.debug_string() == theirs.debug_string()
        for key, tf_dtype in theirs.get_variable_to_dtype_map().items():
            mine = ours.get_variable_to_dtype_map()[key]
            assert (mine if isinstance(mine, str) else dtype_name(tf_dtype_of(mine))) == \
                tf_dtype.name, key
    assert tf.train.list_variables(written) == [tuple(p) for p in torchckpt.list_variables(written)]
    directory = os.path.dirname(written)
    assert tf.train.latest_checkpoint(directory) == written
    assert tf.train.list_variables(directory) == tf.train.list_variables(written)


def test_inspect_checkpoint_prints_our_tensors(tf, written: str) -> None:  # noqa: ANN001
    from tensorflow.python.tools import inspect_checkpoint

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        inspect_checkpoint.print_tensors_in_checkpoint_file(written, tensor_name="",
                                                            all_tensors=True)
    text = out.getvalue()
    shapes = dict(torchckpt.list_variables(written))
    with torchckpt.load_checkpoint(written) as ours:
        dtypes = ours.get_variable_to_dtype_map()
    for key, shape in shapes.items():
        name = dtypes[key] if isinstance(dtypes[key], str) else dtype_name(tf_dtype_of(dtypes[key]))
        assert f"tensor: {key} ({name}) {shape}\n" in text, key
    assert f"# Total number of params: {sum(math.prod(s) for s in shapes.values())}" in text
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        inspect_checkpoint.print_tensors_in_checkpoint_file(written, "sliced/f32", False)
    assert out.getvalue().startswith("tensor: sliced/f32 (float32) [7, 5]\n")
    assert "34." in out.getvalue()
