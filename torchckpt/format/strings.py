"""``DT_STRING`` payloads (``tensor_bundle.cc`` ``WriteStringTensor`` / ``ReadStringTensor``).

On-disk format for ``n`` elements::

    varint64 len(s_0) ... varint64 len(s_{n-1}) | fixed32 L | s_0 | ... | s_{n-1}

``L = mask(crc32c(lengths as fixed-width LE integers))``: each length as 4 bytes
(uint32) or, above 0xFFFFFFFF, 8 bytes (uint64) - *not* the varints. The entry's
``crc32c`` is the masked CRC of ``fixed-width lengths | the 4 bytes of L | data``,
so it is not the CRC of the file bytes. A zero-element tensor is just ``L``.

Decoding is bounded by the payload: every element costs at least one varint
byte, the lengths are decoded with numpy a chunk at a time (at most 8 bytes of
memory per element), and both checksums are verified on them before a single element
object is made; a payload of millions of one-byte lengths with a wrong CRC
fails in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _crc32c
from ._coding import (
    MAX_VARINT64_BYTES,
    ChecksumDecodeError,
    DecodeError,
    get_fixed32,
    put_fixed32,
    put_varint,
)

# Lengths decoded per numpy step. Bounds the temporaries (the varint window is
# up to 10 bytes per length, its terminator positions 8 bytes each: ~20 MiB)
# while keeping the Python overhead per element negligible.
_CHUNK = 1 << 18
_U32_MAX = 0xFFFFFFFF


def _fixed_len(n: int, byteorder: Literal["little", "big"] = "little") -> bytes:
    return n.to_bytes(4 if n <= _U32_MAX else 8, byteorder)


@dataclass(frozen=True, slots=True)
class EncodedStrings:
    payload: bytes
    crc32c: int  # masked entry CRC


def encode_strings(values: list[bytes]) -> EncodedStrings:
    """Payload bytes and masked entry CRC of a flat list of byte strings."""
    fixed = b"".join(_fixed_len(len(v)) for v in values)
    length_crc = put_fixed32(_crc32c.mask(_crc32c.value(fixed)))
    data = b"".join(values)
    payload = b"".join(put_varint(len(v)) for v in values) + length_crc + data
    entry_crc = _crc32c.extend(_crc32c.extend(_crc32c.value(fixed), length_crc), data)
    return EncodedStrings(payload, _crc32c.mask(entry_crc))


def decode_strings(payload: bytes | memoryview, count: int, *, big_endian: bool = False,
                   stored_crc: int | None = None) -> np.ndarray:
    """Decode ``count`` strings into a flat object array of ``bytes``.

    Checks, in order and before any element is made: the count fits the payload,
    the length checksum, the lengths add up to the bytes that follow, and, if
    ``stored_crc`` is given, the entry CRC.

    Raises:
        DecodeError: malformed payload or a checksum mismatch (the message says which).
    """
    size = len(payload)
    if count > size:  # every element needs at least a one-byte varint
        raise DecodeError(f"{count} string elements cannot fit in {size} bytes", 0)
    buf = np.frombuffer(payload, dtype=np.uint8)
    lengths, pos = _decode_lengths(buf, count)
    fixed_crc = 0
    for chunk in lengths:
        fixed_crc = _crc32c.extend(fixed_crc, _fixed_widths(chunk, big_endian))
    stored_len_crc = get_fixed32(payload, pos, size)
    raw_len_crc = bytes(payload[pos:pos + 4])
    if big_endian:
        stored_len_crc = int.from_bytes(raw_len_crc, "big")
    if stored_len_crc != _crc32c.mask(fixed_crc):
        raise ChecksumDecodeError("the length checksum does not match", pos)
    pos += 4
    _check_total(lengths, size - pos, pos)
    if stored_crc is not None:
        crc = _crc32c.extend(_crc32c.extend(fixed_crc, raw_len_crc), payload[pos:])
        if _crc32c.mask(crc) != stored_crc:
            raise ChecksumDecodeError(f"checksum does not match (stored 0x{stored_crc:08x}, "
                              f"computed 0x{_crc32c.mask(crc):08x})", 0)
    return _split(bytes(payload[pos:]), lengths, count)


def _decode_lengths(buf: np.ndarray, count: int) -> tuple[list[np.ndarray], int]:
    """The ``count`` leading varints of ``buf`` in chunks (uint64, or uint8 views of
    ``buf`` where every length is one byte), and where they end."""
    chunks, pos = [], 0
    for done in range(0, count, _CHUNK):
        n = min(_CHUNK, count - done)
        window = buf[pos:pos + MAX_VARINT64_BYTES * n]
        if len(window) >= n and not (window[:n] & 0x80).any():  # all one-byte varints:
            chunks.append(window[:n])  # a view, no copy
            pos += n
            continue
        values, used = _varints(window, n, pos)
        chunks.append(values)
        pos += used
    return chunks, pos


def _varints(window: np.ndarray, n: int, at: int) -> tuple[np.ndarray, int]:
    """The first ``n`` varints of ``window`` (found at ``at`` in the payload) and the
    bytes they take; errors as :func:`._coding.get_varint` reports them."""
    ends = np.flatnonzero(window < 0x80)[:n]  # each varint's last byte
    starts = np.zeros(len(ends), dtype=np.int64)
    starts[1:] = ends[:-1] + 1
    widths = ends - starts + 1
    if len(widths) and int(widths.max()) > MAX_VARINT64_BYTES:
        raise DecodeError(f"varint longer than {MAX_VARINT64_BYTES} bytes",
                          at + int(starts[np.argmax(widths)]))
    if len(ends) < n:  # the rest of the window is continuation bytes
        tail = int(ends[-1]) + 1 if len(ends) else 0
        if len(window) - tail >= MAX_VARINT64_BYTES:
            raise DecodeError(f"varint longer than {MAX_VARINT64_BYTES} bytes", at + tail)
        raise DecodeError("truncated varint", at + tail)
    values = np.zeros(n, dtype=np.uint64)
    for j in range(int(widths.max())):  # 7 bits per byte; the 10th byte may add only bit 63
        rows = np.flatnonzero(widths > j)
        group = window[starts[rows] + j] & 0x7F
        if j == MAX_VARINT64_BYTES - 1 and (group > 1).any():
            raise DecodeError("varint overflows 64 bits",
                              at + int(starts[rows[np.argmax(group > 1)]]))
        values[rows] |= group.astype(np.uint64) << np.uint64(7 * j)
    return values, int(ends[-1]) + 1


def _fixed_widths(lengths: np.ndarray, big_endian: bool) -> bytes:
    """The lengths as TF's length checksum covers them: uint32 each, uint64 above 2**32 - 1."""
    order = ">" if big_endian else "<"
    if not len(lengths) or int(lengths.max()) <= _U32_MAX:
        return lengths.astype(order + "u4").tobytes()
    as_u8 = lengths.astype(order + "u8").view(np.uint8).reshape(-1, 8)
    keep = np.ones(as_u8.shape, dtype=bool)
    narrow = lengths <= _U32_MAX  # of a uint32, keep the 4 bytes it has as a uint64's low half
    keep[narrow, :4] = not big_endian
    keep[narrow, 4:] = big_endian
    return as_u8[keep].tobytes()


def _check_total(lengths: list[np.ndarray], remaining: int, at: int) -> None:
    """The lengths must add up to exactly the ``remaining`` bytes (overflow-safe)."""
    total = 0
    for chunk in lengths:
        if len(chunk) and int(chunk.max()) > remaining:
            raise DecodeError(f"string lengths add up to more than the {remaining} bytes that "
                              "follow", at)
        total += int(chunk.sum())  # < 2**18 values of at most ``remaining`` each: no overflow
    if total != remaining:
        raise DecodeError(f"string lengths add up to {total} bytes but {remaining} follow", at)


def _split(data: bytes, lengths: list[np.ndarray], count: int) -> np.ndarray:
    """``data`` cut into consecutive pieces of the given lengths (checked to add up)."""
    out = np.empty(count, dtype=object)
    i = pos = 0
    for chunk in lengths:
        ends = (np.cumsum(chunk, dtype=np.uint64) + np.uint64(pos)).tolist()
        starts = [pos] + ends[:-1]
        piece = [data[a:b] for a, b in zip(starts, ends)]
        out[i:i + len(piece)] = piece
        i += len(piece)
        pos = ends[-1] if ends else pos
    return out
