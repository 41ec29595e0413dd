"""Index entries as bytes, so they travel to rank 0 in a uint8 tensor (no pickle).

Layout of one rank's message, repeated until the end::

    key_length  u32 little-endian
    key         key_length bytes
    entry_length u32 little-endian
    entry       entry_length bytes: a BundleEntryProto (torchckpt.format.records)

The decoder treats the bytes as hostile (code-style P4): every length is
checked against what is left before it is used.
"""

from __future__ import annotations

import struct

from ..format._coding import DecodeError
from ..format.records import BundleEntry

_U32 = struct.Struct("<I")


def encode_entries(entries: dict[bytes, BundleEntry]) -> bytes:
    """One rank's entries, in key order (so equal inputs give equal bytes)."""
    out = bytearray()
    for key in sorted(entries):
        blob = entries[key].encode()
        out += _U32.pack(len(key)) + key + _U32.pack(len(blob)) + blob
    return bytes(out)


def decode_entries(buf: bytes | memoryview) -> dict[bytes, BundleEntry]:
    """Inverse of :func:`encode_entries`.

    Raises:
        ValueError: truncated or malformed bytes, or a key that appears twice.
    """
    view = memoryview(buf)
    out: dict[bytes, BundleEntry] = {}
    pos = 0
    while pos < len(view):
        key, pos = _field(view, pos, "key")
        blob, pos = _field(view, pos, "entry")
        if key in out:
            raise ValueError(f"key {key!r} sent twice")
        try:
            out[key] = BundleEntry.decode(blob)
        except DecodeError as exc:
            raise ValueError(f"bad entry for key {key!r}: {exc}") from exc
    return out


def _field(view: memoryview, pos: int, what: str) -> tuple[bytes, int]:
    if pos + _U32.size > len(view):
        raise ValueError(f"truncated {what} length at byte {pos}")
    (n,) = _U32.unpack_from(view, pos)
    pos += _U32.size
    if n > len(view) - pos:
        raise ValueError(f"{what} of {n} bytes at byte {pos} runs past the end ({len(view)})")
    return bytes(view[pos:pos + n]), pos + n
