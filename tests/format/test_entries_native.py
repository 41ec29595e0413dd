"""The C decoder of plain bundle entries (``_entries_native.c``) against its Python reference.

``_fast_entries.plain_payloads`` takes the C path where the extension is built and
``TORCHCKPT_NO_NATIVE`` is unset. Its answers must be exactly those of the Python
path (``python_plain_payloads``): the same entries located, with the same values and
types, and ``None`` for every other entry, malformed bytes included, so that the
caller's general path decodes or reports those. Checked on the writer's output, on
thousands of mutated and random byte strings, and on hand-built cases of each rule.

The Python path has two branches (vectorized from 256 entries on, one entry at a
time below), so every comparison runs the Python side both ways.
"""

from __future__ import annotations

import gc
import random
import sys
from types import ModuleType

import numpy as np
import pytest

from torchckpt.format import BundleReader, BundleWriter, _crc32c
from torchckpt.format import _fast_entries as fe
from torchckpt.format._coding import put_varint
from torchckpt.format._fast_entries import PayloadLocation, plain_payloads, python_plain_payloads
from torchckpt.format.dtypes import FIXED_WIDTH, DataType
from torchckpt.format.naming import index_path
from torchckpt.format.records import BundleEntry, Extent, TensorSlice, encode_shape
from torchckpt.format.table import iter_table

INT63 = 1 << 63


def c_payloads(native: ModuleType, raws: list) -> list[PayloadLocation | None]:
    out: list[PayloadLocation | None] = native.plain_payloads(raws, PayloadLocation,
                                                              fe._ITEMSIZES)
    return out


def assert_same(native: ModuleType, raws: list[bytes | None]) -> list[PayloadLocation | None]:
    """C and Python (both branches) give equal answers for ``raws``; each location is a
    plain ``PayloadLocation`` of ints and equals the general decoder's fields."""
    found = c_payloads(native, raws)
    assert found == python_plain_payloads(raws, {})
    one_by_one = [loc for i in range(0, len(raws), 100)
                  for loc in python_plain_payloads(raws[i:i + 100], {})]
    assert found == one_by_one
    for raw, loc in zip(raws, found):
        if loc is None:
            continue
        assert raw is not None
        assert type(loc) is PayloadLocation and type(loc.shape) is tuple
        assert all(type(v) is int for v in (*loc[:1], *loc.shape, *loc[2:]))
        e = BundleEntry.decode(raw)
        assert (e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c, e.slices) == (*loc, ())
    return found


def entry(dtype: int, shape: tuple[int, ...], shard: int = 0, offset: int = 0,
          size: int | None = None, crc: int = 0) -> bytes:
    """A writer's bytes for a plain entry (size: the shape's, unless given)."""
    if size is None:
        size = FIXED_WIDTH[dtype].itemsize * int(np.prod(shape, dtype=object)) \
            if dtype in FIXED_WIDTH else 0
    return BundleEntry(dtype, shape, shard, offset, size, crc).encode()


def varint_field(tag: int, raw_varint: bytes) -> bytes:
    return bytes([tag]) + raw_varint


def head(dtype: int, dims: bytes) -> bytes:
    """``08 dtype 12 L dims`` from the dims' bytes as written."""
    return bytes([0x08, dtype, 0x12, len(dims)]) + dims


# --- the writer's output -------------------------------------------------------------------

def write_bundle(prefix: str) -> None:
    w = BundleWriter(prefix, num_shards=3)
    shapes = [(), (1,), (0,), (3, 0, 5), (2, 3), (1,) * 8, (2, 1, 1, 1, 1, 1, 1, 3), (300,),
              (129, 2)]
    for dtype, info in FIXED_WIDTH.items():
        for i, shape in enumerate(shapes):
            data = np.arange(int(np.prod(shape)) * info.itemsize, dtype=np.uint8)
            w.add(f"{dtype.name}/{i}", data, dtype, shape, shard=i % 3)
    w.add_strings("strings", [b"a", b"bc"], (2,))
    w.add_strings("scalar_string", [b"x"], ())
    w.add_sliced("sliced", DataType.DT_FLOAT, (4,),
                 [(TensorSlice((Extent(0, 2),)), np.zeros(2, np.float32))])
    # entries whose payloads no file holds: huge dims (sizes up to 2**63 - 1 and past it)
    w.add_entry("huge", BundleEntry(DataType.DT_FLOAT, (1 << 40, 1 << 20), 1, 7, 1 << 62, 5))
    empty_crc = _crc32c.mask(_crc32c.value(b""))
    w.add_entry("zero_times_huge", BundleEntry(DataType.DT_DOUBLE, (0, 1 << 62), 2, 9, 0,
                                               empty_crc))
    w.add_entry("overflow", BundleEntry(DataType.DT_FLOAT, (1 << 62, 2), 0, 7, 0, 5))
    w.add_entry("largest", BundleEntry(DataType.DT_UINT8, (INT63 - 1,), 0, 3, INT63 - 1, 1))
    w.finish()


