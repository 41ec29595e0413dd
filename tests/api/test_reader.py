"""The reader API (``torchckpt.load_checkpoint`` & co.) beyond the golden files."""

from __future__ import annotations

import doctest
import pathlib
import sys

import numpy as np
import pytest
import torch

import torchckpt
import torchckpt.reader
from golden_data import BY_ID
from processes import run_isolated
from torchckpt.adapters.tensors import tensor_to_buffer, tf_dtype_of
from torchckpt.format import BundleWriter, DataType, write_state
from torchckpt.format.records import Extent, TensorSlice


def _write(prefix: str, tensors: dict[str, torch.Tensor], strings: dict | None = None) -> str:
    w = BundleWriter(prefix, sync=False)
    for key, t in tensors.items():
        w.add(key, tensor_to_buffer(t), tf_dtype_of(t.dtype), t.shape)
    for key, (values, shape) in (strings or {}).items():
        w.add_strings(key, values, shape)
    w.finish()
    return prefix


@pytest.fixture
def small(tmp_path: pathlib.Path) -> str:
    return _write(str(tmp_path / "ckpt-1"), {"w": torch.arange(6.0).reshape(2, 3)},
                  {"note": ([b"hello"], [])})


def test_docstring_examples(small: str) -> None:
    """The module docstring's example runs (code-style P12)."""
    result = doctest.testmod(torchckpt.reader, extraglobs={"prefix": small},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


def test_path_forms(tmp_path: pathlib.Path, small: str) -> None:
    write_state(str(tmp_path), small, sync=False)
    for path in [small, pathlib.Path(small), tmp_path, str(tmp_path), small + ".index",
                 small + ".data-00000-of-00001"]:
        with torchckpt.load_checkpoint(path) as reader:
            assert reader.prefix == small, path
    assert torchckpt.latest_checkpoint(tmp_path) == small
    assert repr(torchckpt.load_checkpoint(small)) == f"CheckpointReader({small!r})"


def test_values_outlive_the_reader(small: str) -> None:
    reader = torchckpt.load_checkpoint(small)
    w = reader.get_tensor("w")
    reader.close()
    reader.close()  # idempotent
    w += 1  # a private, writable copy
    assert w.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert torchckpt.load_variable(small, "w:0").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert torchckpt.load_variable(small, "note") == b"hello"


def test_has_tensor(small: str) -> None:
    with torchckpt.load_checkpoint(small) as reader:
        assert reader.has_tensor("w") and reader.has_tensor(b"w")
        assert not reader.has_tensor("") and not reader.has_tensor("w:0")
        sliced = torchckpt.load_checkpoint(BY_ID["partitioned/model.ckpt"].prefix)
        slice_keys = [k for k in sliced._bundle.keys() if k.startswith(b"\0")]
        assert all(sliced.has_tensor(k) for k in slice_keys)


def test_dtype_map_and_types_torch_lacks(tmp_path: pathlib.Path) -> None:
    prefix = str(tmp_path / "ckpt")
    w = BundleWriter(prefix, sync=False)
    w.add("q8", np.array([-3, 4], np.int8), DataType.DT_QINT8, [2])
    w.add("i4", np.array([0x0F, 0x07, 0x08, 0xFF], np.uint8), DataType.DT_INT4, [4])
    w.add("u4", np.array([0xF3, 0x0F], np.uint8), DataType.DT_UINT4, [2])
    w.add("i2", np.array([0x03, 0x02, 0x01], np.uint8), DataType.DT_INT2, [3])
    w.add("f4", np.array([0x01, 0x0F], np.uint8), DataType.DT_FLOAT4_E2M1FN, [2])
    w.add("f8", np.array([0x38], np.uint8), DataType.DT_FLOAT8_E4M3FN, [1])
    w.add_strings("s", [b"a", b"b"], [2])
    w.finish()
    with torchckpt.load_checkpoint(prefix) as reader:
        assert reader.get_variable_to_dtype_map() == {
            "q8": torch.int8, "i4": "int4", "u4": "uint4", "i2": "int2", "f4": "float4_e2m1fn",
            "f8": torch.float8_e4m3fn, "s": "string"}
        assert reader.get_tensor("q8").tolist() == [-3, 4]
        assert reader.get_tensor("i4").tolist() == [-1, 7, -8, -1]  # sign-extended low nibble
        assert reader.get_tensor("u4").tolist() == [3, 15]
        assert reader.get_tensor("i2").tolist() == [-1, -2, 1]
        assert reader.get_tensor("f4").dtype == torch.uint8  # raw bit patterns
        assert reader.get_tensor("f8").float().tolist() == [1.0]
        s = reader.get_tensor("s")
        assert isinstance(s, np.ndarray) and s.dtype == object and s.tolist() == [b"a", b"b"]


def test_non_utf8_keys_round_trip(tmp_path: pathlib.Path) -> None:
    prefix = _write(str(tmp_path / "ckpt"), {"caf\u00e9": torch.ones(1)}, {})
    w = BundleWriter(str(tmp_path / "raw"), sync=False)
    w.add(b"bad\xffkey", np.ones(1, np.float32), DataType.DT_FLOAT, [1])
    w.finish()
    with torchckpt.load_checkpoint(prefix) as reader:
        assert list(reader.get_variable_to_shape_map()) == ["caf\u00e9"]
    with torchckpt.load_checkpoint(str(tmp_path / "raw")) as reader:
        (key,) = reader.get_variable_to_shape_map()
        assert reader.get_tensor(key).tolist() == [1.0]  # the str the map shows works
        assert reader.get_tensor(b"bad\xffkey").tolist() == [1.0]
        assert reader.debug_string() == b"bad\xffkey (DT_FLOAT) [1]\n"


def test_sliced_reads_use_every_path(tmp_path: pathlib.Path) -> None:
    full = torch.arange(24, dtype=torch.int32).reshape(4, 6)
    prefix = str(tmp_path / "ckpt")
    w = BundleWriter(prefix, sync=False)
    parts = [(TensorSlice((Extent(), Extent(0, 2))), full[:, :2]),
             (TensorSlice((Extent(), Extent(2, 4))), full[:, 2:])]
    w.add_sliced("t", DataType.DT_INT32, [4, 6],
                 [(s, tensor_to_buffer(p.contiguous())) for s, p in parts])
    w.finish()
    with torchckpt.load_checkpoint(prefix) as reader:
        assert torch.equal(reader.get_tensor("t"), full)
        assert reader.get_variable_to_shape_map() == {"t": [4, 6]}
        assert reader.get_variable_to_dtype_map() == {"t": torch.int32}
        assert reader.debug_string().count(b"(DT_INT32)") == 2  # the two slice entries


def test_public_surface() -> None:
    for name in torchckpt.__all__:
        assert getattr(torchckpt, name) is not None
    assert set(torchckpt.__all__) <= set(dir(torchckpt))
    with pytest.raises(AttributeError):
        torchckpt.no_such_name  # noqa: B018


def test_format_layer_imports_without_torch() -> None:
    """``torchckpt.format`` works where torch cannot be imported (code-style P2)."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import torchckpt, torchckpt.format as f\n"
            f"r = f.BundleReader({BY_ID['dtype_zoo/ckpt-1'].prefix!r})\n"
            "print(len(r.keys()), 'torch' in sys.modules and sys.modules['torch'] is not None)\n")
    out = run_isolated([sys.executable, "-c", code], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["25", "False"]
