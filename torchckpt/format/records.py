"""The bundle's protobuf records, encoded and decoded by hand.

Mirrors ``tensorflow/core/protobuf/tensor_bundle.proto``,
``framework/tensor_shape.proto`` and ``framework/tensor_slice.proto``::

    BundleHeaderProto { int32 num_shards = 1; Endianness endianness = 2;
                        VersionDef version = 3; }
    VersionDef        { int32 producer = 1; int32 min_consumer = 2;
                        repeated int32 bad_consumers = 3; }
    BundleEntryProto  { DataType dtype = 1; TensorShapeProto shape = 2; int32 shard_id = 3;
                        int64 offset = 4; int64 size = 5; fixed32 crc32c = 6;
                        repeated TensorSliceProto slices = 7; }
    TensorShapeProto  { repeated Dim dim = 2; bool unknown_rank = 3; }
    Dim               { int64 size = 1; string name = 2; }
    TensorSliceProto  { repeated Extent extent = 1; }
    Extent            { int64 start = 1; oneof { int64 length = 2; } }

Wire format: ``tag = field << 3 | wire_type`` as a varint; wire types 0 (varint),
1 (fixed64), 2 (length-delimited), 5 (fixed32). proto3 omits default scalars.
TensorFlow always writes ``shape`` (an empty ``12 00`` for scalars), and an
extent's ``length`` is in a oneof, so "absent" (the whole dimension) and 0
differ. These are written by hand rather than through the protobuf runtime
because the writer encodes one entry per tensor (50k small tensors must stay
cheap) and because the decoder must bound-check hostile bytes itself; the
protobuf classes in :mod:`.protos` check this codec in the tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Tuple, Union

from ._coding import DecodeError, get_fixed32, get_fixed64, get_varint, put_fixed32, put_varint

WIRE_VARINT, WIRE_FIXED64, WIRE_LEN, WIRE_FIXED32 = 0, 1, 2, 5
ENDIAN_LITTLE, ENDIAN_BIG = 0, 1
MAX_RANK = 254  # TensorShape::MaxDimensions()
_U64 = 0xFFFFFFFFFFFFFFFF
_FIXED32 = struct.Struct("<I")  # same as _coding.put_fixed32


FieldValue = Union[int, Tuple[int, int]]  # a varint/fixed value, or a LEN field's (start, end)


def _signed64(v: FieldValue) -> int:
    """A varint field's value as a signed 64-bit int (proto int32/int64)."""
    if not isinstance(v, int):
        raise DecodeError("expected a varint field, found a length-delimited one", 0)
    return v - (1 << 64) if v >= 1 << 63 else v


def _span(v: FieldValue) -> Tuple[int, int]:
    """A LEN field's ``(start, end)`` in the buffer."""
    if isinstance(v, int):
        raise DecodeError("expected a length-delimited field, found a varint", 0)
    return v


def _put_int(field: int, value: int) -> bytes:
    """A varint field, negative values as 10-byte two's complement (proto int32/int64)."""
    return put_varint(field << 3) + put_varint(value & 0xFFFFFFFFFFFFFFFF)


def _put_len(field: int, payload: bytes) -> bytes:
    return put_varint(field << 3 | WIRE_LEN) + put_varint(len(payload)) + payload


def iter_fields(buf: bytes | memoryview, start: int = 0,
                end: int | None = None) -> Iterator[tuple[int, int, FieldValue]]:
    """Yield ``(field, wire_type, value)``; LEN values are ``(start, end)`` pairs.

    Raises:
        DecodeError: truncated or malformed wire data.
    """
    pos = start
    limit = len(buf) if end is None else end
    while pos < limit:
        tag, pos = get_varint(buf, pos, limit)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise DecodeError("protobuf field number 0", pos)
        if wire == WIRE_VARINT:
            value, pos = get_varint(buf, pos, limit)
            yield field, wire, value
        elif wire == WIRE_FIXED32:
            yield field, wire, get_fixed32(buf, pos, limit)
            pos += 4
        elif wire == WIRE_FIXED64:
            yield field, wire, get_fixed64(buf, pos, limit)
            pos += 8
        elif wire == WIRE_LEN:
            n, pos = get_varint(buf, pos, limit)
            if n > limit - pos:
                raise DecodeError("length-delimited field runs past its message", pos)
            yield field, wire, (pos, pos + n)
            pos += n
        else:
            raise DecodeError(f"unsupported protobuf wire type {wire}", pos)