def test_c_locates_the_writers_entries_as_python_does(native: ModuleType, tmp_path) -> None:
    """Every dtype, scalars, zero dims, rank 8, multi-byte dims, all shards: located with
    the same values; strings, slices and impossible sizes are left to the general path."""
    prefix = str(tmp_path / "ckpt")
    write_bundle(prefix)
    with open(index_path(prefix), "rb") as f:
        table = {k: v for k, v in iter_table(f.read()) if k}
    found = dict(zip(table, assert_same(native, list(table.values()))))
    located = {k for k, loc in found.items() if loc is not None}
    assert located == {k for k, raw in table.items() if is_plain(BundleEntry.decode(raw))}
    assert len(located) > 200
    assert found[b"strings"] is found[b"scalar_string"] is found[b"sliced"] is None
    assert found[b"overflow"] is None
    assert found[b"largest"] == (DataType.DT_UINT8, (INT63 - 1,), 0, 3, INT63 - 1, 1)


def is_plain(e: BundleEntry) -> bool:
    """What the fast path locates, in terms of the general decoder's fields."""
    info = FIXED_WIDTH.get(e.dtype)  # type: ignore[call-overload]
    return (info is not None and not e.slices and e.shard_id >= 0 and e.offset >= 0
            and min(e.shape, default=0) >= 0
            and e.size == info.itemsize * int(np.prod(e.shape, dtype=object)))


def test_payload_locations_are_the_same_on_both_paths(native: ModuleType, tmp_path,
                                                      monkeypatch) -> None:
    """The reader's bulk API answers the same whichever decoder runs (its checks on shard
    sizes and checksums come after the decoding)."""
    prefix = str(tmp_path / "ckpt")
    write_bundle(prefix)
    with BundleReader(prefix) as reader:
        keys = [*reader.keys(), b"missing"]
        fast = reader.payload_locations(keys)
        monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
        slow = reader.payload_locations(keys)
    assert fast == slow and sum(loc is not None for loc in fast) > 200


# --- mutated and random bytes --------------------------------------------------------------

def random_entry(rng: random.Random) -> bytes:
    """Mostly plain entries, some of each unusual kind the rules distinguish."""
    def num() -> int:
        return rng.choice([0, 1, 127, 128, 300, rng.getrandbits(rng.randrange(1, 64)),
                           INT63 - 1, INT63, -1])

    dtype = rng.choice([1, 1, 2, 10, 14, 18, 4, 0, 7, 21, 100, 200])
    shape = tuple(rng.choice([0, 1, 3, 256, rng.getrandbits(20)]) if rng.random() < .95
                  else num() for _ in range(rng.choice([0, 1, 1, 2, 3, 8])))
    size = None if rng.random() < .8 else num()
    shard = 0 if rng.random() < .8 else num()
    offset = rng.getrandbits(40) if rng.random() < .9 else num()
    crc = rng.getrandbits(32) if rng.random() < .9 else 0
    try:
        b = entry(dtype, shape, shard, offset, size, crc)
    except (OverflowError, ValueError):
        return entry(1, (2,), 0, 8, None, 1)
    if rng.random() < .03:
        b += b"\x3a\x04\x0a\x02\x08\x01"  # a slice
    return b


def mutations(rng: random.Random, b: bytes) -> list[bytes]:
    """Truncations, appended, inserted, deleted and flipped bytes, repeated spans."""
    out = [b[:rng.randrange(len(b) + 1)], b + bytes([rng.randrange(256)])]
    for _ in range(4):
        m = bytearray(b)
        i = rng.randrange(len(m) + 1)
        kind = rng.randrange(4)
        if kind == 0 and m:
            m[min(i, len(m) - 1)] = rng.randrange(256)
        elif kind == 1:
            m.insert(i, rng.choice([0x00, 0x08, 0x12, 0x18, 0x20, 0x28, 0x35, 0x80, 0xff,
                                    rng.randrange(256)]))
        elif kind == 2 and m:
            del m[min(i, len(m) - 1)]
        else:
            j = rng.randrange(len(m) + 1)
            m[i:i] = m[min(i, j):max(i, j)]
        out.append(bytes(m))
    return out


