"""Entries of dtypes torch has no type for (DT_VARIANT, DT_RESOURCE, numbers newer than this
reader) never stop a checkpoint from opening: they are listed with TF's dtype name,
checksummed by ``verify``, and only reading their value is refused.

A real ``tf.data`` iterator checkpoint goes through the same paths in
tests/convert/test_convert_iterator.py; here the entries are forged (no TensorFlow).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import torchckpt
from rewrite import write_raw_index
from torchckpt.cli import main
from torchckpt.errors import UnsupportedFormatError
from torchckpt.format import BundleReader, BundleWriter, DataType, _crc32c
from torchckpt.format._coding import ChecksumDecodeError, DecodeError, put_fixed32, put_varint
from torchckpt.format.variants import variant_crc32c

ODD = {"future": (99, "DT_<99>", "DT_<99>"), "handle": (20, "resource", "DT_RESOURCE")}


def _odd_checkpoint(tmp_path) -> str:
    """A float ``w`` and two entries whose dtypes are then set to 99 and DT_RESOURCE."""
    prefix = str(tmp_path / "odd")
    writer = BundleWriter(prefix, sync=False)
    writer.add("w", np.arange(6, dtype=np.float32), DataType.DT_FLOAT, (2, 3))
    for key in ODD:
        writer.add(key, np.arange(4, dtype=np.uint8), DataType.DT_UINT8, (4,))
    writer.finish()
    with BundleReader(prefix) as r:
        header = r.header.encode()
        entries = {k: r.entry(k) for k in r.keys()}
    for key, (dtype, _, _) in ODD.items():
        entries[key.encode()] = dataclasses.replace(entries[key.encode()], dtype=dtype)
    write_raw_index(prefix, header, {k: e.encode() for k, e in entries.items()})
    return prefix


def test_reader_lists_them_and_refuses_only_their_values(tmp_path) -> None:
    prefix = _odd_checkpoint(tmp_path)
    assert torchckpt.list_variables(prefix) == [("future", [4]), ("handle", [4]), ("w", [2, 3])]
    with torchckpt.load_checkpoint(prefix) as reader:
        dtypes = reader.get_variable_to_dtype_map()
        assert {k: dtypes[k] for k in ODD} == {k: v[1] for k, v in ODD.items()}
        assert b"handle (DT_RESOURCE) [4]\n" in reader.debug_string()
        for key, (_, _, enum) in ODD.items():
            with pytest.raises(UnsupportedFormatError, match=f"unsupported dtype {enum}") as info:
                reader.get_tensor(key)
            assert info.value.key == key.encode()
        assert reader.get_tensor("w").sum().item() == 15


def test_cli_shows_and_verifies_them(tmp_path, capsys) -> None:
    prefix = _odd_checkpoint(tmp_path)
    assert main(["inspect", prefix]) == 0
    out = capsys.readouterr().out
    assert "future (DT_<99>) [4]" in out and "handle (DT_RESOURCE) [4]" in out
    assert main(["inspect", prefix, "--all"]) == 0
    assert "<resource value, 4 bytes: torch has no type for it; not decoded>" in \
        capsys.readouterr().out
    assert main(["verify", prefix]) == 0 and capsys.readouterr().out.startswith("OK ")
    assert main(["diff", prefix, prefix]) == 0


def _variant_payload(elements: list[bytes]) -> tuple[bytes, int]:
    """Bytes and masked CRC as TF's WriteVariantTensor lays them out."""
    out, crc = bytearray(), 0
    for elem in elements:
        out += put_varint(len(elem))
        crc = _crc32c.extend(crc, len(elem).to_bytes(8, "little"))
        out += elem
        crc = _crc32c.extend(crc, elem)
        stored = put_fixed32(_crc32c.mask(crc))
        out += stored
        crc = _crc32c.extend(crc, stored)
    return bytes(out), _crc32c.mask(crc)


def test_variant_checksum_follows_tf_layout() -> None:
    payload, masked = _variant_payload([b"\x0a\x03abc", b"", b"xyz" * 50])
    assert _crc32c.mask(variant_crc32c(payload, 3)) == masked
    damaged = bytearray(payload)
    damaged[3] ^= 1
    with pytest.raises(ChecksumDecodeError, match="checksum mismatch after variant element 0"):
        variant_crc32c(bytes(damaged), 3)
    with pytest.raises(DecodeError, match="ends before variant element 3"):
        variant_crc32c(payload, 4)
    with pytest.raises(DecodeError, match="bytes left after 2 variant elements"):
        variant_crc32c(payload, 2)


def test_verify_checks_a_variant_entry_and_catches_a_flipped_byte(tmp_path, capsys) -> None:
    payload, masked = _variant_payload([b"iterator state", b"more state"])
    prefix = str(tmp_path / "it")
    writer = BundleWriter(prefix, sync=False)
    writer.add("it", np.frombuffer(payload, np.uint8), DataType.DT_UINT8, (len(payload),))
    writer.finish()
    with BundleReader(prefix) as r:
        header, e = r.header.encode(), r.entry("it")
    e = dataclasses.replace(e, dtype=DataType.DT_VARIANT, shape=(2,), crc32c=masked)
    write_raw_index(prefix, header, {b"it": e.encode()})
    assert main(["verify", prefix]) == 0 and capsys.readouterr().out.startswith("OK ")
    assert dict(torchckpt.list_variables(prefix)) == {"it": [2]}
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.seek(e.offset + 5)
        byte = f.read(1)
        f.seek(e.offset + 5)
        f.write(bytes([byte[0] ^ 1]))
    assert main(["verify", prefix]) == 1
    assert "checksum mismatch after variant element 0" in capsys.readouterr().err
