"""The format layer's fast paths give the same bytes, values and errors as the plain ones.

Covers the bulk APIs added for speed (``BundleWriter.add_many``,
``BundleReader.read_many_into``, ``TableBuilder.add_many``), the plain-entry
decoders of ``_fast_entries`` (checked against ``BundleEntry.decode`` on random
and mutated entries), ``encode_entries``, CRC combination and the two-thread
chunked reads (with tiny chunks, so the tests stay small), each with and
without the C accelerator (``_native``).
"""

from __future__ import annotations

import gc
import io
import os
import random
import threading
import weakref

import numpy as np
import pytest

from torchckpt.errors import ChecksumMismatchError, CorruptCheckpointError, KeyNotFoundError
from torchckpt.format import BundleReader, BundleWriter, _crc32c, _io
from torchckpt.format._coding import DecodeError
from torchckpt.format._fast_entries import (
    decode_plain,
    plain_entry,
    plain_location,
    plain_locations,
)
from torchckpt.format.dtypes import FIXED_WIDTH, DataType
from torchckpt.format.records import BundleEntry, Extent, TensorSlice, encode_entries
from torchckpt.format.table import TableBuilder, iter_table


@pytest.fixture(params=["as-built", "portable"])
def small_chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make 'large' payloads a few KiB so the two-thread paths run on small data; once
    with the C accelerator where this build has it, once with the portable path."""
    if request.param == "portable":
        monkeypatch.setattr(_io, "_native", None)
    monkeypatch.setattr(_io, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(_io, "PARALLEL_BYTES", 2048)
    monkeypatch.setattr(_io, "OVERLAP_BYTES", 2048)
    import torchckpt.format.bundle_reader as br
    import torchckpt.format.bundle_writer as bw

    monkeypatch.setattr(br, "PARALLEL_BYTES", 2048)
    monkeypatch.setattr(bw, "_DIRECT_BYTES", 2048)


def _random_entries(rng: random.Random, n: int) -> list[BundleEntry]:
    def num() -> int:
        return rng.choice([0, 1, 127, 128, 300, rng.getrandbits(rng.randrange(1, 63)), -1,
                           -rng.getrandbits(40), 1 << 64])

    out = []
    for _ in range(n):
        shape = tuple(rng.randrange(40) if rng.random() < .9 else num()
                      for _ in range(rng.randrange(4)))
        dtype = rng.choice([1, 2, 7, 10, 14, 0, 200, -3])
        size = num()
        if dtype in FIXED_WIDTH and rng.random() < .6 and all(d >= 0 for d in shape):
            size = FIXED_WIDTH[dtype].itemsize * int(np.prod(shape, dtype=object))
        slices = (TensorSlice((Extent(1, 2), Extent())),) if rng.random() < .05 else ()
        shard = rng.randrange(3) if rng.random() < .9 else num()
        offset = abs(num()) if rng.random() < .8 else num()
        crc = rng.getrandbits(32) if rng.random() < .9 else 0
        out.append(BundleEntry(dtype, shape, shard, offset, size, crc, slices))
    return out


def _mutations(rng: random.Random, b: bytes) -> list[bytes]:
    out = [b[:rng.randrange(len(b) + 1)], b + bytes([rng.randrange(256)])]
    for _ in range(3):
        m = bytearray(b)
        if m:
            m[rng.randrange(len(m))] = rng.randrange(256)
        out.append(bytes(m))
    return out


def _general(b: bytes) -> BundleEntry | None:
    try:
        return BundleEntry.decode(b)
    except DecodeError:
        return None


def test_encode_entries_matches_encode() -> None:
    entries = _random_entries(random.Random(1), 3000)
    assert encode_entries(entries) == [e.encode() for e in entries]


def test_plain_decoders_agree_with_the_general_decoder() -> None:
    rng = random.Random(2)
    heads: dict = {}
    blobs = []
    for e in _random_entries(rng, 3000):
        b = e.encode()
        blobs += [b, *_mutations(rng, b)]
    blobs += [b"", b"\x08", b"\x12", b"\x12\x00"]
    located = 0
    for b in blobs:
        g = _general(b)
        p = decode_plain(b, heads)
        if p is not None:
            assert g is not None and plain_entry(*p[:6]) == g
        loc = plain_location(b, heads)
        if loc is not None:
            located += 1
            info = FIXED_WIDTH[g.dtype]
            assert not g.slices and min(g.shape, default=0) >= 0
            assert g.size == info.itemsize * int(np.prod(g.shape, dtype=object))
            assert loc == (g.shard_id, g.offset, g.size, g.crc32c)
            assert g.shard_id >= 0 and g.offset >= 0
    assert located > 500
    assert plain_locations(blobs, {}) == [plain_location(b, {}) for b in blobs]


def test_plain_locations_takes_the_vectorized_path_for_writer_output() -> None:
    entries, offset = [], 0
    for i in range(2000):
        shape = [(256,), (3, 4), (), (0,), (2048, 2048)][i % 5]
        size = 4 * int(np.prod(shape))
        entries.append(BundleEntry(1, shape, 0, offset, size, (i * 2654435761) % 2**32))
        offset += size
    raws = encode_entries(entries)
    assert plain_locations(raws, {}) == [(0, e.offset, e.size, e.crc32c) for e in entries]


def test_plain_entry_equals_constructor() -> None:
    a = plain_entry(1, (2, 3), 1, 4, 24, 5)
    b = BundleEntry(1, (2, 3), 1, 4, 24, 5)
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    with pytest.raises(AttributeError):
        a.size = 3  # type: ignore[misc]


@pytest.mark.parametrize("block_size,interval", [(64, 1), (256, 2), (4096, 16), (262144, 16)])
def test_table_add_many_matches_add(block_size: int, interval: int) -> None:
    rng = random.Random(block_size)
    keys = sorted({bytes(rng.choice(b"ab/\x00\xff") for _ in range(rng.randrange(30)))
                   for _ in range(600)})
    values = [os.urandom(rng.choice([0, 3, 40, 200, 700])) for _ in keys]
    one, many = io.BytesIO(), io.BytesIO()
    t = TableBuilder(one, block_size=block_size, restart_interval=interval)
    for k, v in zip(keys, values):
        t.add(k, v)
    t.finish()
    t = TableBuilder(many, block_size=block_size, restart_interval=interval)
    split = len(keys) // 3
    for k, v in zip(keys[:split], values[:split]):
        t.add(k, v)
    t.add_many(keys[split:], values[split:])
    t.finish()
    assert one.getvalue() == many.getvalue()
    assert dict(iter_table(many.getvalue())) == dict(zip(keys, values))


def test_table_add_many_rejects_unsorted_keys() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        TableBuilder(io.BytesIO()).add_many([b"b", b"a"], [b"", b""])
    t = TableBuilder(io.BytesIO())
    t.add(b"c", b"")
    with pytest.raises(ValueError, match="strictly increasing"):
        t.add_many([b"b"], [b""])


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {f"t/{i}": rng.standard_normal(rng.integers(0, 40)).astype(np.float32)
           for i in range(300)}
    out["big/a"] = rng.standard_normal(5000).astype(np.float32)  # > PARALLEL_BYTES when small
    out["big/b"] = rng.integers(0, 100, 3333).astype(np.int64)
    out["scalar"] = np.array(3.5, dtype=np.float64)
    return out


def _dtype(a: np.ndarray) -> DataType:
    return {np.float32: DataType.DT_FLOAT, np.float64: DataType.DT_DOUBLE,
            np.int64: DataType.DT_INT64}[a.dtype.type]


def _write(prefix: str, arrays: dict[str, np.ndarray], *, bulk: bool, shards: int = 1,
           alignment: int = 1) -> None:
    w = BundleWriter(prefix, num_shards=shards, data_alignment=alignment, sync=False)
    items = list(arrays.items())
    for s in range(shards):
        mine = [(k, a, _dtype(a), a.shape) for i, (k, a) in enumerate(items) if i % shards == s]
        if bulk:
            w.add_many(mine, shard=s)
        else:
            for k, a, d, shape in mine:
                w.add(k, a, d, shape, shard=s)
    w.finish()


def _files(prefix: str, shards: int) -> list[bytes]:
    names = [".index"] + [f".data-{i:05d}-of-{shards:05d}" for i in range(shards)]
    return [open(prefix + n, "rb").read() for n in names]


@pytest.mark.parametrize("shards,alignment", [(1, 1), (2, 1), (1, 64)])
def test_add_many_writes_the_same_bytes_as_add(tmp_path, small_chunks, shards: int,
                                               alignment: int) -> None:
    arrays = _arrays(np.random.default_rng(0))
    _write(str(tmp_path / "one"), arrays, bulk=False, shards=shards, alignment=alignment)
    _write(str(tmp_path / "many"), arrays, bulk=True, shards=shards, alignment=alignment)
    assert _files(str(tmp_path / "one"), shards) == _files(str(tmp_path / "many"), shards)


@pytest.mark.parametrize("shards,alignment", [(1, 1), (2, 1), (1, 64)])
def test_read_many_into_equals_read_into(tmp_path, small_chunks, shards: int,
                                         alignment: int) -> None:
    arrays = _arrays(np.random.default_rng(1))
    prefix = str(tmp_path / "ckpt")
    _write(prefix, arrays, bulk=True, shards=shards, alignment=alignment)
    with BundleReader(prefix) as r:
        outs = {k: np.zeros_like(a) for k, a in arrays.items()}
        keys = list(arrays)
        random.Random(0).shuffle(keys)
        r.entry(keys[0])  # one cached entry takes the cached path
        r.read_many_into([(k if i % 2 else k.encode(), outs[k]) for i, k in enumerate(keys)])
        for k, a in arrays.items():
            assert outs[k].tobytes() == a.tobytes(), k
            single = np.zeros_like(a)
            r.read_into(k, single)
            assert single.tobytes() == a.tobytes()


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("key", ["t/7", "big/a"])
def test_read_many_into_reports_a_checksum_mismatch(tmp_path, small_chunks, key: str) -> None:
    arrays = _arrays(np.random.default_rng(2))
    arrays["t/7"] = np.arange(10, dtype=np.float32)
    prefix = str(tmp_path / "ckpt")
    _write(prefix, arrays, bulk=True)
    with BundleReader(prefix) as r:
        e = r.entry(key)
    _flip(prefix + ".data-00000-of-00001", e.offset + e.size // 2)
    outs = [(k, np.zeros_like(a)) for k, a in arrays.items()]
    with BundleReader(prefix) as r, pytest.raises(ChecksumMismatchError) as info:
        r.read_many_into(outs)
    assert info.value.key == key.encode() and "data-00000" in info.value.path
    with BundleReader(prefix, verify_checksums=False) as r:
        r.read_many_into(outs)  # no verification, no error


def test_read_many_into_errors(tmp_path, small_chunks) -> None:
    arrays = _arrays(np.random.default_rng(3))
    prefix = str(tmp_path / "ckpt")
    _write(prefix, arrays, bulk=True)
    with BundleReader(prefix) as r:
        with pytest.raises(KeyNotFoundError):
            r.read_many_into([("nope", np.zeros(1, np.float32))])
        with pytest.raises(ValueError, match="destination"):
            r.read_many_into([("t/1", np.zeros(1000, np.float32))])
    size = os.path.getsize(prefix + ".data-00000-of-00001")
    os.truncate(prefix + ".data-00000-of-00001", size // 2)
    with BundleReader(prefix) as r, pytest.raises(CorruptCheckpointError):
        r.read_many_into([(k, np.zeros_like(a)) for k, a in arrays.items()])


def test_gc_frozen_keeps_the_collector_enabled_and_a_freeze_of_the_program() -> None:
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with _io.gc_frozen():
        assert gc.isenabled() and gc.get_freeze_count() > 0
        cycle: list = []
        cycle.append(cycle)  # garbage made meanwhile is still collected
        ref = weakref.ref(_Node(cycle))
        assert gc.collect() > 0 and ref() is None
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.freeze()  # the program keeps its own frozen generation (pre-fork servers do)
    try:
        frozen = gc.get_freeze_count()
        with _io.gc_frozen():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_gc_frozen_blocks_nest_in_a_thread_and_across_threads() -> None:
    """The heap is unfrozen when the last open block ends, whichever thread opened it."""
    # (frozen objects that die leave the frozen generation: its size only shrinks here)
    with _io.gc_frozen():
        assert gc.get_freeze_count() > 0
        with _io.gc_frozen():  # a Checkpoint read around the reader's bulk read
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() > 0  # the inner end did not unfreeze
    assert gc.get_freeze_count() == 0

    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with _io.gc_frozen():
            entered.set()
            release.wait(10)

    with _io.gc_frozen():
        worker = threading.Thread(target=other)
        worker.start()
        assert entered.wait(10)
    assert gc.get_freeze_count() > 0  # the other thread's block is still open
    release.set()
    worker.join(10)
    assert gc.get_freeze_count() == 0


def test_gc_freeze_new_freezes_what_a_block_made_and_nothing_outside_one() -> None:
    made = [[i] for i in range(1000)]  # tracked objects made before any block
    _io.gc_freeze_new()
    assert gc.get_freeze_count() == 0  # outside a block: nothing
    with _io.gc_frozen():
        before = gc.get_freeze_count()
        made += [[i] for i in range(1000)]  # made inside the block
        _io.gc_freeze_new()
        assert gc.get_freeze_count() >= before + 1000
        assert gc.isenabled()
    assert gc.get_freeze_count() == 0  # the block's end puts them all back
    gc.freeze()  # the program's own frozen generation is left alone
    try:
        frozen = gc.get_freeze_count()
        with _io.gc_frozen():
            made += [[i] for i in range(1000)]
            _io.gc_freeze_new()
            assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


class _Node:
    def __init__(self, payload: object) -> None:
        self.payload = payload
        self.me = self


def test_crc_combine_and_mismatches() -> None:
    rng = random.Random(4)
    for _ in range(100):
        a, b = os.urandom(rng.randrange(3000)), os.urandom(rng.randrange(3000))
        assert _crc32c.combine(_crc32c.value(a), _crc32c.value(b), len(b)) == \
            _crc32c.value(a + b) == _crc32c.extend_pure(0, a + b)
    crcs = [rng.getrandbits(32) for _ in range(50)]
    stored = [_crc32c.mask(c) for c in crcs]
    stored[7] ^= 1
    assert _crc32c.mismatches(crcs, stored) == [7]


def test_read_parallel_and_write_all(tmp_path, small_chunks) -> None:
    data = os.urandom(100_000)
    path = str(tmp_path / "blob")
    with open(path, "wb") as f:
        f.write(data)
    helper = _io.Helper()
    fd = os.open(path, os.O_RDONLY)
    try:
        dests = [bytearray(n) for n in (0, 1, 1500, 40_000)]
        offsets = [10, 20, 30, 50_000]
        crcs = _io.read_parallel(fd, [(memoryview(d), o) for d, o in zip(dests, offsets)], helper)
        for d, o, c in zip(dests, offsets, crcs):
            assert bytes(d) == data[o:o + len(d)] and c == _crc32c.value(bytes(d))
        with pytest.raises(_io.ShortReadError):
            _io.read_with_crc(fd, memoryview(bytearray(10_000)), 95_000, helper)
    finally:
        os.close(fd)
        helper.close()
    r, w = os.pipe()  # a pipe takes 64 KiB at a time: forces partial writes
    bufs = [memoryview(np.arange(n, dtype=np.float32)) for n in (1, 20_000, 7, 50_000)]
    got = bytearray()

    def drain() -> None:
        for chunk in iter(lambda: os.read(r, 7000), b""):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    _io.write_all(w, list(bufs), sum(b.nbytes for b in bufs))
    os.close(w)
    reader.join()
    os.close(r)
    assert bytes(got) == b"".join(b.tobytes() for b in bufs)
