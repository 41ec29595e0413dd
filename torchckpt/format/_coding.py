"""Little-endian fixed-width integers and varints, decoded with bounds checks.

Mirrors leveldb ``util/coding.{h,cc}``. Decoders never read past ``limit`` and
raise :class:`DecodeError` (a plain exception the callers turn into a
``CorruptCheckpointError`` that names the file) instead of ``IndexError``.
"""

from __future__ import annotations

import struct

MAX_VARINT64_BYTES = 10  # ceil(64 / 7)
MAX_VARINT32_BYTES = 5

_FIXED32 = struct.Struct("<I")
_FIXED64 = struct.Struct("<Q")


class DecodeError(Exception):
    """Raised by the decoders; carries only the reason and the offset."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(what)
        self.what = what
        self.offset = offset


class ChecksumDecodeError(DecodeError):
    """A :class:`DecodeError` whose cause is a CRC32C that does not match."""


def put_varint(value: int) -> bytes:
    """Unsigned LEB128 encoding of a non-negative ``value`` (< 2**64)."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:  # unrolled for sizes and offsets: one call per index entry field
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    if value < 0x10000000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80,
                      value >> 21))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def get_varint(buf: bytes | memoryview, pos: int, limit: int,
               max_bytes: int = MAX_VARINT64_BYTES) -> tuple[int, int]:
    """Decode a varint at ``buf[pos:limit]``; returns ``(value, new_pos)``."""
    result = 0
    shift = 0
    start = pos
    while pos < limit:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >= 1 << 64:
                raise DecodeError("varint overflows 64 bits", start)
            return result, pos
        shift += 7
        if pos - start >= max_bytes:
            raise DecodeError(f"varint longer than {max_bytes} bytes", start)
    raise DecodeError("truncated varint", start)


def put_fixed32(value: int) -> bytes:
    return _FIXED32.pack(value)


def get_fixed32(buf: bytes | memoryview, pos: int, limit: int) -> int:
    if pos < 0 or pos + 4 > limit:
        raise DecodeError("truncated fixed32", pos)
    value: int = _FIXED32.unpack_from(buf, pos)[0]
    return value


def put_fixed64(value: int) -> bytes:
    return _FIXED64.pack(value)


def get_fixed64(buf: bytes | memoryview, pos: int, limit: int) -> int:
    if pos < 0 or pos + 8 > limit:
        raise DecodeError("truncated fixed64", pos)
    value: int = _FIXED64.unpack_from(buf, pos)[0]
    return value
