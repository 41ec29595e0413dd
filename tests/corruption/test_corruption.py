"""Damaged or forged input raises a torchckpt error naming the file and key.

Mirrors tensor_bundle_test.cc (FlipByte, TruncatedTensorContents, Endianness).
Each case copies a TF-written fixture into ``tmp_path``, damages it, and checks
the exception class, that the message names the file (and the key, where there
is one), and that nothing was allocated from a forged size.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Callable, Iterator

import numpy as np
import pytest
import torch

import torchckpt
from golden_data import BY_ID
from rewrite import write_raw_index
from torchckpt.errors import (
    CheckpointNotFoundError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    KeyNotFoundError,
    TorchckptError,
    UnsupportedFormatError,
)
from torchckpt.format import BundleReader, BundleWriter, DataType, _crc32c
from torchckpt.format._coding import put_varint
from torchckpt.format.boxes import PAIRWISE_PIECES
from torchckpt.format.records import BundleEntry, BundleHeader, Extent, TensorSlice
from torchckpt.format.slices import encode_slice_key
from torchckpt.format.table import TableBuilder

ZOO = BY_ID["dtype_zoo/ckpt-1"]
KEY_F = "box/single/.ATTRIBUTES/VARIABLE_VALUE"  # float32 [3, 2, 2]
KEY_S = "box/words/.ATTRIBUTES/VARIABLE_VALUE"  # string [4]


@contextlib.contextmanager
def raises(cls: type[TorchckptError], path: str, key: str | None = None,
           match: str | None = None) -> Iterator[None]:
    """Expect exactly ``cls`` (or a subclass) whose message names ``path`` and ``key``."""
    with pytest.raises(cls, match=match) as info:
        yield
    message = str(info.value)
    assert os.path.basename(path) in message, message
    if key is not None:
        assert key in message, message


def _zoo(tmp_path: os.PathLike) -> str:
    return ZOO.copy_to(os.path.join(tmp_path, "zoo"))


def _entries(prefix: str) -> dict[bytes, BundleEntry]:
    with BundleReader(prefix) as r:
        return {k: r.entry(k) for k in r.keys()}


def _data(prefix: str) -> str:
    return prefix + ".data-00000-of-00001"


def _patch(path: str, offset: int, new: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(new)


def _flip(path: str, offset: int) -> None:
    with open(path, "rb") as f:
        f.seek(offset)
        old = f.read(1)
    _patch(path, offset, bytes([old[0] ^ 0x40]))


def _truncate(path: str, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def forge(prefix: str, change: Callable[[dict[bytes, BundleEntry]], None], *,
          header: BundleHeader | None = None) -> None:
    entries = _entries(prefix)
    change(entries)
    write_raw_index(prefix, (header or BundleHeader()).encode(),
                    {k: e.encode() for k, e in entries.items()})


# --- data files ---------------------------------------------------------------------------

def test_flipped_data_byte_is_a_checksum_error(tmp_path: os.PathLike) -> None:
    prefix = _zoo(tmp_path)
    e = _entries(prefix)[KEY_F.encode()]
    _flip(_data(prefix), e.offset + 5)
    with open(_data(prefix), "rb") as f:
        computed = _crc32c.mask(_crc32c.value(f.read()[e.offset:e.offset + e.size]))
    with torchckpt.load_checkpoint(prefix) as reader:
        with pytest.raises(ChecksumMismatchError) as info:
            reader.get_tensor(KEY_F)
        # one representative message pinned in full; the others check file and key only
        err = info.value
        assert str(err) == (f"corrupt checkpoint '{_data(prefix)}': checksum mismatch (stored "
                            f"0x{e.crc32c:08x}, computed 0x{computed:08x}) for '{KEY_F}' at "
                            f"offset {e.offset}")
        assert (err.path, err.key, err.offset) == (_data(prefix), KEY_F.encode(), e.offset)
        # the other tensors stay readable, as in TF
        assert reader.get_tensor("box/int32/.ATTRIBUTES/VARIABLE_VALUE").tolist() is not None
    with torchckpt.load_checkpoint(prefix, verify_checksums=False) as reader:
        assert reader.get_tensor(KEY_F).shape == (3, 2, 2)


@pytest.mark.parametrize("where", ["data", "length_checksum", "varint"])
def test_flipped_string_byte(tmp_path: os.PathLike, where: str) -> None:
    prefix = _zoo(tmp_path)
    e = _entries(prefix)[KEY_S.encode()]
    offset = {"data": e.offset + e.size - 1, "length_checksum": e.offset + 4,
              "varint": e.offset}[where]  # 4 one-byte length varints, then the checksum
    _flip(_data(prefix), offset)
    with torchckpt.load_checkpoint(prefix) as reader:
        with raises(CorruptCheckpointError, _data(prefix), KEY_S):
            reader.get_tensor(KEY_S)


@pytest.mark.parametrize("keep", [0, 1, 0.5, -1])
def test_truncated_data_file(tmp_path: os.PathLike, keep: float) -> None:
    prefix = _zoo(tmp_path)
    size = os.path.getsize(_data(prefix))
    new_size = int(size * keep) if isinstance(keep, float) or keep in (0, 1) else size + keep
    new_size = min(new_size, size - 1)
    _truncate(_data(prefix), new_size)
    entries = _entries(prefix)
    damaged = [k for k, e in entries.items() if e.offset + e.size > new_size]
    assert damaged
    with torchckpt.load_checkpoint(prefix) as reader:
        for k in damaged:
            with raises(CorruptCheckpointError, _data(prefix), k.decode(), match="past the end"):
                reader.get_tensor(k)
        for k in set(entries) - set(damaged):
            reader.get_tensor(k)


def test_missing_shard_file(tmp_path: os.PathLike) -> None:
    prefix = _zoo(tmp_path)
    os.unlink(_data(prefix))
    with raises(CorruptCheckpointError, _data(prefix), match="missing"):
        torchckpt.load_checkpoint(prefix)
    with BundleReader(prefix) as r:  # the format layer opens shards lazily: the key is named
        with raises(CorruptCheckpointError, _data(prefix), KEY_F, match="missing"):
            r.read_array(KEY_F)
    os.mkdir(_data(prefix))  # a directory where the shard belongs opens, then fails in mmap
    with BundleReader(prefix) as r:
        with raises(CorruptCheckpointError, _data(prefix), KEY_F, match="not a regular file"):
            r.read_array(KEY_F)


# --- the index file -----------------------------------------------------------------------

@pytest.mark.parametrize("cut", [0, 1, 20, 47, 48, 49, 100, -1, -9, -20, -47])
def test_truncated_index(tmp_path: os.PathLike, cut: int) -> None:
    prefix = _zoo(tmp_path)
    size = os.path.getsize(prefix + ".index")
    _truncate(prefix + ".index", cut if cut >= 0 else size + cut)
    with raises(CorruptCheckpointError, prefix + ".index"):
        torchckpt.load_checkpoint(prefix)


def test_wrong_magic(tmp_path: os.PathLike) -> None:
    prefix = _zoo(tmp_path)
    _patch(prefix + ".index", os.path.getsize(prefix + ".index") - 1, b"\x00")
    with raises(CorruptCheckpointError, prefix + ".index", match="bad magic"):
        torchckpt.load_checkpoint(prefix)


@pytest.mark.parametrize("offset", [0, 10, 200, 700])
def test_flipped_index_block_byte(tmp_path: os.PathLike, offset: int) -> None:
    prefix = _zoo(tmp_path)
    _flip(prefix + ".index", offset)
    with raises(ChecksumMismatchError, prefix + ".index", match="checksum"):
        torchckpt.load_checkpoint(prefix)


def test_compressed_block_is_unsupported(tmp_path: os.PathLike) -> None:
    """A block marked Snappy-compressed (type 1) with a valid CRC is declined, not misread."""
    from torchckpt.format.block import BlockBuilder
    from torchckpt.format.table import BlockHandle, Footer, block_trailer

    data = BlockBuilder()
    data.add(b"", BundleHeader().encode())
    contents, meta = data.finish(), BlockBuilder().finish()
    index = BlockBuilder(1)
    index.add(b"\x01", BlockHandle(0, len(contents)).encode())
    buf = contents + block_trailer(contents, 1)
    meta_handle = BlockHandle(len(buf), len(meta))
    buf += meta + block_trailer(meta)
    index_contents = index.finish()
    index_handle = BlockHandle(len(buf), len(index_contents))
    buf += index_contents + block_trailer(index_contents)
    buf += Footer(meta_handle, index_handle).encode()
    prefix = os.path.join(tmp_path, "ckpt")
    with open(prefix + ".index", "wb") as f:
        f.write(buf)
    with raises(CorruptCheckpointError, prefix + ".index", match="compression type 1"):
        torchckpt.load_checkpoint(prefix)


def test_eleven_byte_varint_in_an_entry(tmp_path: os.PathLike) -> None:
    prefix = _zoo(tmp_path)
    entries = {k: e.encode() for k, e in _entries(prefix).items()}
    entries[KEY_F.encode()] = b"\x08" + b"\x81" * 10 + b"\x01"  # dtype as an 11-byte varint
    write_raw_index(prefix, BundleHeader().encode(), entries)
    with torchckpt.load_checkpoint(prefix) as reader:
        with raises(CorruptCheckpointError, prefix + ".index", KEY_F, match="longer than 10"):
            reader.get_tensor(KEY_F)
        with raises(CorruptCheckpointError, prefix + ".index", KEY_F):
            reader.get_variable_to_shape_map()


def _set(key: str, **fields: object) -> Callable[[dict[bytes, BundleEntry]], None]:
    def change(entries: dict[bytes, BundleEntry]) -> None:
        e = entries[key.encode()]
        entries[key.encode()] = BundleEntry(**{**{f: getattr(e, f) for f in e.__slots__}, **fields})
    return change


FORGED = [
    # (entry fields, error class, file that must be named, message fragment)
    (dict(shard_id=1), CorruptCheckpointError, "index", "shard id 1 out of range"),
    (dict(shard_id=-1), CorruptCheckpointError, "index", "out of range"),
    (dict(offset=2300), CorruptCheckpointError, "data", "past the end"),  # file: 2344 bytes
    (dict(offset=2**62), CorruptCheckpointError, "data", "past the end"),
    (dict(offset=-5), CorruptCheckpointError, "index", "negative offset"),
    (dict(size=2**60), CorruptCheckpointError, "index", "does not match shape"),
    (dict(shape=(2**40, 2**40), size=2**82), CorruptCheckpointError, "index", "does not match"),
    (dict(shape=(2**29,), size=2**31), CorruptCheckpointError, "data", "past the end"),
    (dict(shape=(3, -2, 2)), CorruptCheckpointError, "index", "negative dimension"),
    (dict(shape=(0, 2**62, 2**62), size=0, crc32c=0xA282EAD8), UnsupportedFormatError, "index",
     "cannot hold"),
    (dict(dtype=99), UnsupportedFormatError, "index", "unsupported dtype"),
    (dict(dtype=int(DataType.DT_VARIANT)), UnsupportedFormatError, "index", "DT_VARIANT"),
    (dict(dtype=int(DataType.DT_STRING)), CorruptCheckpointError, "data", ""),
    (dict(crc32c=0), ChecksumMismatchError, "data", "checksum"),
]


@pytest.mark.parametrize("fields,cls,where,fragment", FORGED,
                         ids=[str(f[0]) for f in FORGED])
def test_forged_entry(tmp_path: os.PathLike, fields: dict, cls: type, where: str,
                      fragment: str) -> None:
    prefix = _zoo(tmp_path)
    forge(prefix, _set(KEY_F, **fields))
    path = prefix + ".index" if where == "index" else _data(prefix)
    with torchckpt.load_checkpoint(prefix) as reader:
        with raises(cls, path, KEY_F, match=fragment or None):
            reader.get_tensor(KEY_F)


@pytest.mark.parametrize("key,shape", [(KEY_F, (12,) + (1,) * 70), (KEY_S, (4,) + (1,) * 70)])
def test_rank_numpy_cannot_hold(tmp_path: os.PathLike, key: str, shape: tuple[int, ...]) -> None:
    prefix = _zoo(tmp_path)
    forge(prefix, _set(key, shape=shape))
    with torchckpt.load_checkpoint(prefix) as reader:
        assert reader.get_variable_to_shape_map()[key] == list(shape)  # listing still works
        with raises(UnsupportedFormatError, prefix + ".index", key, match="cannot hold"):
            reader.get_tensor(key)


def test_forged_huge_string_count(tmp_path: os.PathLike) -> None:
    prefix = _zoo(tmp_path)
    forge(prefix, _set(KEY_S, shape=(2**50,)))
    with torchckpt.load_checkpoint(prefix) as reader:
        with raises(CorruptCheckpointError, _data(prefix), KEY_S, match="cannot fit"):
            reader.get_tensor(KEY_S)


@pytest.mark.parametrize("header,cls,fragment", [
    (BundleHeader(num_shards=2), CorruptCheckpointError, "missing"),
    (BundleHeader(num_shards=0), CorruptCheckpointError, "num_shards 0"),
    (BundleHeader(endianness=2), CorruptCheckpointError, "endianness"),
    (BundleHeader(min_consumer=2), UnsupportedFormatError, "min consumer 2"),
    (BundleHeader(bad_consumers=(1,)), UnsupportedFormatError, "bad consumers"),
])
def test_forged_header(tmp_path: os.PathLike, header: BundleHeader, cls: type,
                       fragment: str) -> None:
    prefix = _zoo(tmp_path)
    forge(prefix, lambda entries: None, header=header)
    with pytest.raises(cls, match=fragment) as info:
        torchckpt.load_checkpoint(prefix)
    assert os.path.basename(prefix) in str(info.value)


def test_missing_header_entry(tmp_path: os.PathLike) -> None:
    prefix = os.path.join(tmp_path, "ckpt")
    with open(prefix + ".index", "wb") as f:
        t = TableBuilder(f)
        t.add(b"a", BundleEntry(1, ()).encode())
        t.finish()
    with raises(CorruptCheckpointError, prefix + ".index", match="header"):
        torchckpt.load_checkpoint(prefix)


def test_big_endian_bundle_is_read(tmp_path: os.PathLike) -> None:
    """BIG is not an error: TF byte-swaps after checking the CRC of the file bytes."""
    from torchckpt.format.strings import _fixed_len

    prefix = os.path.join(tmp_path, "ckpt")
    data = np.array([1.5, -2.0, 3.25], dtype=">f4").tobytes()
    fixed = _fixed_len(5, "big")
    length_crc = _crc32c.mask(_crc32c.value(fixed)).to_bytes(4, "big")
    strings = put_varint(5) + length_crc + b"hello"
    entry_crc = _crc32c.mask(_crc32c.extend(_crc32c.extend(_crc32c.value(fixed), length_crc),
                                            b"hello"))
    with open(_data(prefix), "wb") as f:
        f.write(data + strings)
    write_raw_index(prefix, BundleHeader(endianness=1).encode(), {
        b"f": BundleEntry(1, (3,), 0, 0, 12, _crc32c.mask(_crc32c.value(data))).encode(),
        b"s": BundleEntry(7, (), 0, 12, len(strings), entry_crc).encode(),
    })
    with torchckpt.load_checkpoint(prefix) as reader:
        assert reader.get_tensor("f").tolist() == [1.5, -2.0, 3.25]
        assert reader.get_tensor("s") == b"hello"


# --- sliced entries -----------------------------------------------------------------------

PART = BY_ID["partitioned/model.ckpt"]
TABLE = "lookup/table"
S0 = TensorSlice((Extent(0, 4), Extent(0, 5)))
S1 = TensorSlice((Extent(4, 3), Extent(0, 5)))


def _sliced(slices: tuple[TensorSlice, ...], shape: tuple[int, ...] = (7, 5)) -> Callable:
    def change(entries: dict[bytes, BundleEntry]) -> None:
        entries[TABLE.encode()] = BundleEntry(1, shape, slices=slices)
    return change


@pytest.mark.parametrize("change,fragment", [
    (_sliced((S0,)), "cover 20 of 35"),
    (_sliced((S0, S1, S0)), "cover 55 of 35"),
    (_sliced((S0, TensorSlice((Extent(2, 5), Extent(0, 5))))), "missing"),
    (_sliced((S0, S1), shape=(2**40, 5)), "cover 35 of"),
    (_sliced((S0, S1), shape=(7, 5, 1)), "bad slice"),
    (_sliced((S0, TensorSlice((Extent(4, 9), Extent(0, 5))))), "bad slice"),
])
def test_forged_slices(tmp_path: os.PathLike, change: Callable, fragment: str) -> None:
    prefix = PART.copy_to(os.path.join(tmp_path, "part"))
    forge(prefix, change)
    with torchckpt.load_checkpoint(prefix) as reader:
        with raises(CorruptCheckpointError, prefix + ".index", TABLE, match=fragment):
            reader.get_tensor(TABLE)


def test_overlapping_slices_many(tmp_path: os.PathLike) -> None:
    """Hundreds of slices: overlap detection stays linear (no quadratic scan)."""
    prefix = os.path.join(tmp_path, "ckpt")
    w = BundleWriter(prefix, sync=False)
    rows = [(TensorSlice((Extent(i, 1), Extent())), np.full((1, 2), i, np.float32))
            for i in range(300)]
    w.add_sliced("t", DataType.DT_FLOAT, [300, 2], rows)
    w.finish()
    with torchckpt.load_checkpoint(prefix) as reader:
        assert reader.get_tensor("t")[:, 0].tolist() == [float(i) for i in range(300)]
    # Rows 0-297 in pairs, then rows 1-2 again: 600 elements in all, as many as the
    # tensor has (rows 298-299 stay uncovered), so the element count passes and only the
    # overlap check, with more pieces than the pairwise scan takes, can refuse them.
    bad = [TensorSlice((Extent(i, 2), Extent())) for i in range(0, 298, 2)]
    bad.append(TensorSlice((Extent(1, 2), Extent())))
    assert len(bad) > PAIRWISE_PIECES
    w = BundleWriter(os.path.join(tmp_path, "bad"), sync=False)
    w.add_sliced("t", DataType.DT_FLOAT, [300, 2],
                 [(s, np.zeros((s.extents[0].length, 2), np.float32)) for s in bad])
    w.finish()
    with torchckpt.load_checkpoint(os.path.join(tmp_path, "bad")) as reader:
        with raises(CorruptCheckpointError, "bad.index", "t",
                    match=r"bad\.index': overlapping slices for 't'"):
            reader.get_tensor("t")


def test_slice_entry_with_wrong_dtype(tmp_path: os.PathLike) -> None:
    prefix = PART.copy_to(os.path.join(tmp_path, "part"))
    part_key = encode_slice_key(TABLE.encode(), S0)

    def change(entries: dict[bytes, BundleEntry]) -> None:  # float64 [4, 5] under a float32
        entries[part_key] = BundleEntry(2, (4, 5), 0, entries[part_key].offset, 160)

    forge(prefix, change)
    with torchckpt.load_checkpoint(prefix) as reader:
        with raises(CorruptCheckpointError, prefix + ".index", TABLE, match="expected float32"):
            reader.get_tensor(TABLE)


# --- paths and state files ----------------------------------------------------------------

def test_missing_key(tmp_path: os.PathLike) -> None:
    with torchckpt.load_checkpoint(ZOO.prefix) as reader:
        with pytest.raises(KeyNotFoundError) as info:
            reader.get_tensor("no/such/key")
        assert isinstance(info.value, KeyError)
        assert str(info.value) == f"key 'no/such/key' not found in checkpoint '{ZOO.prefix}'"
        with pytest.raises(KeyNotFoundError):
            reader.get_tensor("")  # the header is not a tensor


def test_no_checkpoint_at_path(tmp_path: os.PathLike) -> None:
    with raises(CheckpointNotFoundError, "nothing.index"):
        torchckpt.load_checkpoint(os.path.join(tmp_path, "nothing"))
    with raises(CheckpointNotFoundError, str(tmp_path), match="no 'checkpoint' state file"):
        torchckpt.load_checkpoint(tmp_path)
    assert torchckpt.latest_checkpoint(tmp_path) is None


def _state(directory: str, path: str) -> None:
    with open(os.path.join(directory, "checkpoint"), "w", encoding="utf-8") as f:
        f.write(f'model_checkpoint_path: "{path}"\nall_model_checkpoint_paths: "{path}"\n')


def test_state_file_naming_a_missing_prefix(tmp_path: os.PathLike) -> None:
    prefix = _zoo(tmp_path)
    directory = os.path.dirname(prefix)
    _state(directory, "ckpt-9")
    state = os.path.join(directory, "checkpoint")
    with raises(CheckpointNotFoundError, state, match="ckpt-9"):
        torchckpt.load_checkpoint(directory)
    with raises(CheckpointNotFoundError, state):
        torchckpt.latest_checkpoint(directory)


@pytest.mark.parametrize("outside", ["../elsewhere/ckpt-1", "/etc/ckpt-1", "sub/../../ckpt-1"])
def test_state_file_naming_a_path_outside(tmp_path: os.PathLike, outside: str) -> None:
    prefix = _zoo(tmp_path)
    directory = os.path.dirname(prefix)
    _state(directory, outside)
    with raises(CorruptCheckpointError, os.path.join(directory, "checkpoint"), match="outside"):
        torchckpt.load_checkpoint(directory)


def test_state_file_with_moved_absolute_path_hints(tmp_path: os.PathLike) -> None:
    prefix = _zoo(tmp_path)
    directory = os.path.dirname(prefix)
    _state(directory, "/old/place/ckpt-1")  # a TF1 Saver folder that was moved
    with raises(CorruptCheckpointError, "checkpoint", match="pass it explicitly"):
        torchckpt.latest_checkpoint(directory)
    _state(directory, os.path.abspath(prefix))  # absolute but inside: fine
    assert torchckpt.latest_checkpoint(directory) == os.path.abspath(prefix)


@pytest.mark.parametrize("text", [b"model_checkpoint_path: ", b"\xff\xfe\x00", b"x: 1",
                                  b'all_model_checkpoint_paths: "a"\n'])
def test_unreadable_state_file(tmp_path: os.PathLike, text: bytes) -> None:
    prefix = _zoo(tmp_path)
    directory = os.path.dirname(prefix)
    with open(os.path.join(directory, "checkpoint"), "wb") as f:
        f.write(text)
    with raises(CorruptCheckpointError, os.path.join(directory, "checkpoint")):
        torchckpt.load_checkpoint(directory)


def test_pickle_is_never_loaded(tmp_path: os.PathLike) -> None:
    """A pickle where an index belongs is just bytes that fail to parse (code-style P14)."""
    prefix = os.path.join(tmp_path, "evil")
    torch.save({"w": torch.zeros(3)}, prefix + ".index")
    with raises(CorruptCheckpointError, prefix + ".index"):
        torchckpt.load_checkpoint(prefix)


def test_not_a_table_at_all(tmp_path: os.PathLike) -> None:
    prefix = os.path.join(tmp_path, "junk")
    with open(prefix + ".index", "wb") as f:
        f.write(struct.pack("<Q", 0xDB4775248B80FB57) * 64)  # the magic, over and over
    with raises(CorruptCheckpointError, prefix + ".index"):
        torchckpt.load_checkpoint(prefix)