def _expect(wire: int, want: int, field: int, pos: int) -> None:
    if wire != want:
        raise DecodeError(f"field {field} has wire type {wire}, expected {want}", pos)


@dataclass(frozen=True, slots=True)
class Extent:
    """One dimension of a slice: ``length is None`` means the whole dimension."""

    start: int = 0
    length: int | None = None

    def encode(self) -> bytes:
        out = b""
        if self.start:
            out += _put_int(1, self.start)
        if self.length is not None:
            out += _put_int(2, self.length)
        return out

    @classmethod
    def decode(cls, buf: bytes | memoryview, start: int, end: int) -> "Extent":
        begin, length = 0, None
        for field, wire, value in iter_fields(buf, start, end):
            if field in (1, 2):
                _expect(wire, WIRE_VARINT, field, start)
                if field == 1:
                    begin = _signed64(value)
                else:
                    length = _signed64(value)
        return cls(begin, length)


@dataclass(frozen=True, slots=True)
class TensorSlice:
    """``TensorSliceProto``: one extent per dimension of the full tensor."""

    extents: tuple[Extent, ...]

    def encode(self) -> bytes:
        return b"".join(_put_len(1, e.encode()) for e in self.extents)

    @classmethod
    def decode(cls, buf: bytes | memoryview, start: int, end: int) -> "TensorSlice":
        extents = []
        for field, wire, value in iter_fields(buf, start, end):
            if field == 1:
                _expect(wire, WIRE_LEN, field, start)
                extents.append(Extent.decode(buf, *_span(value)))
                if len(extents) > MAX_RANK:
                    raise DecodeError("slice has too many extents", start)
        return cls(tuple(extents))


def encode_shape(shape: tuple[int, ...]) -> bytes:
    """``TensorShapeProto`` bytes for ``shape`` (a zero dim is an empty ``Dim``)."""
    return b"".join(_put_len(2, _put_int(1, d) if d else b"") for d in shape)


def decode_shape(buf: bytes | memoryview, start: int, end: int) -> tuple[int, ...]:
    dims = []
    for field, wire, value in iter_fields(buf, start, end):
        if field == 2:
            _expect(wire, WIRE_LEN, field, start)
            size = 0
            for f2, w2, v2 in iter_fields(buf, *_span(value)):
                if f2 == 1:
                    _expect(w2, WIRE_VARINT, f2, start)
                    size = _signed64(v2)
            dims.append(size)
            if len(dims) > MAX_RANK:
                raise DecodeError("shape has too many dimensions", start)
        elif field == 3 and value:
            raise DecodeError("shape has unknown rank", start)
    return tuple(dims)


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """``BundleEntryProto``: where one tensor's bytes are and how to check them.

    For the full entry of a sliced tensor, ``slices`` is non-empty and the
    location fields carry no meaning (a merge may still set ``shard_id``).
    """

    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0
    slices: tuple[TensorSlice, ...] = ()

    def encode(self) -> bytes:
        return _entry_head(self.dtype, self.shape) + self._tail()

    def _tail(self) -> bytes:
        """Fields 3-7 (tags 0x18, 0x20, 0x28, 0x35, 0x3a), in field order."""
        out = b""
        if self.shard_id:
            out += b"\x18" + put_varint(self.shard_id & _U64)
        if self.offset:
            out += b"\x20" + put_varint(self.offset & _U64)
        if self.size:
            out += b"\x28" + put_varint(self.size & _U64)
        if self.crc32c:
            out += b"\x35" + put_fixed32(self.crc32c)
        for s in self.slices:
            out += _put_len(7, s.encode())
        return out

    @classmethod
    def decode(cls, buf: bytes | memoryview) -> "BundleEntry":
        dtype, shard, offset, size, crc = 0, 0, 0, 0, 0
        shape: tuple[int, ...] = ()
        slices: list[TensorSlice] = []
        for field, wire, value in iter_fields(buf):
            if field == 1:
                _expect(wire, WIRE_VARINT, field, 0)
                dtype = _signed64(value)
            elif field == 2:
                _expect(wire, WIRE_LEN, field, 0)
                shape = decode_shape(buf, *_span(value))
            elif field == 3:
                _expect(wire, WIRE_VARINT, field, 0)
                shard = _signed64(value)
            elif field == 4:
                _expect(wire, WIRE_VARINT, field, 0)
                offset = _signed64(value)
            elif field == 5:
                _expect(wire, WIRE_VARINT, field, 0)
                size = _signed64(value)
            elif field == 6:
                _expect(wire, WIRE_FIXED32, field, 0)
                crc = _signed64(value) & 0xFFFFFFFF
            elif field == 7:
                _expect(wire, WIRE_LEN, field, 0)
                slices.append(TensorSlice.decode(buf, *_span(value)))
        return cls(dtype, shape, shard, offset, size, crc, tuple(slices))