def random_bytes(rng: random.Random) -> bytes:
    """Noise, half of it behind a plausible ``08 dtype 12 L`` start."""
    noise = bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
    if rng.random() < .5:
        return bytes([0x08, rng.choice([1, 2, 10]), 0x12, rng.randrange(6)]) + noise
    return noise


def test_c_agrees_on_mutated_and_random_bytes(native: ModuleType) -> None:
    """The C parser has no rule of its own: on arbitrary damage it locates exactly the
    entries the Python path locates, with the same values."""
    rng = random.Random(7)
    raws: list[bytes | None] = []
    for _ in range(4000):
        b = random_entry(rng)
        raws += [b, *mutations(rng, b), random_bytes(rng)]
    raws += [None, b"", b"\x08", b"\x08\x01", b"\x08\x01\x12"]
    found = assert_same(native, raws)
    assert sum(loc is not None for loc in found) > 2000  # the comparison covers both answers


# --- hand-built cases ----------------------------------------------------------------------

F256 = head(1, b"\x12\x03\x08\x80\x02")  # float32, shape (256,)
TAIL = b"\x20\x80\x08" + b"\x28\x80\x08" + b"\x35\x01\x02\x03\x04"  # offset 1024, size 1024
LOC = (1, (256,), 0, 1024, 1024, 0x04030201)
V63 = put_varint(INT63 - 1)  # 9 bytes
V63_UP = put_varint(INT63)   # 10 bytes
ZERO10 = b"\x80" * 9 + b"\x00"  # 0 in the longest form protobuf reads
ZERO11 = b"\x80" * 10 + b"\x00"

