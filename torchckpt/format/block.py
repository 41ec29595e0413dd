"""Blocks of a LevelDB-style table: prefix-compressed entries plus a restart array.

Mirrors ``third_party/xla/xla/tsl/lib/io/block_builder.cc`` and ``block.cc``
(leveldb ``table/block_builder.cc``, ``table/block.cc``). Layout::

    entry*  restart[0..R-1] (fixed32 LE each)  R (fixed32 LE)
    entry = varint32 shared | varint32 non_shared | varint32 value_length
            | key_delta[non_shared] | value[value_length]

``shared`` is the length of the prefix this key shares with the previous key;
every ``restart_interval``-th entry stores ``shared = 0`` and its offset goes in
the restart array, so a reader can binary-search restarts. An empty block is
``00 00 00 00 01 00 00 00``.
"""

from __future__ import annotations

import struct
from typing import Iterator

from ._coding import DecodeError, get_varint, put_varint

_U32 = struct.Struct("<I")


class BlockBuilder:
    """Accumulates sorted entries into one block (leveldb ``BlockBuilder``).

    REQUIRES: keys are added in strictly increasing bytewise order.
    """

    def __init__(self, restart_interval: int = 16) -> None:
        if restart_interval < 1:
            raise ValueError("restart_interval must be >= 1")
        self._interval = restart_interval
        self.reset()

    def reset(self) -> None:
        self._buf = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last_key = b""
        self._empty = True

    @property
    def empty(self) -> bool:
        return self._empty

    def current_size_estimate(self) -> int:
        """Size of the finished block: entries + restart array + count."""
        return len(self._buf) + 4 * len(self._restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self._counter < self._interval:
            last = self._last_key
            n = min(len(last), len(key))
            while shared < n and last[shared] == key[shared]:
                shared += 1
        else:
            self._restarts.append(len(self._buf))
            self._counter = 0
        non_shared = len(key) - shared
        buf = self._buf
        if shared < 0x80 and non_shared < 0x80 and len(value) < 0x80:
            buf += bytes((shared, non_shared, len(value)))
        else:
            buf += put_varint(shared) + put_varint(non_shared) + put_varint(len(value))
        buf += key[shared:]
        buf += value
        self._last_key = key
        self._counter += 1
        self._empty = False

    def finish(self) -> bytes:
        """Append the restart array and return the block contents."""
        out = self._buf
        for r in self._restarts:
            out += _U32.pack(r)
        out += _U32.pack(len(self._restarts))
        return bytes(out)


def iter_block(contents: bytes | memoryview) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(key, value_start, value_end)`` for every entry of a block.

    Every length is checked against the block's entry area; a ``shared`` larger
    than the previous key is rejected (block.cc ``DecodeEntry``).

    Raises:
        DecodeError: malformed contents, with the offset inside the block.
    """
    n = len(contents)
    if n < 4:
        raise DecodeError("block shorter than its restart count", 0)
    num_restarts = _U32.unpack_from(contents, n - 4)[0]
    max_restarts = (n - 4) // 4
    if num_restarts > max_restarts:
        raise DecodeError(f"block restart count {num_restarts} does not fit the block", n - 4)
    limit = n - 4 * (num_restarts + 1)
    pos = 0
    key = b""
    while pos < limit:
        entry_at = pos
        a, b, c = contents[pos], contents[pos + 1] if pos + 1 < limit else 0x80, \
            contents[pos + 2] if pos + 2 < limit else 0x80
        if a < 0x80 and b < 0x80 and c < 0x80:
            shared, non_shared, value_len = a, b, c
            pos += 3
        else:
            shared, pos = get_varint(contents, pos, limit, 5)
            non_shared, pos = get_varint(contents, pos, limit, 5)
            value_len, pos = get_varint(contents, pos, limit, 5)
        if shared > len(key):
            raise DecodeError("entry shares more bytes than the previous key has", entry_at)
        if non_shared + value_len > limit - pos:
            raise DecodeError("entry runs past the end of the block", entry_at)
        key = key[:shared] + bytes(contents[pos:pos + non_shared])
        pos += non_shared
        yield key, pos, pos + value_len
        pos += value_len
