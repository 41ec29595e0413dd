"""Blocks and tables: known answers and round trips against a plain dict (leveldb table_test.cc)."""

from __future__ import annotations

import io
import os
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchckpt.format import _crc32c
from torchckpt.format._coding import DecodeError
from torchckpt.format.block import BlockBuilder, iter_block
from torchckpt.format.bundle_writer import write_index
from torchckpt.format.records import BundleEntry
from torchckpt.format.table import (
    FOOTER_SIZE,
    BlockHandle,
    Footer,
    TableBuilder,
    iter_table,
    short_successor,
    shortest_separator,
)


def _random_items(n: int, seed: int, *, key_len: int = 24,
                  value_len: int = 40) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    items = {}
    while len(items) < n:
        # shared prefixes of varying length exercise prefix compression
        prefix = rng.choice([b"", b"a/", b"a/b/", b"model/layer/"])
        k = prefix + rng.randbytes(rng.randint(0, key_len))
        items[k] = rng.randbytes(rng.randint(0, value_len))
    return dict(sorted(items.items()))


def _block_entries(contents: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, contents[a:b]) for k, a, b in iter_block(contents)]


def test_empty_block_bytes() -> None:
    assert BlockBuilder().finish() == bytes.fromhex("0000000001000000")
    assert _block_entries(bytes.fromhex("0000000001000000")) == []


