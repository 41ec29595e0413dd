"""``DT_STRING`` payloads (``tensor_bundle.cc`` ``WriteStringTensor`` / ``ReadStringTensor``).

On-disk format for ``n`` elements::

    varint64 len(s_0) ... varint64 len(s_{n-1}) | fixed32 L | s_0 | ... | s_{n-1}

``L = mask(crc32c(lengths as fixed-width LE integers))``: each length as 4 bytes
(uint32) or, above 0xFFFFFFFF, 8 bytes (uint64) - *not* the varints. The entry's
``crc32c`` is the masked CRC of ``fixed-width lengths | the 4 bytes of L | data``,
so it is not the CRC of the file bytes. A zero-element tensor is just ``L``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _crc32c
from ._coding import DecodeError, get_fixed32, get_varint, put_fixed32, put_varint


def _fixed_len(n: int, byteorder: str = "little") -> bytes:
    return n.to_bytes(4 if n <= 0xFFFFFFFF else 8, byteorder)


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
                   stored_crc: int | None = None) -> list[bytes]:
    """Decode ``count`` strings; checks the length checksum and, if given, the entry CRC.

    Raises:
        DecodeError: malformed payload or a checksum mismatch (the message says which).
    """
    size = len(payload)
    if count > size:  # every element needs at least a one-byte varint
        raise DecodeError(f"{count} string elements cannot fit in {size} bytes", 0)
    order = "big" if big_endian else "little"
    pos = 0
    lengths = []
    for _ in range(count):
        n, pos = get_varint(payload, pos, size)
        lengths.append(n)
    fixed = b"".join(_fixed_len(n, order) for n in lengths)
    stored_len_crc = get_fixed32(payload, pos, size)
    raw_len_crc = bytes(payload[pos:pos + 4])
    if big_endian:
        stored_len_crc = int.from_bytes(raw_len_crc, "big")
    if stored_len_crc != _crc32c.mask(_crc32c.value(fixed)):
        raise DecodeError("the length checksum does not match", pos)
    pos += 4
    if sum(lengths) != size - pos:
        raise DecodeError(f"string lengths add up to {sum(lengths)} bytes but {size - pos} follow",
                          pos)
    if stored_crc is not None:
        crc = _crc32c.extend(_crc32c.extend(_crc32c.value(fixed), raw_len_crc), payload[pos:])
        if _crc32c.mask(crc) != stored_crc:
            raise DecodeError(f"checksum does not match (stored 0x{stored_crc:08x}, "
                              f"computed 0x{_crc32c.mask(crc):08x})", 0)
    out = []
    for n in lengths:
        out.append(bytes(payload[pos:pos + n]))
        pos += n
    return out
