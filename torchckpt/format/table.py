"""The ``.index`` file: an immutable, sorted LevelDB-style table.

Mirrors ``third_party/xla/xla/tsl/lib/io/{table_builder,table,format}.cc``
(leveldb ``table/``, ``doc/table_format.md``). Layout::

    [data block][trailer] ... [metaindex block][trailer] [index block][trailer] [footer]
    trailer = type (1 byte, 0 = uncompressed) | fixed32 mask(crc32c(contents || type))
    footer  = metaindex handle | index handle | zero padding to 40 bytes | magic (8 bytes)
    handle  = varint64 offset | varint64 size          (size excludes the trailer)

Each index-block entry maps a separator key (>= the last key of a data block and
< the first key of the next) to that block's handle. TensorFlow's bundle writer
uses 256 KiB blocks, restart interval 16 (1 in the index block), no compression,
no filters (an empty metaindex block), and flushes the current block before an
entry whose key and value take at least two blocks. With these settings the
builder below reproduces TF's files byte for byte.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Sequence

from . import _crc32c
from ._coding import (
    ChecksumDecodeError,
    DecodeError,
    get_fixed32,
    get_varint,
    put_fixed32,
    put_varint,
)
from ._fast_entries import accelerator
from .block import BlockBuilder, iter_block

BLOCK_SIZE = 256 * 1024  # TF table_options.h block_size (leveldb's own default is 4 KiB)
RESTART_INTERVAL = 16  # table_options.h block_restart_interval
INDEX_RESTART_INTERVAL = 1  # table_builder.cc: index_block_options.block_restart_interval = 1
TABLE_MAGIC = 0xDB4775248B80FB57  # format.h kTableMagicNumber
FOOTER_SIZE = 48  # format.h Footer::kEncodedLength = 2 * BlockHandle::kMaxEncodedLength + 8
TRAILER_SIZE = 5  # format.h kBlockTrailerSize
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1
# Keys are prefix-compressed: each stores only the bytes it does not share with the
# previous key, so a few bytes on disk can decode to a long key. The reader refuses a
# table whose keys decode to more than this many bytes per byte of file, plus the
# allowance below. TF-written indexes decode to about one byte of key per byte of file
# (0.3 to 1.0 for the fixtures in tests/data/tf), and can never reach 16: with restart
# interval 16 every 16th key is stored whole (1 in the index block). Without a bound,
# 40,000 keys sharing a 64 KiB prefix (425 KB on disk) decode to 2.6 GB.
MAX_KEY_BYTES_PER_TABLE_BYTE = 64
KEY_BYTES_ALLOWANCE = 1 << 20  # any small table may hold a few long keys


@dataclass(frozen=True, slots=True)
class BlockHandle:
    """Where a block sits in the file (``size`` excludes the 5-byte trailer)."""

    offset: int
    size: int

    def encode(self) -> bytes:
        return put_varint(self.offset) + put_varint(self.size)

    @classmethod
    def decode(cls, buf: bytes | memoryview, pos: int, limit: int) -> tuple["BlockHandle", int]:
        offset, pos = get_varint(buf, pos, limit)
        size, pos = get_varint(buf, pos, limit)
        return cls(offset, size), pos


@dataclass(frozen=True, slots=True)
class Footer:
    """The fixed 48 bytes at the end of every table."""

    metaindex: BlockHandle
    index: BlockHandle

    def encode(self) -> bytes:
        body = self.metaindex.encode() + self.index.encode()
        return body + b"\0" * (40 - len(body)) + TABLE_MAGIC.to_bytes(8, "little")

    @classmethod
    def decode(cls, buf: bytes | memoryview) -> "Footer":
        if len(buf) != FOOTER_SIZE:
            raise DecodeError("file too short for a table footer", 0)
        if int.from_bytes(buf[40:48], "little") != TABLE_MAGIC:
            raise DecodeError("not an sstable (bad magic number)", 40)
        metaindex, pos = BlockHandle.decode(buf, 0, 40)
        index, _ = BlockHandle.decode(buf, pos, 40)
        return cls(metaindex, index)


def shortest_separator(start: bytes, limit: bytes) -> bytes:
    """leveldb ``BytewiseComparator::FindShortestSeparator``."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n:
        b = start[i]
        if b < 0xFF and b + 1 < limit[i]:
            return start[:i] + bytes((b + 1,))
    return start