def _entry_head(dtype: int, shape: tuple[int, ...]) -> bytes:
    """Fields 1-2 of a ``BundleEntryProto``: the dtype (omitted if 0) and the shape."""
    head = _put_int(1, dtype) if dtype else b""
    return head + _put_len(2, encode_shape(shape))


PlainRecord = tuple[int, tuple[int, ...], int, int, int, int]
"""An unsliced entry's fields ``(dtype, shape, shard_id, offset, size, crc32c)`` as a tuple:
what a writer keeps per tensor until its index is written (made ~10x faster than a
:class:`BundleEntry`, and encoded the same)."""


def encode_entries(entries: Iterable[BundleEntry | PlainRecord]) -> list[bytes]:
    """``[e.encode() for e in entries]``, sharing what entries have in common; a
    :data:`PlainRecord` is encoded as the entry of its fields.

    Why: a model's 50,000 tensors have a few hundred distinct dtype+shape heads
    and sizes, so those fields are encoded once each; per entry only the
    offset varint and the CRC are new (same bytes as :meth:`BundleEntry.encode`).
    """
    heads: dict[tuple[int, tuple[int, ...]], bytes] = {}
    sizes: dict[int, bytes] = {}
    pack = _FIXED32.pack
    out = []
    for e in entries:
        if isinstance(e, BundleEntry):
            dtype, shape, shard, offset, size, crc, slices = (
                e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c, e.slices)
        else:
            dtype, shape, shard, offset, size, crc = e
            slices = ()
        key = (dtype, shape)
        head = heads.get(key)
        if head is None:
            head = heads[key] = _entry_head(dtype, shape)
        if shard or slices or offset <= 0 or size <= 0 or not crc:
            entry = e if isinstance(e, BundleEntry) else BundleEntry(*e)
            out.append(head + entry._tail())
            continue
        size_field = sizes.get(size)
        if size_field is None:
            size_field = sizes[size] = b"\x28" + put_varint(size & _U64)
        out.append(head + b"\x20" + put_varint(offset & _U64) + size_field + b"\x35"
                   + pack(crc))
    return out


@dataclass(frozen=True, slots=True)
class BundleHeader:
    """``BundleHeaderProto``, the value of the empty key ``""``."""

    num_shards: int = 1
    endianness: int = ENDIAN_LITTLE
    producer: int = 1
    min_consumer: int = 0
    bad_consumers: tuple[int, ...] = ()

    def encode(self) -> bytes:
        version = b""
        if self.producer:
            version += _put_int(1, self.producer)
        if self.min_consumer:
            version += _put_int(2, self.min_consumer)
        if self.bad_consumers:
            packed = b"".join(put_varint(c & 0xFFFFFFFFFFFFFFFF) for c in self.bad_consumers)
            version += _put_len(3, packed)
        out = b""
        if self.num_shards:
            out += _put_int(1, self.num_shards)
        if self.endianness:
            out += _put_int(2, self.endianness)
        return out + _put_len(3, version)

    @classmethod
    def decode(cls, buf: bytes | memoryview) -> "BundleHeader":
        num_shards, endian, producer, min_consumer = 0, 0, 0, 0
        bad: list[int] = []
        for field, wire, value in iter_fields(buf):
            if field == 1 and wire == WIRE_VARINT:
                num_shards = _signed64(value)
            elif field == 2 and wire == WIRE_VARINT:
                endian = _signed64(value)
            elif field == 3:
                _expect(wire, WIRE_LEN, field, 0)
                for f2, w2, v2 in iter_fields(buf, *_span(value)):
                    if f2 == 1 and w2 == WIRE_VARINT:
                        producer = _signed64(v2)
                    elif f2 == 2 and w2 == WIRE_VARINT:
                        min_consumer = _signed64(v2)
                    elif f2 == 3 and w2 == WIRE_VARINT:
                        bad.append(_signed64(v2))
                    elif f2 == 3 and w2 == WIRE_LEN:
                        pos, end = _span(v2)
                        while pos < end:
                            c, pos = get_varint(buf, pos, end)
                            bad.append(_signed64(c))
        return cls(num_shards, endian, producer, min_consumer, tuple(bad))
