"""The bulk paths of save_state_dict / load_state_dict give what the simple paths give.

``load_state_dict`` locates (and for ``mmap=True`` verifies) all payloads with
one ``BundleReader.payload_locations`` call, decoded by
``_fast_entries.plain_payloads``, and maps tensors with one split per shard and
dtype; ``save_state_dict`` formats keys from an escaped path built on the way
down. Each is checked here against the per-key reference on the same inputs,
and every checksum is still verified, with or without ``mmap``.
"""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest
import torch

import torchckpt
from torchckpt.errors import ChecksumMismatchError, CorruptCheckpointError, UntrackableError
from torchckpt.format import BundleReader, BundleWriter
from torchckpt.format._coding import DecodeError
from torchckpt.format._fast_entries import PayloadLocation, plain_location, plain_payloads
from torchckpt.format.dtypes import FIXED_WIDTH, DataType
from torchckpt.format.records import BundleEntry
from torchckpt.graph.keys import format_key, object_path
from torchckpt.state_dict import MAX_DEPTH, STRUCTURE_KEY
from torchckpt.state_dict.payloads import _views


def _entries(rng: random.Random, n: int) -> list[bytes]:
    """Encoded entries, most of them plain, some of them broken in one byte."""
    out = []
    for i in range(n):
        dtype = rng.choice([1, 2, 3, 10, 14, 7, 0, 200])
        shape = tuple(rng.randrange(5) for _ in range(rng.randrange(4)))
        size = FIXED_WIDTH[dtype].itemsize * int(np.prod(shape)) if dtype in FIXED_WIDTH else 8
        if rng.random() < .1:
            size += 1
        raw = BundleEntry(dtype, shape, rng.choice([0, 0, 0, 1]), 64 * i, size,
                          rng.getrandbits(32)).encode()
        if rng.random() < .1 and raw:
            broken = bytearray(raw)
            broken[rng.randrange(len(broken))] = rng.randrange(256)
            raw = bytes(broken)
        out.append(raw)
    return out


def test_plain_payloads_agree_with_the_general_decoder() -> None:
    raws: list[bytes | None] = [*_entries(random.Random(3), 3000), None, b"", b"\x08"]
    found = plain_payloads(raws, {})
    assert sum(p is not None for p in found) > 1000
    for raw, p in zip(raws, found):
        if raw is None or plain_location(raw, {}) is None:
            assert p is None
            continue
        try:
            e = BundleEntry.decode(raw)
        except DecodeError:
            pytest.fail(f"located an entry the general decoder rejects: {raw!r}")
        assert p == PayloadLocation(e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c)


def _bundle(path: str, arrays: dict[str, np.ndarray], **kwargs: int) -> None:
    w = BundleWriter(path, **kwargs)
    for key, a in arrays.items():
        w.add(key, a, DataType.DT_FLOAT if a.dtype == np.float32 else DataType.DT_INT64, a.shape)
    w.add_strings("text", [b"abc"], ())
    w.finish()


def test_payload_locations_match_the_per_key_lookups(tmp_path) -> None:
    arrays = {f"k{i}": np.arange(i, dtype=np.float32 if i % 2 else np.int64).reshape(-1, 1)
              for i in range(40)}
    _bundle(str(tmp_path / "b"), arrays)
    with BundleReader(str(tmp_path / "b")) as r:
        keys = [*arrays, "text", "missing"]
        locs = r.payload_locations(keys)
        assert locs[-2:] == [None, None]  # a string entry, a missing key: the general path
        for key, loc in zip(keys[:-2], locs[:-2]):
            _, e = r.payload_location(key)
            assert loc == PayloadLocation(e.dtype, e.shape, e.shard_id, e.offset, e.size,
                                          e.crc32c)
        assert r.payload_locations(keys, checksums=False) == locs