def short_successor(key: bytes) -> bytes:
    """leveldb ``BytewiseComparator::FindShortSuccessor``."""
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes((b + 1,))
    return key


def block_trailer(contents: bytes, block_type: int = NO_COMPRESSION) -> bytes:
    crc = _crc32c.extend(_crc32c.value(contents), bytes((block_type,)))
    return bytes((block_type,)) + put_fixed32(_crc32c.mask(crc))


class TableBuilder:
    """Writes sorted key/value pairs as a table to ``out`` (TF's ``TableBuilder``).

    Call :meth:`add` with strictly increasing keys, then :meth:`finish` once.
    ``out`` only needs ``write``; the builder tracks offsets itself.
    """

    def __init__(self, out: BinaryIO, *, block_size: int = BLOCK_SIZE,
                 restart_interval: int = RESTART_INTERVAL) -> None:
        self._out = out
        self._offset = 0
        self._block_size = block_size
        self._data = BlockBuilder(restart_interval)
        self._index = BlockBuilder(INDEX_RESTART_INTERVAL)
        self._restart_interval = restart_interval
        self._last_key: bytes | None = None
        self._pending: BlockHandle | None = None

    def add(self, key: bytes, value: bytes) -> None:
        last = self._last_key
        if last is not None:
            if key <= last:
                raise ValueError(f"table keys must be strictly increasing: {key!r} after {last!r}")
            # table_builder.cc: keep an overly large entry in a block of its own.
            if len(key) + len(value) >= 2 * self._block_size and not self._data.empty:
                self._flush()
        if self._pending is not None:
            self._index.add(shortest_separator(last or b"", key), self._pending.encode())
            self._pending = None
        self._data.add(key, value)
        self._last_key = key
        if self._data.current_size_estimate() >= self._block_size:
            self._flush()

    def add_many(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """:meth:`add` every ``(keys[i], values[i])``, with the block loop in one frame.

        Same bytes as one :meth:`add` per pair (same block splits, separators
        and large-entry flushes); ~1 us per entry instead of ~3 us.

        Raises:
            ValueError: keys not strictly increasing (after the last key added).
        """
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        if not keys:
            return
        last = self._last_key
        if last is not None and keys[0] <= last:
            raise ValueError(f"table keys must be strictly increasing: {keys[0]!r} after {last!r}")
        if not all(map(operator.lt, keys, keys[1:])):
            i = next(i for i in range(1, len(keys)) if keys[i] <= keys[i - 1])
            raise ValueError(f"table keys must be strictly increasing: {keys[i]!r} after "
                             f"{keys[i - 1]!r}")
        i, n = 0, len(keys)
        while i < n:
            if self._pending is not None:
                self._index.add(shortest_separator(self._last_key or b"", keys[i]),
                                self._pending.encode())
                self._pending = None
            j = self._data.add_many(keys, values, i, self._block_size)
            if j > i:
                self._last_key = keys[j - 1]
            if j < n or self._data.current_size_estimate() >= self._block_size:
                self._flush()  # full, or the next entry is overly large
            i = j

    def _flush(self) -> None:
        if self._data.empty:
            return
        self._pending = self._write_block(self._data.finish())
        self._data.reset()

    def _write_block(self, contents: bytes) -> BlockHandle:
        handle = BlockHandle(self._offset, len(contents))
        self._out.write(contents)
        self._out.write(block_trailer(contents))
        self._offset += len(contents) + TRAILER_SIZE
        return handle

    def finish(self) -> int:
        """Write the remaining blocks and the footer; returns the file size."""
        self._flush()
        metaindex = self._write_block(BlockBuilder(self._restart_interval).finish())
        if self._pending is not None:
            self._index.add(short_successor(self._last_key or b""), self._pending.encode())
            self._pending = None
        index = self._write_block(self._index.finish())
        footer = Footer(metaindex, index).encode()
        self._out.write(footer)
        self._offset += len(footer)
        return self._offset


def _read_block(buf: bytes | memoryview, handle: BlockHandle) -> memoryview:
    """Checked contents of the block at ``handle`` (trailer CRC verified)."""
    end = handle.offset + handle.size + TRAILER_SIZE
    if end > len(buf) - FOOTER_SIZE:
        raise DecodeError(f"block handle (offset {handle.offset}, size {handle.size}) "
                          "points past the end of the table", handle.offset)
    contents = memoryview(buf)[handle.offset:handle.offset + handle.size]
    block_type = buf[handle.offset + handle.size]
    stored = get_fixed32(buf, handle.offset + handle.size + 1, end)
    actual = _crc32c.mask(_crc32c.extend(_crc32c.value(contents), bytes((block_type,))))
    if stored != actual:
        raise ChecksumDecodeError(f"block checksum mismatch (stored 0x{stored:08x}, "
                          f"computed 0x{actual:08x})", handle.offset)
    if block_type != NO_COMPRESSION:
        raise DecodeError(f"unsupported block compression type {block_type}", handle.offset)
    return contents


def iter_table(buf: bytes | memoryview) -> Iterator[tuple[bytes, bytes]]:
    """Yield every ``(key, value)`` of a table held in ``buf``, in key order.

    Each data block is copied once into ``bytes`` (at most 256 KiB at a time),
    because slicing ``bytes`` is cheaper than slicing a ``memoryview`` and then
    copying the key out of it; with 50,000 entries this is most of the cost.

    Memory and time stay proportional to the file: the keys (index separators
    included) may decode to at most :func:`max_key_bytes` bytes in all.

    Raises:
        DecodeError: anything malformed (bad magic, handle out of range, block
            checksum, entry overruns, keys out of order, keys decoding to more
            bytes than the bound).
    """
    if len(buf) < FOOTER_SIZE:
        raise DecodeError(f"file of {len(buf)} bytes is too short for a table footer", 0)
    footer = Footer.decode(memoryview(buf)[len(buf) - FOOTER_SIZE:])
    index = _read_block(buf, footer.index)
    budget = max_key_bytes(len(buf))
    left = budget
    previous: bytes | None = None
    for sep, start, end in iter_block(index):
        left -= len(sep)
        if left < 0:
            raise DecodeError(_too_many_key_bytes(budget, len(buf)), footer.index.offset)
        handle, _ = BlockHandle.decode(index, start, end)
        block = bytes(_read_block(buf, handle))
        native = accelerator()
        found = native.block_items(block, previous, left) if native is not None else None
        if found is None:  # no C decoder here, or it leaves the block to the checks below
            found = block_items(block, previous, left, handle.offset,
                                _too_many_key_bytes(budget, len(buf)))
        items, previous, left = found
        yield from items


def block_items(block: bytes, previous: bytes | None, left: int, offset: int,
                too_many: str) -> tuple[list[tuple[bytes, bytes]], bytes | None, int]:
    """A data block's ``(key, value)`` items, each key after ``previous`` (the table's
    key before the block); with the last key and what is left of the key-byte budget
    ``left`` after them. The reference of the C decoder's ``block_items``
    (``_entries_native.c``), which answers the same or leaves the block to this.

    Why a C twin: opening the index of 50,000 tensors decodes 50,000 entries, ~1 us
    each here and ~0.1 us there; the format layer's whole restore of them is ~0.3 s.

    Raises:
        DecodeError: malformed contents (offset inside the block), keys out of order or
            more key bytes than the budget (message ``too_many``), both at ``offset``.
    """
    items = []
    for key, vstart, vend in iter_block(block):
        left -= len(key)
        if left < 0:
            raise DecodeError(too_many, offset)
        if previous is not None and key <= previous:
            raise DecodeError("table keys are not in increasing order", offset)
        previous = key
        items.append((key, block[vstart:vend]))
    return items, previous, left


def max_key_bytes(file_size: int) -> int:
    """How many bytes the keys of a ``file_size``-byte table may decode to in all."""
    return MAX_KEY_BYTES_PER_TABLE_BYTE * file_size + KEY_BYTES_ALLOWANCE


def _too_many_key_bytes(budget: int, file_size: int) -> str:
    return (f"keys decode to more than {budget} bytes ({MAX_KEY_BYTES_PER_TABLE_BYTE} per byte "
            f"of the {file_size}-byte file plus {KEY_BYTES_ALLOWANCE}): their shared prefixes "
            "are far longer than any real checkpoint's")
