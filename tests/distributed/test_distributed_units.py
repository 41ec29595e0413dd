"""Unit tests of the pieces of ``torchckpt.distributed`` that need no process group."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset

from torchckpt.distributed.layout import chunk_box, tensor_slice
from torchckpt.distributed.merge import MergeError, merge_entries
from torchckpt.distributed.planning import Item, Kind, assign_owners
from torchckpt.distributed.wire import decode_entries, encode_entries
from torchckpt.errors import CorruptCheckpointError
from torchckpt.format import BundleReader, BundleWriter, write_index
from torchckpt.format.boxes import Box, box_shape, read_box
from torchckpt.format.dtypes import DataType
from torchckpt.format.naming import TEMP_INFIX
from torchckpt.format.records import BundleEntry

F32 = int(DataType.DT_FLOAT)


# --- layout --------------------------------------------------------------------------------

PLACEMENTS = [(Shard(0),), (Shard(1),), (Replicate(),), (Shard(0), Shard(0)),
              (Shard(0), Shard(1)), (Replicate(), Shard(0)), (Shard(1), Replicate())]


@pytest.mark.parametrize("placements", PLACEMENTS, ids=str)
@pytest.mark.parametrize("shape", [(7, 5), (2, 3), (1, 9), (0, 4), (10, 1)])
def test_chunk_box_matches_torch(shape: tuple[int, int], placements: tuple) -> None:
    """Our box rule is torch's compute_local_shape_and_global_offset, uneven and empty
    chunks included."""
    mesh_shape = (2,) if len(placements) == 1 else (2, 3)
    for coordinate in np.ndindex(*mesh_shape):
        box = chunk_box(shape, mesh_shape, list(coordinate), placements)
        local, offset = _compute_local_shape_and_global_offset(shape, mesh_shape,
                                                               list(coordinate), placements)
        assert box_shape(box) == tuple(local)
        assert all(lo == off for (lo, _), off, n in zip(box, offset, local) if n)


# --- merge ---------------------------------------------------------------------------------

def _sliced(box: Box, shard: int, full: tuple[int, ...] = (6, 4)) -> dict[bytes, BundleEntry]:
    from torchckpt.format.slices import encode_slice_key

    s = tensor_slice(box)
    n = 1
    for a, b in box:
        n *= b - a
    return {b"w": BundleEntry(F32, full, slices=(s,)),
            encode_slice_key(b"w", s): BundleEntry(F32, box_shape(box), shard, 0, 4 * n, 1)}


def test_merge_appends_slices_in_rank_order() -> None:
    merged = merge_entries([_sliced(((0, 3), (0, 4)), 0), _sliced(((3, 6), (0, 4)), 1)])
    assert [s.extents[0].start for s in merged[b"w"].slices] == [0, 3]
    assert len(merged) == 3


@pytest.mark.parametrize("parts, what", [
    ([_sliced(((0, 3), (0, 4)), 0), _sliced(((2, 6), (0, 4)), 1)], "overlap"),
    ([_sliced(((0, 3), (0, 4)), 0), _sliced(((4, 6), (0, 4)), 1)], "cover"),
    ([_sliced(((0, 6), (0, 4)), 0)], "whole tensor"),
    ([{b"x": BundleEntry(F32, (1,), 0, 0, 4)}, {b"x": BundleEntry(F32, (1,), 1, 0, 4)}],
     "twice"),
    ([_sliced(((0, 3), (0, 4)), 0), _sliced(((3, 6), (0, 4)), 1, full=(6, 5))], "shape"),
    ([{b"x": BundleEntry(F32, (1,), 1, 0, 4)}], "shard"),
])
def test_merge_rejects(parts: list, what: str) -> None:
    with pytest.raises(MergeError, match=what):
        merge_entries(parts)


# --- wire ----------------------------------------------------------------------------------

def test_wire_round_trip() -> None:
    entries = {**_sliced(((0, 3), (0, 4)), 0), b"\x00\xff": BundleEntry(F32, (), 0, 8, 4, 7)}
    assert decode_entries(encode_entries(entries)) == entries


@given(st.binary(max_size=200))
def test_wire_hostile_bytes(data: bytes) -> None:
    try:
        decode_entries(data)
    except ValueError:
        pass


def test_wire_truncated() -> None:
    blob = encode_entries(_sliced(((0, 3), (0, 4)), 0))
    with pytest.raises(ValueError, match="runs past|truncated"):
        decode_entries(blob[:-1])


# --- planning ------------------------------------------------------------------------------

def _item(key: str, nbytes: int, holders: tuple[int, ...] | None = None) -> Item:
    return Item(key, Kind.TENSOR, F32, (nbytes // 4,), nbytes, holders, "", None)


def test_assign_owners_balances_largest_first() -> None:
    items = [_item("a", 40), _item("b", 400), _item("c", 40), _item("d", 400, holders=(0,))]
    owners = assign_owners(items, [0, 0, 0])
    assert owners == [1, 0, 2, 0]  # b -> 0, d -> 0 (its only holder), a -> 1, c -> 2
    assert assign_owners(items, [0, 0, 0]) == owners  # deterministic
    assert assign_owners(items, [1000, 0, 0])[1] == 1  # a rank's DTensor chunks count


# --- reading boxes ---------------------------------------------------------------------------

BOXES = [((0, 2), (0, 4)), ((2, 5), (0, 4)), ((5, 6), (0, 4))]


def _three_slices(tmp_path, keep: tuple[int, ...] = (0, 1, 2)) -> tuple[str, np.ndarray]:
    """A (6, 4) tensor written as the distributed save does: one writer per "rank",
    each sealing its own shard under the save's token, then the merged index, which
    commits them all (``keep``: the slices whose entries make it into the index)."""
    full = np.arange(24, dtype=np.float32).reshape(6, 4)
    prefix = os.path.join(tmp_path, "sliced")
    parts = []
    token = "12345"
    for rank, box in enumerate(BOXES):
        w = BundleWriter(prefix, num_shards=3, token=token)
        part = np.ascontiguousarray(full[box[0][0]:box[0][1]])
        w.add_sliced("w", F32, (6, 4), [(tensor_slice(box), part)], shard=rank)
        parts.append(w.finish_data([rank]))
    entries = merge_entries(parts)
    for rank, part in enumerate(parts):
        if rank not in keep:
            for k in part:
                if k != b"w":
                    del entries[k]
    write_index(prefix, 3, entries, token=token)
    return prefix, full


def test_read_box_reads_only_overlapping_slices(tmp_path, monkeypatch) -> None:
    prefix, full = _three_slices(tmp_path)
    with BundleReader(prefix) as r:
        read: list[int] = []  # shards whose payload was looked up (read_raw and read_into)
        original = r.payload_location
        monkeypatch.setattr(r, "payload_location", lambda k: read.append(r.entry(k).shard_id)
                            or original(k))
        out = np.empty((2, 3), dtype=np.float32)
        read_box(r, "w", ((1, 3), (1, 4)), out)
        assert np.array_equal(out, full[1:3, 1:4])
        assert sorted(read) == [0, 1]  # not the third slice
        read.clear()
        out = np.empty((1, 4), dtype=np.float32)
        read_box(r, "w", ((5, 6), (0, 4)), out)
        assert np.array_equal(out, full[5:6]) and read == [2]


def test_read_box_from_a_plain_entry(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "plain")
    value = np.arange(12, dtype=np.int64).reshape(3, 4)
    w = BundleWriter(prefix)
    w.add("v", value, int(DataType.DT_INT64), (3, 4))
    w.finish()
    with BundleReader(prefix) as r:
        out = np.empty((3, 2), dtype=np.int64)
        read_box(r, "v", ((0, 3), (2, 4)), out)
        assert np.array_equal(out, value[:, 2:])


def test_read_box_reports_a_missing_slice(tmp_path) -> None:
    prefix, _ = _three_slices(tmp_path, keep=(0, 2))
    with BundleReader(prefix) as r:
        with pytest.raises(CorruptCheckpointError, match="no entry"):
            read_box(r, "w", ((0, 6), (0, 4)), np.empty((6, 4), dtype=np.float32))
        out = np.empty((2, 4), dtype=np.float32)
        read_box(r, "w", ((0, 2), (0, 4)), out)  # what does not need the lost slice still reads


# --- the writer's shard-only commit ----------------------------------------------------------

def test_finish_data_seals_one_shard_and_write_index_commits_it(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "p")
    w = BundleWriter(prefix, num_shards=3)
    w.add("a", np.ones(2, dtype=np.float32), F32, (2,), shard=1)
    entries = w.finish_data([1])
    assert sorted(os.listdir(tmp_path)) == [f"p.data-00001-of-00003{TEMP_INFIX}{w.token}"]
    assert entries[b"a"].shard_id == 1
    write_index(prefix, 3, entries, token=w.token)
    assert sorted(os.listdir(tmp_path)) == ["p.data-00001-of-00003", "p.index"]
    w = BundleWriter(prefix, num_shards=3)
    w.add("a", np.ones(2, dtype=np.float32), F32, (2,), shard=2)
    with pytest.raises(ValueError, match="not committed"):
        w.finish_data([1])
    assert sorted(os.listdir(tmp_path)) == ["p.data-00001-of-00003", "p.index"]


def test_is_active_without_a_process_group() -> None:
    from torchckpt.distributed import is_active

    assert not is_active()
    assert torch.distributed.is_available()
