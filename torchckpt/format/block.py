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
from typing import Iterator, Sequence

from ._coding import DecodeError, get_varint, put_varint

_U32 = struct.Struct("<I")


def shared_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix of ``a`` and ``b``.

    XOR of the two prefixes read as big-endian integers: the first differing
    byte is the highest non-zero one. C speed whatever the key length, where a
    byte loop costs ~60 ns per shared byte (keys share ~20-40 bytes).
    """
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - (x.bit_length() + 7) // 8


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
            shared = shared_prefix(self._last_key, key)
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

    def add_many(self, keys: Sequence[bytes], values: Sequence[bytes], start: int,
                 full_at: int) -> int:
        """:meth:`add` ``keys[start:]`` with ``values[start:]`` until the block is full.

        Returns the index of the first entry not added. The block is full once
        :meth:`current_size_estimate` reaches ``full_at`` (checked after each
        entry). An entry whose key and value take ``2 * full_at`` bytes or more
        is not added to a non-empty block (TF ``table_builder.cc``: such an
        entry gets a block of its own), so the caller flushes first. The bytes
        are those of one :meth:`add` per entry; the loop runs in one frame
        because the index of 50,000 tensors is built by it.

        REQUIRES: keys in strictly increasing order (the table checks).
        """
        buf = self._buf
        restarts = self._restarts
        interval, counter, last, empty = self._interval, self._counter, self._last_key, self._empty
        from_bytes = int.from_bytes
        i, n = start, len(keys)
        while i < n:
            key, value = keys[i], values[i]
            vlen = len(value)
            if not empty and len(key) + vlen >= 2 * full_at:
                break
            if counter < interval:  # shared_prefix(last, key), inline
                m = min(len(last), len(key))
                shared = m - ((from_bytes(last[:m], "big") ^ from_bytes(key[:m], "big"))
                              .bit_length() + 7) // 8
            else:
                restarts.append(len(buf))
                counter = shared = 0
            non_shared = len(key) - shared
            if shared < 0x80 and non_shared < 0x80 and vlen < 0x80:
                buf += bytes((shared, non_shared, vlen))
            else:
                buf += put_varint(shared) + put_varint(non_shared) + put_varint(vlen)
            buf += key[shared:]
            buf += value
            last, counter, empty = key, counter + 1, False
            i += 1
            if len(buf) + 4 * len(restarts) + 4 >= full_at:
                break
        self._counter, self._last_key, self._empty = counter, last, empty
        return i

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
    if not isinstance(contents, bytes):  # slicing bytes gives keys without a second copy
        contents = bytes(contents)
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
        key = key[:shared] + contents[pos:pos + non_shared]
        pos += non_shared
        yield key, pos, pos + value_len
        pos += value_len