EDGE_CASES: list[tuple[str, bytes, tuple | None]] = [
    ("as written", F256 + TAIL, LOC),
    ("shard present", F256 + b"\x18\x02" + TAIL, (1, (256,), 2, 1024, 1024, 0x04030201)),
    ("shard 2**63-1", F256 + b"\x18" + V63 + TAIL, (1, (256,), INT63 - 1, *LOC[3:])),
    ("shard 2**63", F256 + b"\x18" + V63_UP + TAIL, None),
    ("shard 0 in ten bytes", F256 + b"\x18" + ZERO10 + TAIL, LOC),
    ("shard 0 in eleven bytes", F256 + b"\x18" + ZERO11 + TAIL, None),
    ("offset omitted", F256 + TAIL[3:], (1, (256,), 0, 0, 1024, 0x04030201)),
    ("offset 2**63-1", F256 + b"\x20" + V63 + TAIL[3:], (1, (256,), 0, INT63 - 1, 1024,
                                                          0x04030201)),
    ("offset 2**63", F256 + b"\x20" + V63_UP + TAIL[3:], None),
    ("offset 2**64-1", F256 + b"\x20" + put_varint((1 << 64) - 1) + TAIL[3:], None),
    ("offset, 10th byte 01", F256 + b"\x20" + b"\x80" * 9 + b"\x01" + TAIL[3:], None),
    ("offset 0 in ten bytes", F256 + b"\x20" + ZERO10 + TAIL[3:],
     (1, (256,), 0, 0, 1024, 0x04030201)),
    ("offset truncated", F256 + b"\x20\x80", None),
    ("offset tag last", F256 + b"\x20", None),
    ("size omitted, 1024 needed", F256 + b"\x20\x80\x08\x35\x01\x02\x03\x04", None),
    ("size one more", F256 + b"\x20\x80\x08\x28\x81\x08\x35\x01\x02\x03\x04", None),
    ("size not canonical", F256 + b"\x20\x80\x08\x28\x80\x88\x00\x35\x01\x02\x03\x04", LOC),
    ("size 2**63 (no dims give it)", F256 + b"\x20\x00\x28" + V63_UP, None),
    ("crc omitted", F256 + TAIL[:-5], (1, (256,), 0, 1024, 1024, 0)),
    ("crc truncated", F256 + TAIL[:-1], None),
    ("crc then a byte", F256 + TAIL + b"\x00", None),
    ("crc as a varint", F256 + TAIL[:-5] + b"\x30\x05", None),
    ("scalar, size omitted", head(1, b""), None),
    ("zero dim as 12 00", head(1, b"\x12\x00"), (1, (0,), 0, 0, 0, 0)),
    ("zero dim as 12 02 08 00", head(1, b"\x12\x02\x08\x00"), (1, (0,), 0, 0, 0, 0)),
    ("zero dim, size 28 00", head(1, b"\x12\x00") + b"\x28\x00", (1, (0,), 0, 0, 0, 0)),
    ("zero dim, nonzero size", head(1, b"\x12\x00") + b"\x28\x04", None),
    ("scalar", head(2, b"") + b"\x20\x08\x28\x08", (2, (), 0, 8, 8, 0)),
    ("scalar, shape omitted", b"\x08\x02\x20\x08\x28\x08", None),
    ("dtype omitted", b"\x12\x00\x20\x08\x28\x08", None),
    ("dtype 0", head(0, b"") + b"\x20\x08", None),
    ("dtype string", head(7, b"\x12\x02\x08\x02") + b"\x20\x08\x28\x08", None),
    ("dtype resource", head(20, b"") + b"\x28\x01", None),
    ("dtype 127", head(127, b"") + b"\x28\x01", None),
    ("dtype 129", b"\x08\x81\x01\x12\x00\x28\x01", None),
    ("dtype 1, two bytes", b"\x08\x81\x00\x12\x00\x28\x04", None),
    ("dtype repeated", b"\x08\x01" + F256 + TAIL, None),
    ("dim 2**63-1 of uint8", head(4, b"\x12\x0a\x08" + V63) + b"\x28" + V63,
     (4, (INT63 - 1,), 0, 0, INT63 - 1, 0)),
    ("dim 2**63", head(4, b"\x12\x0b\x08" + V63_UP) + b"\x28" + V63, None),
    ("dim 0 in ten bytes", head(4, b"\x12\x0b\x08" + ZERO10), (4, (0,), 0, 0, 0, 0)),
    ("dims whose product overflows", head(1, b"\x12\x0a\x08" + put_varint(1 << 61)), None),
    ("dims 2**61-1 of float32", head(1, b"\x12\x0a\x08" + put_varint((1 << 61) - 1))
     + b"\x28" + put_varint((1 << 63) - 4), (1, ((1 << 61) - 1,), 0, 0, (1 << 63) - 4, 0)),
    ("zero dim times huge dims", head(2, b"\x12\x00" + (b"\x12\x0a\x08" + V63) * 3),
     (2, (0, INT63 - 1, INT63 - 1, INT63 - 1), 0, 0, 0, 0)),
    ("dim with a second field", head(1, b"\x12\x04\x08\x01\x10\x01") + b"\x28\x04", None),
    ("dim with a name", head(1, b"\x12\x05\x08\x01\x12\x01a") + b"\x28\x04", None),
    ("dim with the size truncated", head(1, b"\x12\x01\x08") + b"\x28\x04", None),
    ("dim with the size too short", head(1, b"\x12\x02\x08\x80") + b"\x28\x04", None),
    ("dim overrunning the shape", bytes([8, 1, 0x12, 2, 0x12, 3, 8, 1]) + b"\x28\x04", None),
    ("dim length of two bytes", head(1, b"\x12\x80\x00") + b"\x28\x04", None),
    ("unknown_rank", head(1, b"\x18\x01"), None),
    ("rank 63", head(1, b"\x12\x00" * 63), (1, (0,) * 63, 0, 0, 0, 0)),
    ("rank 64 (shape length 128)", b"\x08\x01\x12\x80\x01" + b"\x12\x00" * 64, None),
    ("shape cut short", head(1, b"\x12\x03\x08\x80\x02")[:-1], None),
    ("shape of 127 bytes, none there", b"\x08\x01\x12\x7f", None),
    ("rank 8", head(1, b"\x12\x02\x08\x01" * 8) + b"\x28\x04", (1, (1,) * 8, 0, 0, 4, 0)),
    ("slices present", F256 + TAIL + b"\x3a\x00", None),
    ("slices before the crc", F256 + TAIL[:-5] + b"\x3a\x00" + TAIL[-5:], None),
    ("unknown field at the end", F256 + TAIL + b"\x40\x01", None),
    ("unknown field in the middle", F256 + b"\x40\x01" + TAIL, None),
    ("offset as fixed64", F256 + b"\x21" + bytes(8) + TAIL[3:], None),
    ("shape as a varint", b"\x08\x01\x10\x00", None),
    ("offset repeated", F256 + b"\x20\x01" + TAIL, None),
    ("size before offset", F256 + TAIL[3:6] + TAIL[:3] + TAIL[6:], None),
    ("crc before size", F256 + TAIL[:3] + TAIL[6:] + TAIL[3:6], None),
    ("shard after offset", F256 + TAIL[:3] + b"\x18\x01" + TAIL[3:], None),
    ("empty", b"", None),
    ("missing", None, None),
]


