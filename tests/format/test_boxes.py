"""The one box read (``torchckpt/format/boxes.py``): any box of a tensor stored whole or in
slices, checked against numpy slicing of the whole value, and the slice checks.

The reference is the simple path: the whole array, sliced with numpy.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from golden_data import BY_ID
from torchckpt.errors import CorruptCheckpointError
from torchckpt.format import BundleReader, BundleWriter
from torchckpt.format.boxes import (
    Box,
    find_pieces,
    full_box,
    intersect,
    read_box,
    reassemble,
    relative,
)
from torchckpt.format.dtypes import DataType
from torchckpt.format.records import BundleEntry, Extent, TensorSlice
from torchckpt.format.slices import encode_slice_key

PART = BY_ID["partitioned/model.ckpt"]
TABLE = "lookup/table"  # float32 [7, 5], TF slices: rows 0-3 and 4-6
FULL = np.arange(48, dtype=np.float32).reshape(6, 8)
GRID = [((0, 2), (0, 3)), ((0, 2), (3, 8)), ((2, 6), (0, 5)), ((2, 6), (5, 8))]


def _slice(box: Box) -> TensorSlice:
    return TensorSlice(tuple(Extent(a, b - a) for a, b in box))


def _write(prefix: str, boxes: list[Box], value: np.ndarray = FULL, *,
           listed: list[Box] | None = None) -> None:
    """``value`` under "t" as the slices ``boxes`` (each with its own payload), listing
    ``listed`` (default: ``boxes``) in the full entry; "plain" holds it unsliced."""
    w = BundleWriter(prefix, sync=False)
    w.add("plain", value, DataType.DT_FLOAT, value.shape)
    w.add_sliced("t", DataType.DT_FLOAT, value.shape,
                 [(_slice(b), np.ascontiguousarray(value[relative(b, full_box(value.shape))]))
                  for b in boxes])
    if listed is not None:
        w.entries[b"t"] = BundleEntry(int(DataType.DT_FLOAT), value.shape,
                                      slices=tuple(_slice(b) for b in listed))
    w.finish()


def _all_boxes(shape: tuple[int, ...]) -> list[Box]:
    ranges = [[(a, b) for a in range(d + 1) for b in range(a + 1, d + 1)] for d in shape]
    return list(itertools.product(*ranges))


def test_a_tf_sliced_entry_reads_whole_and_by_box() -> None:
    want = PART.numeric[TABLE]
    with BundleReader(PART.prefix) as r:
        assert r.entry(TABLE).slices
        assert np.array_equal(reassemble(r, TABLE), want)
        assert np.array_equal(r.read_array(TABLE), want)
        out = np.empty((4, 3), dtype=np.float32)
        read_box(r, TABLE, ((2, 6), (1, 4)), out)  # rows from both slices
        assert np.array_equal(out, want[2:6, 1:4])


def test_every_box_across_several_slices_equals_numpy_slicing(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "grid")
    _write(prefix, GRID)
    with BundleReader(prefix) as r:
        assert np.array_equal(r.read_array("t"), FULL)
        for box in _all_boxes(FULL.shape):
            for key in ("t", "plain"):
                out = np.full([b - a for a, b in box], -1, dtype=np.float32)
                read_box(r, key, box, out)
                assert np.array_equal(out, FULL[relative(box, full_box(FULL.shape))]), (key, box)
            pieces = find_pieces(r, "t", box)
            assert sorted(p.bounds for p in pieces) == sorted(
                g for g in GRID if intersect(g, box) is not None)


def test_a_box_of_an_unsliced_entry(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "plain")
    _write(prefix, [full_box(FULL.shape)])
    with BundleReader(prefix) as r:
        out = np.empty((3, 2), dtype=np.float32)
        read_box(r, "plain", ((1, 4), (6, 8)), out)
        assert np.array_equal(out, FULL[1:4, 6:8])
        [piece] = find_pieces(r, "plain", ((1, 4), (6, 8)))
        assert piece.key == b"plain" and piece.bounds == full_box(FULL.shape)
        assert find_pieces(r, "plain", ((1, 1), (0, 8))) == []  # an empty box reads nothing


def test_string_slices_read_whole_and_by_box(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "strings")
    value = np.array([[b"a", b"bb"], [b"", b"dddd"], [b"e", b"f"]], dtype=object)
    w = BundleWriter(prefix, sync=False)
    w.add_sliced("s", DataType.DT_STRING, (3, 2),
                 [(_slice(((0, 1), (0, 2))), [b"a", b"bb"]),
                  (_slice(((1, 3), (0, 2))), [b"", b"dddd", b"e", b"f"])])
    w.finish()
    with BundleReader(prefix) as r:
        assert r.read_array("s").tolist() == value.tolist()
        out = np.empty((2, 1), dtype=object)
        read_box(r, "s", ((0, 2), (1, 2)), out)
        assert out.tolist() == [[b"bb"], [b"dddd"]]


def test_a_box_needs_only_the_slices_it_overlaps(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "lost")
    _write(prefix, GRID[:3], listed=GRID)  # the last slice listed, its entry never written
    with BundleReader(prefix) as r:
        out = np.empty((2, 8), dtype=np.float32)
        read_box(r, "t", ((0, 2), (0, 8)), out)
        assert np.array_equal(out, FULL[:2])
        for read in (lambda: r.read_array("t"),
                     lambda: read_box(r, "t", ((3, 4), (4, 6)), np.empty((1, 2), np.float32))):
            with pytest.raises(CorruptCheckpointError, match=r"missing: .*no entry") as info:
                read()
            assert "lost.index" in str(info.value) and "'t'" in str(info.value)


OVERLAP = [((0, 3), (0, 8)), ((2, 5), (0, 8))]  # 48 elements listed: row 2 twice, row 5 never


@pytest.mark.parametrize("stored,listed,fragment", [
    (OVERLAP, OVERLAP, "overlapping slices"),
    (GRID, GRID[:3], "slices cover 36 of 48 elements"),
    (GRID, GRID + [GRID[0]], "slices cover 54 of 48 elements"),  # a slice listed twice
    (GRID, GRID[:3] + [((2, 6), (5, 9))], "bad slice"),
])
def test_slices_that_overlap_leave_gaps_or_stick_out_are_rejected(
        tmp_path, stored: list[Box], listed: list[Box], fragment: str) -> None:
    prefix = os.path.join(tmp_path, "forged")
    _write(prefix, stored, listed=listed)
    with BundleReader(prefix) as r:
        for read in (lambda: r.read_array("t"),
                     lambda: read_box(r, "t", full_box(FULL.shape), np.empty_like(FULL))):
            with pytest.raises(CorruptCheckpointError, match=fragment) as info:
                read()
            assert "forged.index" in str(info.value) and "'t'" in str(info.value)


def test_a_gap_in_a_box_names_the_box(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "gap")
    _write(prefix, GRID[:3])
    with BundleReader(prefix) as r:
        with pytest.raises(CorruptCheckpointError, match=r"cover 4 of 6 elements of \[\(1, 4\)"):
            read_box(r, "t", ((1, 4), (4, 6)), np.empty((3, 2), np.float32))


def test_overlap_among_many_slices_is_found_with_the_mask(tmp_path) -> None:
    rows = [((i, i + 1), (0, 2)) for i in range(100)]
    value = np.arange(200, dtype=np.float32).reshape(100, 2)
    good, bad = os.path.join(tmp_path, "good"), os.path.join(tmp_path, "bad")
    _write(good, rows, value)
    _write(bad, rows[:97] + [((96, 98), (0, 2)), ((99, 100), (0, 2))], value)  # 96 twice, no 98
    with BundleReader(good) as r:
        assert np.array_equal(r.read_array("t"), value)
        out = np.empty((80, 1), np.float32)
        read_box(r, "t", ((10, 90), (1, 2)), out)
        assert np.array_equal(out, value[10:90, 1:])
    with BundleReader(bad) as r:
        for read in (lambda: r.read_array("t"),
                     lambda: read_box(r, "t", ((0, 100), (0, 2)), np.empty((100, 2), np.float32))):
            with pytest.raises(CorruptCheckpointError, match="overlapping slices"):
                read()


def test_slice_entries_sharing_a_payload_are_rejected(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "shared")
    w = BundleWriter(prefix, sync=False)
    w.add_sliced("t", DataType.DT_FLOAT, FULL.shape,
                 [(_slice(b), np.ascontiguousarray(FULL[relative(b, full_box(FULL.shape))]))
                  for b in GRID])
    first, second = (encode_slice_key(b"t", _slice(b)) for b in GRID[:2])
    a, b = w.entries[first], w.entries[second]
    w.entries[second] = BundleEntry(b.dtype, b.shape, 0, a.offset, b.size, b.crc32c)
    w.finish()
    with BundleReader(prefix) as r:
        for read in (lambda: r.read_array("t"),
                     lambda: read_box(r, "t", ((0, 2), (0, 8)), np.empty((2, 8), np.float32))):
            with pytest.raises(CorruptCheckpointError, match="share payload bytes"):
                read()


def test_a_box_outside_the_tensor_or_a_misshaped_output_is_a_caller_error(tmp_path) -> None:
    prefix = os.path.join(tmp_path, "grid")
    _write(prefix, GRID)
    with BundleReader(prefix) as r:
        with pytest.raises(ValueError, match="does not lie inside"):
            read_box(r, "t", ((0, 7), (0, 8)), np.empty((7, 8), np.float32))
        with pytest.raises(ValueError, match="output of shape"):
            read_box(r, "t", ((0, 2), (0, 8)), np.empty((8, 2), np.float32))