def test_payload_locations_verify_checksums_and_name_the_key(tmp_path) -> None:
    arrays = {f"k{i}": np.full(64, i, dtype=np.float32) for i in range(300)}
    _bundle(str(tmp_path / "b"), arrays)
    data = tmp_path / "b.data-00000-of-00001"
    with BundleReader(str(tmp_path / "b")) as r:
        _, e = r.payload_location("k123")
    raw = bytearray(data.read_bytes())
    raw[e.offset + 5] ^= 0x40
    data.write_bytes(bytes(raw))
    with BundleReader(str(tmp_path / "b")) as r:
        with pytest.raises(ChecksumMismatchError, match="k123") as info:
            r.payload_locations(list(arrays))
        assert info.value.key == b"k123" and info.value.offset == e.offset
        assert r.payload_locations(list(arrays), checksums=False)[123] is not None
    with BundleReader(str(tmp_path / "b"), verify_checksums=False) as r:
        assert None not in r.payload_locations(list(arrays))


def test_payload_locations_leave_short_shards_to_the_per_key_path(tmp_path) -> None:
    _bundle(str(tmp_path / "b"), {"a": np.ones(16, np.float32), "b": np.ones(16, np.float32)})
    data = tmp_path / "b.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:70])
    with BundleReader(str(tmp_path / "b")) as r:
        assert r.payload_locations(["a", "b"])[1] is None
        with pytest.raises(CorruptCheckpointError, match="past the end"):
            r.payload_location("b")


def _mixed() -> dict:
    big = torch.arange(300_000, dtype=torch.float32).reshape(600, 500)
    shared = torch.arange(5, dtype=torch.int64)
    return {
        "big": big,
        "scalars": [torch.tensor(1.5), torch.tensor(7, dtype=torch.int32), torch.tensor(True)],
        "kinds": {str(dt): torch.arange(6).to(dt).reshape(2, 3) for dt in
                  [torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8,
                   torch.complex64]},
        "empty": torch.empty(0, 3),
        "shared": (shared, [shared]),
        "params": collections.OrderedDict(
            w=torch.nn.Parameter(torch.ones(2, 2)),
            frozen=torch.nn.Parameter(torch.ones(3), requires_grad=False)),
        "strided": big[::7, ::3],  # not contiguous: saved through add_tensors
        "neg": torch._neg_view(torch.arange(4.0)),  # a lazy negative bit
        "conj": torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64).conj(),
        "many": [torch.full((3,), float(i)) for i in range(500)],
    }


def _equal(a: object, b: object) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad
        assert torch.equal(a.detach().resolve_conj().resolve_neg(), b.detach())
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("mmap", [False, True])
def test_mixed_structure_round_trips(tmp_path, mmap: bool) -> None:
    obj = _mixed()
    torchckpt.save_state_dict(obj, tmp_path / "sd")
    out = torchckpt.load_state_dict(tmp_path / "sd", mmap=mmap)
    _equal(obj, out)
    assert out["shared"][0] is out["shared"][1][0]
    out["big"][0, 0] = -1.0  # writable either way; with mmap a private copy of the page
    assert torchckpt.load_state_dict(tmp_path / "sd")["big"][0, 0].item() == 0.0


def test_mmap_checksum_mismatch_names_file_and_key(tmp_path) -> None:
    obj = {"t": [torch.full((256,), float(i)) for i in range(1000)]}
    torchckpt.save_state_dict(obj, tmp_path / "sd")
    key = format_key(object_path(["t", "617"]))
    with BundleReader(str(tmp_path / "sd")) as r:
        _, e = r.payload_location(key)
    data = tmp_path / "sd.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[e.offset + 100] ^= 0x01
    data.write_bytes(bytes(raw))
    for mmap in (True, False):
        with pytest.raises(ChecksumMismatchError, match="t/617") as info:
            torchckpt.load_state_dict(tmp_path / "sd", mmap=mmap)
        assert info.value.path.endswith("sd.data-00000-of-00001")
        assert info.value.key == key.encode()
    out = torchckpt.load_state_dict(tmp_path / "sd", mmap=True, verify_checksums=False)
    assert not torch.equal(out["t"][617], obj["t"][617])  # read as stored, when asked to


