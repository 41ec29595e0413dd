"""Known answers for CRC32C, TF's CRC masking, varints and fixed-width integers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchckpt.format import _coding, _crc32c
from torchckpt.format._coding import DecodeError

# RFC 3720 (iSCSI) appendix B.4, as in leveldb util/crc32c_test.cc.
ISCSI_READ_10 = bytes([
    0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
    0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00,
])
CRC_VECTORS = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (ISCSI_READ_10, 0xD9963A56),
    (b"123456789", 0xE3069283),  # the CRC catalogue's check value
    (b"", 0),
]


@pytest.mark.parametrize("data,crc", CRC_VECTORS,
                         ids=["zeros", "ones", "ascending", "descending", "iscsi", "check",
                              "empty"])
def test_crc32c_known_answers(data: bytes, crc: int) -> None:
    assert _crc32c.value(data) == crc
    assert _crc32c.extend_pure(0, data) == crc  # the pure-Python oracle agrees


def test_crc32c_reads_any_buffer_in_place() -> None:
    import numpy as np

    arr = np.frombuffer(b"123456789", dtype=np.uint8)
    assert _crc32c.value(memoryview(arr)) == 0xE3069283
    assert _crc32c.value(bytearray(b"123456789")) == 0xE3069283


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc32c_extend_is_concatenation(a: bytes, b: bytes) -> None:
    assert _crc32c.extend(_crc32c.value(a), b) == _crc32c.value(a + b)
    assert _crc32c.extend_pure(_crc32c.extend_pure(0, a), b) == _crc32c.value(a + b)


def test_mask_known_answers() -> None:
    # tf-checkpoint-format.md 2.2 and crc32c.h
    assert _crc32c.mask(0) == 0xA282EAD8
    assert _crc32c.mask(0xE3069283) == 0xC78AB0E5
    assert _crc32c.unmask(0xA282EAD8) == 0


@given(st.integers(0, 2**32 - 1))
def test_mask_round_trip(crc: int) -> None:
    masked = _crc32c.mask(crc)
    assert 0 <= masked < 2**32
    assert _crc32c.unmask(masked) == crc


VARINTS = [
    (0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (16383, "ff7f"),
    (16384, "808001"), (2**32 - 1, "ffffffff0f"), (2**63, "80808080808080808001"),
    (2**64 - 1, "ffffffffffffffffff01"),
]


@pytest.mark.parametrize("value,hexstr", VARINTS)
def test_varint_known_answers(value: int, hexstr: str) -> None:
    raw = bytes.fromhex(hexstr)
    assert _coding.put_varint(value) == raw
    assert _coding.get_varint(raw + b"\x99", 0, len(raw)) == (value, len(raw))


@given(st.integers(0, 2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    raw = _coding.put_varint(value)
    assert len(raw) <= _coding.MAX_VARINT64_BYTES
    assert _coding.get_varint(raw, 0, len(raw)) == (value, len(raw))


@pytest.mark.parametrize("raw,why", [
    (b"", "truncated"),
    (b"\x80", "truncated"),
    (b"\xff" * 10 + b"\x01", "longer than 10"),  # an 11-byte varint
    (b"\xff" * 9 + b"\x7f", "overflows 64 bits"),
])
def test_varint_rejects(raw: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        _coding.get_varint(raw, 0, len(raw))


def test_varint32_limit() -> None:
    with pytest.raises(DecodeError):
        _coding.get_varint(b"\x80\x80\x80\x80\x80\x01", 0, 6, _coding.MAX_VARINT32_BYTES)


def test_varint_never_reads_past_limit() -> None:
    with pytest.raises(DecodeError, match="truncated"):
        _coding.get_varint(b"\x80\x01", 0, 1)


def test_fixed_width() -> None:
    assert _coding.put_fixed32(0x8B80FB57) == bytes.fromhex("57fb808b")
    assert _coding.put_fixed64(0xDB4775248B80FB57) == bytes.fromhex("57fb808b247547db")
    assert _coding.get_fixed32(b"\0\x57\xfb\x80\x8b", 1, 5) == 0x8B80FB57
    assert _coding.get_fixed64(bytes.fromhex("57fb808b247547db"), 0, 8) == 0xDB4775248B80FB57
    with pytest.raises(DecodeError):
        _coding.get_fixed32(b"\0\0\0", 0, 3)
    with pytest.raises(DecodeError):
        _coding.get_fixed64(bytes(8), 1, 8)
    with pytest.raises(DecodeError):
        _coding.get_fixed32(bytes(8), -1, 8)
