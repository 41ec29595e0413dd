"""``BundleWriter`` -> ``BundleReader`` round trips at the format layer (numpy only)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from torchckpt.errors import KeyNotFoundError
from torchckpt.format import BundleReader, BundleWriter, DataType
from torchckpt.format.dtypes import FIXED_WIDTH
from torchckpt.format.records import Extent, TensorSlice
from torchckpt.format.slices import encode_slice_key


def _files(directory: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def _sample(info, shape: tuple[int, ...], seed: int) -> np.ndarray:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * info.itemsize, dtype=np.uint8)
    arr = raw.view(info.storage).reshape(shape)
    if info.storage == np.bool_:
        arr = (raw % 2).astype(np.bool_).reshape(shape)
    return arr


@pytest.mark.parametrize("dtype", sorted(FIXED_WIDTH), ids=lambda d: FIXED_WIDTH[d].name)
def test_every_fixed_width_dtype_round_trips(tmp_path: os.PathLike, dtype: DataType) -> None:
    info = FIXED_WIDTH[dtype]
    prefix = os.path.join(tmp_path, "ckpt")
    values = {b"a": _sample(info, (3, 4), 1), b"scalar": _sample(info, (), 2),
              b"empty": _sample(info, (2, 0), 3)}
    w = BundleWriter(prefix, sync=False)
    for k, v in values.items():
        w.add(k, v, dtype, v.shape)
    w.finish()
    with BundleReader(prefix) as r:
        for k, v in values.items():
            got = r.read_array(k)
            assert got.dtype == info.storage and got.shape == v.shape
            assert got.tobytes() == v.tobytes()
            assert r.entry(k).dtype == dtype


def test_strings_round_trip(tmp_path: os.PathLike) -> None:
    prefix = os.path.join(tmp_path, "ckpt")
    w = BundleWriter(prefix, sync=False)
    words = [b"", b"a", b"\x00\xff\xfe", "b\u00e9ta".encode(), b"x" * 300]
    w.add_strings("words", words + [b"z"], [2, 3])
    w.add_strings("one", [b"hello"], [])
    w.add_strings("none", [], [0, 4])
    w.finish()
    with BundleReader(prefix) as r:
        got = r.read_array("words")
        assert got.shape == (2, 3) and list(got.reshape(-1)) == words + [b"z"]
        assert r.read_array("one").shape == () and r.read_array("one").item() == b"hello"
        assert r.read_array("none").shape == (0, 4)
        assert r.entry("none").size == 4  # just the length checksum


def test_lookups_match_a_dict(tmp_path: os.PathLike) -> None:
    rng = np.random.default_rng(0)
    keys = sorted({f"k/{rng.integers(0, 10**6):07d}/{rng.bytes(40).hex()}".encode()
                   for _ in range(3000)})
    prefix = os.path.join(tmp_path, "ckpt")
    w = BundleWriter(prefix, sync=False)
    for i, k in enumerate(reversed(keys)):  # insertion order does not matter
        w.add(k, np.array([i], np.int32), DataType.DT_INT32, [1])
    w.finish()
    assert os.path.getsize(prefix + ".index") > 256 * 1024  # so several 256 KiB data blocks
    with BundleReader(prefix) as r:
        assert r.keys() == keys
        for i, k in enumerate(reversed(keys)):
            assert r.read_array(k).tolist() == [i]
        for probe in [b"", b"k/", b"k/0000000x", b"z", keys[0] + b"\0", keys[-1] + b"\xff"]:
            assert probe not in r
            with pytest.raises(KeyNotFoundError):
                r.entry(probe)


def test_multi_shard(tmp_path: os.PathLike) -> None:
    prefix = os.path.join(tmp_path, "ckpt")
    w = BundleWriter(prefix, num_shards=3, sync=False)
    w.add("a", np.arange(4, dtype=np.float32), DataType.DT_FLOAT, [4], shard=0)
    w.add("b", np.arange(3, dtype=np.int64), DataType.DT_INT64, [3], shard=1)
    w.add_strings("c", [b"s"], [1], shard=1)
    w.finish()
    names = sorted(os.listdir(tmp_path))
    assert names == ["ckpt.data-00000-of-00003", "ckpt.data-00001-of-00003",
                     "ckpt.data-00002-of-00003", "ckpt.index"]
    assert os.path.getsize(os.path.join(tmp_path, "ckpt.data-00002-of-00003")) == 0
    with BundleReader(prefix) as r:
        assert r.header.num_shards == 3
        assert r.entry("b").shard_id == 1
        assert r.read_array("b").tolist() == [0, 1, 2]
        assert r.read_array("c").tolist() == [b"s"]
    with pytest.raises(ValueError):
        BundleWriter(os.path.join(tmp_path, "x"), num_shards=2).add("a", b"", 1, [0], shard=2)


def test_sliced_round_trip(tmp_path: os.PathLike) -> None:
    full = np.arange(35, dtype=np.float32).reshape(7, 5)
    s0, s1 = TensorSlice((Extent(0, 4), Extent(0, 5))), TensorSlice((Extent(4, 3), Extent()))
    prefix = os.path.join(tmp_path, "ckpt")
    w = BundleWriter(prefix, sync=False)
    w.add_sliced("t", DataType.DT_FLOAT, [7, 5], [(s1, full[4:]), (s0, full[:4].copy())])
    words = np.array([[b"a", b"b"], [b"c", b""]], dtype=object)
    w.add_sliced("s", DataType.DT_STRING, [2, 2],
                 [(TensorSlice((Extent(0, 1), Extent())), [b"a", b"b"]),
                  (TensorSlice((Extent(1, 1), Extent())), [b"c", b""])])
    w.finish()
    with BundleReader(prefix) as r:
        assert r.read_array("t").tobytes() == full.tobytes()
        assert encode_slice_key(b"t", s0) in r and encode_slice_key(b"t", s1) in r
        assert r.entry("t").slices == (s1, s0)
        assert (r.read_array("s") == words).all()


def test_alignment(tmp_path: os.PathLike) -> None:
    prefix = os.path.join(tmp_path, "ckpt")
    w = BundleWriter(prefix, data_alignment=64, sync=False)
    for i in range(5):
        w.add(f"v{i}", np.arange(i + 1, dtype=np.int8), DataType.DT_INT8, [i + 1])
    w.finish()
    with BundleReader(prefix) as r:
        for i in range(5):
            assert r.entry(f"v{i}").offset % 64 == 0
            assert r.read_array(f"v{i}").tolist() == list(range(i + 1))


def test_output_is_deterministic(tmp_path: os.PathLike) -> None:
    tensors = {f"k{i}": np.full((i,), i, np.float64) for i in range(50)}
    outputs = []
    for run, order in enumerate([sorted(tensors), sorted(tensors, reverse=True)]):
        d = os.path.join(tmp_path, str(run))
        w = BundleWriter(os.path.join(d, "ckpt"), sync=False)
        w.add_strings("s", [b"x"], [])
        for k in order:
            w.add(k, tensors[k], DataType.DT_DOUBLE, tensors[k].shape)
        w.finish()
        outputs.append(_files(d))
    # the index does not depend on insertion order; the data file order is the caller's
    assert outputs[0]["ckpt.index"] != b"" and set(outputs[0]) == set(outputs[1])
    again = os.path.join(tmp_path, "again")
    w = BundleWriter(os.path.join(again, "ckpt"), sync=False)
    w.add_strings("s", [b"x"], [])
    for k in sorted(tensors):
        w.add(k, tensors[k], DataType.DT_DOUBLE, tensors[k].shape)
    w.finish()
    assert _files(again) == outputs[0]


def test_abort_and_failure_leave_nothing(tmp_path: os.PathLike) -> None:
    w = BundleWriter(os.path.join(tmp_path, "ckpt"), sync=False)
    w.add("a", np.zeros(3, np.float32), DataType.DT_FLOAT, [3])
    w.abort()
    assert os.listdir(tmp_path) == []
    w = BundleWriter(os.path.join(tmp_path, "ckpt"), sync=False)
    w.add("a", np.zeros(3, np.float32), DataType.DT_FLOAT, [3])
    with pytest.raises(ValueError):
        w.add("a", np.zeros(3, np.float32), DataType.DT_FLOAT, [3])  # duplicate key
    with pytest.raises(ValueError):
        w.add("b", np.zeros(3, np.float32), DataType.DT_FLOAT, [4])  # wrong size
    with pytest.raises(ValueError):
        w.add("", np.zeros(3, np.float32), DataType.DT_FLOAT, [3])  # the header's key
    w.abort()
    assert os.listdir(tmp_path) == []


def test_read_into_a_preallocated_buffer(tmp_path: os.PathLike) -> None:
    prefix = os.path.join(tmp_path, "ckpt")
    w = BundleWriter(prefix, sync=False)
    big = np.random.default_rng(0).standard_normal((512, 300)).astype(np.float32)
    w.add("big", big, DataType.DT_FLOAT, big.shape)
    w.finish()
    out = np.empty_like(big)
    with BundleReader(prefix) as r:
        r.read_into("big", out)
    assert out.tobytes() == big.tobytes()


@given(st.dictionaries(
    st.text(min_size=1, max_size=12),
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int8, np.uint16, np.int64, np.bool_,
                                np.complex64]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    max_size=8))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory,
                             values: dict[str, np.ndarray]) -> None:
    from torchckpt.format.dtypes import from_numpy_dtype

    prefix = os.path.join(tmp_path_factory.mktemp("prop"), "ckpt")
    w = BundleWriter(prefix, sync=False)
    for k, v in values.items():
        w.add(k, np.ascontiguousarray(v), from_numpy_dtype(v.dtype), v.shape)
    w.finish()
    with BundleReader(prefix) as r:
        assert sorted(r.keys()) == sorted(k.encode() for k in values)
        for k, v in values.items():
            got = r.read_array(k)
            assert got.shape == v.shape and got.tobytes() == np.ascontiguousarray(v).tobytes()