def test_mmap_reads_unaligned_payloads_instead(tmp_path) -> None:
    """A bundle written without alignment (a forged or foreign structure) still loads."""
    text = (b'{"format":"torchckpt-nested","version":1,"root":{"dict":[["a",{"tensor":"a"}],'
            b'["b",{"tensor":"b"}]]}}')
    w = BundleWriter(str(tmp_path / "f"))
    w.add("a", np.arange(3, dtype=np.int8), DataType.DT_INT8, (3,))
    w.add("b", np.arange(5, dtype=np.float32), DataType.DT_FLOAT, (5,))  # at offset 3
    w.add_strings(STRUCTURE_KEY, [text], ())
    w.finish()
    out = torchckpt.load_state_dict(tmp_path / "f", mmap=True)
    assert out["b"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and out["a"].tolist() == [0, 1, 2]


def test_views_of_overlapping_payloads_are_made_one_by_one() -> None:
    flat = torch.arange(20, dtype=torch.float32)
    locs = [PayloadLocation(1, (2, 2), 0, 8, 16, 0), PayloadLocation(1, (4,), 0, 12, 16, 0),
            PayloadLocation(1, (), 0, 0, 4, 0)]
    out = _views(flat, [(loc.offset, f"k{i}", loc) for i, loc in enumerate(locs)], 4)
    assert out["k0"].tolist() == [[2.0, 3.0], [4.0, 5.0]]
    assert out["k1"].tolist() == [3.0, 4.0, 5.0, 6.0]
    assert out["k2"].shape == () and out["k2"].item() == 0.0


def test_keys_are_the_object_paths_of_their_places(tmp_path) -> None:
    obj = {"a.b": {"c/d": torch.zeros(1), 3: [torch.ones(1), {"": torch.ones(2)}]},
           0: torch.zeros(2), "0": torch.ones(3)}
    torchckpt.save_state_dict(obj, tmp_path / "sd")
    with BundleReader(str(tmp_path / "sd")) as r:
        keys = {k.decode() for k in r.keys()} - {STRUCTURE_KEY}
    assert keys == {format_key(object_path(p)) for p in
                    [["a.b", "c/d"], ["a.b", "3", "0"], ["a.b", "3", "1", ""], ["0"]]} \
        | {format_key(object_path(["0"]), "VARIABLE_VALUE_1")}
    _equal(obj, torchckpt.load_state_dict(tmp_path / "sd"))


def test_root_tensor_and_deep_nesting_round_trip(tmp_path) -> None:
    torchckpt.save_state_dict(torch.arange(3), tmp_path / "t")
    assert torchckpt.load_state_dict(tmp_path / "t", mmap=True).tolist() == [0, 1, 2]
    deep: object = torch.ones(1)
    for i in range(MAX_DEPTH):
        deep = {"d": deep} if i % 2 else [deep]
    torchckpt.save_state_dict(deep, tmp_path / "deep")
    _equal(deep, torchckpt.load_state_dict(tmp_path / "deep"))
    with pytest.raises(UntrackableError, match=r"obj\['d'\]\[0\]\['d'\].*deeper than"):
        torchckpt.save_state_dict({"d": [{"d": [deep]}]}, tmp_path / "deeper")


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_refusals_name_their_place(tmp_path) -> None:
    with pytest.raises(UntrackableError, match=r"obj\['a'\]\[1\]\[0\]: a value of type"):
        torchckpt.save_state_dict({"a": [1, (object(),)]}, tmp_path / "sd")
    with pytest.raises(UntrackableError, match=r"obj\[2\]: tensor subclass"):
        class Sub(torch.Tensor):
            pass
        torchckpt.save_state_dict([1, 2, torch.ones(1).as_subclass(Sub)], tmp_path / "sd")
    with pytest.raises(UntrackableError, match=r"obj\['q'\]: torch dtype"):
        torchckpt.save_state_dict({"q": torch.ones(1, dtype=torch.complex32)}, tmp_path / "sd")
    with pytest.raises(UntrackableError, match=r"obj\['s'\]: a torch.sparse_coo tensor"):
        torchckpt.save_state_dict({"s": torch.ones(2).to_sparse()}, tmp_path / "sd")