@pytest.mark.parametrize("name, raw, expected", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_c_and_python_agree_on_each_rule(native: ModuleType, name: str, raw: bytes | None,
                                         expected: tuple | None) -> None:
    """One case per rule of what is plain: fields omitted or repeated, varints at the
    2**63 limit and in their longest form, shapes of every written form, and each thing
    that makes an entry not plain. The expected answers are the Python path's."""
    assert assert_same(native, [raw]) == [expected]
    assert assert_same(native, [raw] * 300) == [expected] * 300  # the vectorized branch


def test_c_leaves_elements_other_than_bytes_to_the_general_path(native: ModuleType) -> None:
    """A buffer that is not ``bytes`` (the reader's table holds bytes) gets ``None``: the
    caller then reads the entry by key, as for any entry the fast path does not take."""
    raw = F256 + TAIL
    assert c_payloads(native, [memoryview(raw), bytearray(raw), 5, raw]) == [None] * 3 + [LOC]


def test_c_locations_are_ordinary_named_tuples(native: ModuleType) -> None:
    """Made without calling the class, they still hash, compare, print and unpack as the
    ones Python makes, and the collector tracks them as it tracks tuple subclasses."""
    raws: list[bytes | None] = [F256 + TAIL, head(2, b"") + b"\x20\x08\x28\x08"]
    for c, p in zip(c_payloads(native, raws), python_plain_payloads(raws, {})):
        assert c is not None and p is not None
        assert hash(c) == hash(p) == hash(tuple(p)) and repr(c) == repr(p)
        assert c._asdict() == p._asdict() and c._replace(size=1).size == 1
        assert gc.is_tracked(c)


def test_c_keeps_no_references(native: ModuleType) -> None:
    """Reference counts of the entries and of the location class are back where they were
    once the results are dropped (shared shapes and sizes included)."""
    raws: list[bytes | None] = [F256 + TAIL, head(1, b"\x12\x00"), b"\x08", None] * 50
    before = [sys.getrefcount(r) for r in raws[:3]], sys.getrefcount(PayloadLocation)
    for _ in range(3):
        found = c_payloads(native, raws)
        assert found[0] == LOC
        del found
    assert ([sys.getrefcount(r) for r in raws[:3]], sys.getrefcount(PayloadLocation)) == before


def test_c_rejects_a_location_type_that_is_not_a_tuple(native: ModuleType) -> None:
    with pytest.raises(TypeError):
        native.plain_payloads([F256 + TAIL], dict, fe._ITEMSIZES)


def test_no_native_switches_to_the_python_path_when_read(monkeypatch) -> None:
    """``TORCHCKPT_NO_NATIVE`` is read at each call, not at import: set, the Python path
    runs (it fills the head cache, which the C path does not use)."""
    raws: list[bytes | None] = [F256 + TAIL]
    monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
    assert fe.accelerator() is None
    heads: fe.HeadCache = {}
    assert plain_payloads(raws, heads) == [LOC] and heads
    monkeypatch.delenv("TORCHCKPT_NO_NATIVE")
    assert fe.accelerator() is fe._native_mod
    heads = {}
    assert plain_payloads(raws, heads) == [LOC]
    assert bool(heads) == (fe._native_mod is None)


def test_itemsizes_table_matches_fixed_width() -> None:
    """The C decoder's dtype table: every fixed-width dtype's element size, 0 elsewhere."""
    assert len(fe._ITEMSIZES) == 0x80
    for d in range(0x80):
        info = FIXED_WIDTH.get(d)  # type: ignore[call-overload]
        assert fe._ITEMSIZES[d] == (0 if info is None else info.itemsize)


def test_encode_shape_writes_zero_dims_as_empty_dims() -> None:
    """The writer's form of a zero dim (``12 00``), which both paths take."""
    assert encode_shape((0, 2)) == b"\x12\x00\x12\x02\x08\x02"
