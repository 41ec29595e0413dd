"""The hand-written record codec against the protobuf runtime, slice keys and string payloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchckpt.format import protos
from torchckpt.format._coding import DecodeError
from torchckpt.format.records import BundleEntry, BundleHeader, Extent, TensorSlice, iter_fields
from torchckpt.format.slices import encode_signed, encode_slice_key, full_slice, slice_bounds
from torchckpt.format.strings import decode_strings, encode_strings


def _proto_entry(e: BundleEntry):  # noqa: ANN202
    msg = protos.BundleEntryProto(dtype=e.dtype, shard_id=e.shard_id, offset=e.offset,
                                  size=e.size, crc32c=e.crc32c)
    msg.shape.SetInParent()  # TF always writes the shape, even an empty one
    for d in e.shape:
        msg.shape.dim.add(size=d)
    for s in e.slices:
        ps = msg.slices.add()
        for x in s.extents:
            pe = ps.extent.add(start=x.start)
            if x.length is not None:
                pe.length = x.length
    return msg


extents = st.builds(Extent, st.integers(0, 2**40), st.none() | st.integers(0, 2**40))
entries = st.builds(
    BundleEntry,
    dtype=st.integers(1, 33),
    shape=st.lists(st.integers(0, 2**40), max_size=5).map(tuple),
    shard_id=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**62),
    size=st.integers(0, 2**62),
    crc32c=st.integers(0, 2**32 - 1),
    slices=st.lists(st.lists(extents, min_size=1, max_size=3).map(lambda x: TensorSlice(tuple(x))),
                    max_size=3).map(tuple),
)


@given(entries)
def test_entry_codec_matches_protobuf(e: BundleEntry) -> None:
    wire = protos.serialize(_proto_entry(e))
    assert e.encode() == wire
    assert BundleEntry.decode(wire) == e


def test_entry_known_answers() -> None:
    # tf-checkpoint-format.md 3.2: a scalar float at offset 364
    scalar = BundleEntry(1, (), 0, 364, 4, 0x897DFDD8)
    assert scalar.encode() == bytes.fromhex("08011200 20ec02 2804 35d8fd7d89".replace(" ", ""))
    # a zero-sized dimension is an empty Dim message
    assert BundleEntry(9, (2, 0)).encode() == bytes.fromhex("0809" "1206" "12020802" "1200")


def test_header_codec_matches_protobuf() -> None:
    assert BundleHeader().encode() == bytes.fromhex("08011a020801")
    assert BundleHeader(num_shards=2).encode() == bytes.fromhex("08021a020801")
    h = BundleHeader(num_shards=3, endianness=1, producer=7, min_consumer=2, bad_consumers=(1, 5))
    msg = protos.BundleHeaderProto(num_shards=3, endianness=1)
    msg.version.producer, msg.version.min_consumer = 7, 2
    msg.version.bad_consumers.extend([1, 5])
    wire = protos.serialize(msg)
    assert h.encode() == wire
    assert BundleHeader.decode(wire) == h


def test_extent_presence_is_kept() -> None:
    assert Extent().encode() == b""  # the whole dimension
    assert Extent(0, 0).encode() == bytes.fromhex("1000")  # an explicit empty range
    assert TensorSlice.decode(bytes.fromhex("0a00"), 0, 2) == TensorSlice((Extent(),))
    assert TensorSlice.decode(bytes.fromhex("0a0408031003"), 0, 6) == TensorSlice((Extent(3, 3),))


@pytest.mark.parametrize("raw,why", [
    (bytes.fromhex("0d0000"), "truncated fixed32"),
    (bytes.fromhex("1205"), "runs past"),
    (bytes.fromhex("0b"), "wire type"),  # group start
    (bytes.fromhex("0a00"), "wire type"),  # dtype as a LEN field
    (bytes.fromhex("00"), "field number 0"),
    (bytes.fromhex("08") + b"\xff" * 10 + b"\x01", "longer than 10"),
    (bytes.fromhex("1202 1a01"), "runs past|unknown rank"),
])
def test_entry_decode_rejects(raw: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        BundleEntry.decode(raw)


def test_iter_fields_skips_unknown_fields() -> None:
    # an unknown field 15 (varint) and 16 (LEN) are passed through, not errors
    raw = bytes.fromhex("0801 7801 820100")
    assert [f for f, _, _ in iter_fields(raw)] == [1, 15, 16]
    assert BundleEntry.decode(raw).dtype == 1


# tf-checkpoint-format.md 5.2 reference vectors for OrderedCode WriteSignedNumIncreasing.
SIGNED = [
    (0, "80"), (1, "81"), (63, "bf"), (64, "c040"), (1000, "c3e8"), (8191, "dfff"),
    (8192, "e02000"), (0x424242, "f0424242"), (2**55 - 1, "ff7fffffffffffff"),
    (2**55, "ff8080000000000000"), (2**63 - 1, "ffc07fffffffffffffff"), (-1, "7f"), (-64, "40"),
    (-65, "3fbf"), (-0x800, "3800"), (-(2**63), "003f8000000000000000"),
]


@pytest.mark.parametrize("value,hexstr", SIGNED)
def test_signed_num_known_answers(value: int, hexstr: str) -> None:
    assert encode_signed(value) == bytes.fromhex(hexstr)


def test_slice_key_known_answers() -> None:
    s = TensorSlice((Extent(4, 3), Extent(0, 3)))
    assert encode_slice_key(b"layer/w", s) == \
        bytes.fromhex("00") + b"layer/w" + bytes.fromhex("0001 0102 8483 8083".replace(" ", ""))
    s = TensorSlice((Extent(2, 2), Extent()))
    assert encode_slice_key(b"w", s) == bytes.fromhex("0077000101028282807f")
    # 0x00 and 0xff inside the name are escaped
    assert encode_slice_key(b"a\x00\xff", full_slice(1)) == \
        bytes.fromhex("00" "61" "00ff" "ff00" "0001" "01" "01" "80" "7f")


def test_slice_bounds() -> None:
    assert slice_bounds(TensorSlice((Extent(4, 3), Extent())), (7, 5)) == ((4, 7), (0, 5))
    for bad in [TensorSlice((Extent(5, 3), Extent())), TensorSlice((Extent(),)),
                TensorSlice((Extent(0, -1), Extent()))]:
        with pytest.raises(ValueError):
            slice_bounds(bad, (7, 5))


def test_string_payload_known_answers() -> None:
    # tf-checkpoint-format.md 4.3
    enc = encode_strings([b"hello"])
    assert enc.payload == bytes.fromhex("05d9c69c43") + b"hello"
    assert enc.crc32c == 0x29C0E0EC
    assert encode_strings([]).payload == bytes.fromhex("d8ea82a2")
    assert decode_strings(enc.payload, 1, stored_crc=enc.crc32c).tolist() == [b"hello"]


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_string_round_trip(values: list[bytes]) -> None:
    enc = encode_strings(values)
    assert decode_strings(enc.payload, len(values), stored_crc=enc.crc32c).tolist() == values


def test_string_decode_errors() -> None:
    enc = encode_strings([b"ab", b"c"])
    with pytest.raises(DecodeError, match="cannot fit"):
        decode_strings(enc.payload, 100)
    with pytest.raises(DecodeError, match="length checksum"):
        decode_strings(bytes([enc.payload[0] ^ 1]) + enc.payload[1:], 2)
    with pytest.raises(DecodeError, match="checksum does not match"):
        decode_strings(enc.payload[:-1] + b"x", 2, stored_crc=enc.crc32c)
    with pytest.raises(DecodeError, match="add up"):
        decode_strings(enc.payload[:-1], 2)
