"""Sliced (partitioned) tensors: slice keys and the geometry of reassembly.

A logical tensor ``K`` stored in slices has a full entry under ``K`` (with
``slices``) and one ordinary entry per slice under ``encode_slice_key(K, s)``.
The key uses TF's OrderedCode (``tensorflow/core/lib/strings/ordered_code.cc``,
``util/saved_tensor_slice_util.cc``)::

    num(0) | str(K) | num(rank) | for each dim: signed(start) signed(length)

with ``length = -1`` for a full extent. ``num`` is a length byte followed by the
big-endian value without leading zeros; ``str`` escapes 0x00 as ``00 ff`` and
0xff as ``ff 00`` and ends with ``00 01``; ``signed`` is an order-preserving
variable-length two's complement (see :func:`encode_signed`).
"""

from __future__ import annotations

from .records import Extent, TensorSlice


def encode_num(v: int) -> bytes:
    """OrderedCode ``WriteNumIncreasing``."""
    body = v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""
    return bytes((len(body),)) + body


def encode_str(s: bytes) -> bytes:
    """OrderedCode ``WriteString``."""
    return _escape(s) + b"\x00\x01"


def _escape(s: bytes) -> bytes:
    """0x00 -> ``00 ff``, 0xff -> ``ff 00``; at C speed, since keys may be long."""
    return b"\x00\xff".join(part.replace(b"\xff", b"\xff\x00") for part in s.split(b"\x00"))


def encode_signed(v: int) -> bytes:
    """OrderedCode ``WriteSignedNumIncreasing``: n bytes whose top n bits flag the length."""
    x = v if v >= 0 else ~v
    n = 1
    while x.bit_length() > 7 * n - 1:
        n += 1
    raw = v.to_bytes(n, "big", signed=True)
    as_int = int.from_bytes(raw, "big") ^ (((1 << n) - 1) << (8 * n - n))
    return as_int.to_bytes(n, "big")


def encode_slice_key(name: bytes, tslice: TensorSlice) -> bytes:
    """The bundle key of one slice of tensor ``name`` (extents used verbatim)."""
    return slice_key_prefix(name) + slice_key_suffix(tslice)


def slice_key_prefix(name: bytes) -> bytes:
    """The bytes every slice key of tensor ``name`` starts with: ``num(0) | str(name)``.

    ``str`` is self-delimiting, so no other name's slice keys start with them.
    """
    return encode_num(0) + encode_str(name)


def slice_key_suffix(tslice: TensorSlice) -> bytes:
    """The rest of a slice key: ``num(rank)`` and each extent's start and length."""
    out = bytearray(encode_num(len(tslice.extents)))
    for e in tslice.extents:
        out += encode_signed(e.start if e.length is not None else 0)
        out += encode_signed(e.length if e.length is not None else -1)
    return bytes(out)


def slice_bounds(tslice: TensorSlice, full_shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` per dimension, or ``ValueError`` if the slice does not fit."""
    if len(tslice.extents) != len(full_shape):
        raise ValueError(f"slice has {len(tslice.extents)} extents for a "
                         f"rank-{len(full_shape)} tensor")
    bounds = []
    for e, dim in zip(tslice.extents, full_shape):
        start, length = (0, dim) if e.length is None else (e.start, e.length)
        if start < 0 or length < 0 or start + length > dim:
            raise ValueError(f"slice extent ({start}, {length}) outside dimension of size {dim}")
        bounds.append((start, start + length))
    return tuple(bounds)


def full_slice(rank: int) -> TensorSlice:
    return TensorSlice(tuple(Extent() for _ in range(rank)))