@pytest.mark.parametrize("interval", [1, 16, 1024])
def test_block_round_trip_and_restarts(interval: int) -> None:
    items = _random_items(500, seed=interval)
    b = BlockBuilder(interval)
    for k, v in items.items():
        b.add(k, v)
    contents = b.finish()
    assert _block_entries(contents) == list(items.items())
    num_restarts = struct.unpack_from("<I", contents, len(contents) - 4)[0]
    assert num_restarts == -(-len(items) // interval)
    restarts = struct.unpack_from(f"<{num_restarts}I", contents,
                                  len(contents) - 4 * (num_restarts + 1))
    assert restarts[0] == 0
    # every restart point stores its key whole (shared == 0)
    for offset in restarts:
        assert contents[offset] == 0


def test_block_prefix_compression_bytes() -> None:
    b = BlockBuilder(16)
    b.add(b"abc", b"1")
    b.add(b"abd", b"22")
    # shared 2, non_shared 1, value 2, "d", "22"
    assert b.finish() == bytes.fromhex("000301") + b"abc1" + bytes.fromhex("020102") + b"d22" + \
        bytes.fromhex("00000000" "01000000")


def test_block_rejects_shared_past_previous_key() -> None:
    bad = bytes.fromhex("050101") + b"xy" + bytes.fromhex("00000000" "01000000")
    with pytest.raises(DecodeError, match="shares more"):
        _block_entries(bad)


def test_block_rejects_restart_count_too_big() -> None:
    with pytest.raises(DecodeError, match="restart count"):
        _block_entries(bytes.fromhex("00000000" "ff000000"))


def test_separators() -> None:
    assert shortest_separator(b"abc", b"abz") == b"abd"
    assert shortest_separator(b"abc", b"abd") == b"abc"  # no room between c and d
    assert shortest_separator(b"ab", b"abc") == b"ab"  # a prefix: unchanged
    assert shortest_separator(b"a\xff", b"b") == b"a\xff"
    assert short_successor(b"v/.ATTRIBUTES/VARIABLE_VALUE") == b"w"
    assert short_successor(b"\xff\xffa") == b"\xff\xffb"
    assert short_successor(b"\xff\xff") == b"\xff\xff"


def _table(items: dict[bytes, bytes], **options: int) -> bytes:
    out = io.BytesIO()
    t = TableBuilder(out, **options)
    for k, v in items.items():
        t.add(k, v)
    size = t.finish()
    assert size == len(out.getvalue())
    return out.getvalue()


def _index_keys(table: bytes) -> list[tuple[bytes, BlockHandle]]:
    footer = Footer.decode(table[-FOOTER_SIZE:])
    index = table[footer.index.offset:footer.index.offset + footer.index.size]
    return [(k, BlockHandle.decode(index, a, b)[0]) for k, a, b in iter_block(index)]


@pytest.mark.parametrize("interval", [1, 16, 1024])
@pytest.mark.parametrize("block_size", [64, 4096, 256 * 1024])
def test_table_round_trip_matches_dict(interval: int, block_size: int) -> None:
    items = _random_items(2000, seed=block_size + interval)
    table = _table(items, block_size=block_size, restart_interval=interval)
    assert dict(iter_table(table)) == items
    assert [k for k, _ in iter_table(table)] == list(items)
    index = _index_keys(table)
    if block_size < 256 * 1024:
        assert len(index) > 10  # many data blocks
    # every separator is >= the last key of its block and < the first key of the next one
    blocks = [[k for k, _, _ in iter_block(table[h.offset:h.offset + h.size])] for _, h in index]
    for i, (sep, _) in enumerate(index):
        assert blocks[i][-1] <= sep
        if i + 1 < len(blocks):
            assert sep < blocks[i + 1][0]


@given(st.dictionaries(st.binary(max_size=12), st.binary(max_size=30), max_size=60),
       st.sampled_from([1, 2, 16]), st.sampled_from([32, 128, 4096]))
def test_table_round_trip_property(items: dict[bytes, bytes], interval: int,
                                   block_size: int) -> None:
    items = dict(sorted(items.items()))
    table = _table(items, block_size=block_size, restart_interval=interval)
    assert dict(iter_table(table)) == items


def test_table_huge_entry_gets_its_own_block() -> None:
    # table_builder.cc: an entry of at least two blocks flushes the current block first.
    items = {b"a": b"1", b"b" + b"x" * 600_000: b"2", b"c": b"3"}
    table = _table(items)
    index = _index_keys(table)
    assert len(index) == 3
    assert index[0][0] == b"a"  # no byte between "a" and "b...": the separator stays "a"
    assert index[1][0] == b"b" + b"x" * 600_000
    assert index[2][0] == b"d"
    assert dict(iter_table(table)) == items


def test_table_rejects_unsorted_keys() -> None:
    t = TableBuilder(io.BytesIO())
    t.add(b"b", b"")
    with pytest.raises(ValueError):
        t.add(b"a", b"")
    with pytest.raises(ValueError):
        t.add(b"b", b"")


def test_block_trailer_crc_covers_type_byte() -> None:
    table = _table({b"k": b"v"})
    footer = Footer.decode(table[-FOOTER_SIZE:])
    h = _index_keys(table)[0][1]
    contents = table[h.offset:h.offset + h.size]
    trailer = table[h.offset + h.size:h.offset + h.size + 5]
    assert trailer[0] == 0
    assert struct.unpack("<I", trailer[1:])[0] == _crc32c.mask(_crc32c.value(contents + b"\0"))
    assert footer.metaindex.size == 8  # the empty metaindex block


# tf-checkpoint-format.md 2.10: the 196-byte index TF wrote for
# tf.train.Checkpoint(v=tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))).write(P)
def _h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


SPEC_INDEX = b"".join([
    _h("00 00 06"), _h("08 01 1a 02 08 01"),  # header entry: key "", BundleHeaderProto
    _h("00 1c 0d"), b"_CHECKPOINTABLE_OBJECT_GRAPH", _h("08 07 12 00 20 18 28 52 35 f3 ca f1 d2"),
    _h("00 1c 13"), b"v/.ATTRIBUTES/VARIABLE_VALUE",
    _h("08 01 12 08 12 02 08 02 12 02 08 03 28 18 35 c0 db 3d 17"),
    _h("00 00 00 00 01 00 00 00"), _h("00 4d bc 15 81"),  # restarts; trailer
    _h("00 00 00 00 01 00 00 00"), _h("00 c0 f2 a1 b0"),  # empty metaindex block; trailer
    _h("00 01 02 77 00 6f"), _h("00 00 00 00 01 00 00 00"), _h("00 13 1d ae 04"),  # index block
    _h("74 08 81 01 0e"), bytes(35), _h("57 fb 80 8b 24 75 47 db"),  # footer
])


def test_spec_index_known_answer(tmp_path: os.PathLike) -> None:
    assert len(SPEC_INDEX) == 196
    prefix = os.path.join(tmp_path, "P")
    entries = {
        b"_CHECKPOINTABLE_OBJECT_GRAPH": BundleEntry(7, (), 0, 24, 82, 0xD2F1CAF3),
        b"v/.ATTRIBUTES/VARIABLE_VALUE": BundleEntry(1, (2, 3), 0, 0, 24, 0x173DDBC0),
    }
    write_index(prefix, 1, entries, sync=False)
    with open(prefix + ".index", "rb") as f:
        assert f.read() == SPEC_INDEX
    decoded = dict(iter_table(SPEC_INDEX))
    assert BundleEntry.decode(decoded[b"v/.ATTRIBUTES/VARIABLE_VALUE"]) == \
        entries[b"v/.ATTRIBUTES/VARIABLE_VALUE"]


@pytest.mark.parametrize("mutate,why", [
    (lambda t: t[:-1], "too short|magic"),
    (lambda t: t[:-8] + b"\0" * 8, "magic"),
    (lambda t: t[:0x70] + bytes([t[0x70] ^ 1]) + t[0x71:], "checksum"),
    (lambda t: t[:0x94] + bytes.fromhex("7408ff7f0e") + t[0x99:], "past the end"),
    (lambda t: t[:0x68] + b"\x01" + t[0x69:], "checksum"),
])
def test_table_decode_errors(mutate, why: str) -> None:  # noqa: ANN001
    with pytest.raises(DecodeError, match=why):
        list(iter_table(mutate(SPEC_INDEX)))
