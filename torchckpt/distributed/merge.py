"""Merging the ranks' index entries into one index, as TF's ``MergeBundles`` does.

Mirrors ``tensorflow/core/util/tensor_bundle/tensor_bundle.cc`` (``MergeOneBundle``),
see ``docs/tf-checkpoint-format.md`` §5.5. Rank ``r`` wrote data file
``r`` of ``N`` itself, so its entries already carry ``shard_id = r`` and,
unlike TF, no data file is renamed here. A key seen from two ranks must be the
full entry of a sliced tensor on both, with equal dtype and shape: the second
rank's ``slices`` are appended to the first's (in rank order, so the result
is deterministic). Any other duplicate is an error.

After merging, every sliced tensor is checked the way TF's reader would on
the first read: each slice lies inside the tensor and has its slice entry,
slices do not overlap, and together they cover every element; a slice that
covers the whole tensor must not exist (TF stores that as a plain entry).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from ..format.records import BundleEntry
from ..format.slices import encode_slice_key, slice_bounds


class MergeError(ValueError):
    """The entries cannot form one bundle (names the key and what is wrong)."""


def merge_entries(parts: Sequence[dict[bytes, BundleEntry]]) -> dict[bytes, BundleEntry]:
    """One index from each rank's entries (``parts[r]`` from rank ``r``).

    Raises:
        MergeError: a duplicate key that is not a sliced full entry on both sides,
            a dtype/shape disagreement, or slices that do not tile their tensor.
    """
    merged: dict[bytes, BundleEntry] = {}
    for rank, entries in enumerate(parts):
        for key, entry in entries.items():
            if not entry.slices and entry.shard_id != rank:
                raise MergeError(f"rank {rank} sent {key!r} in shard {entry.shard_id}")
            seen = merged.get(key)
            if seen is None:
                merged[key] = entry
                continue
            if not (seen.slices and entry.slices):
                raise MergeError(f"{key!r} written twice (again by rank {rank})")
            if (seen.dtype, seen.shape) != (entry.dtype, entry.shape):
                raise MergeError(f"{key!r}: rank {rank} has dtype {entry.dtype} shape "
                                 f"{list(entry.shape)}, an earlier rank {seen.dtype} "
                                 f"{list(seen.shape)}")
            merged[key] = replace(seen, slices=seen.slices + entry.slices)
    for key, entry in merged.items():
        if entry.slices:
            check_tiling(key, entry, merged)
    return merged


def check_tiling(key: bytes, entry: BundleEntry, entries: dict[bytes, BundleEntry]) -> None:
    """Raise :class:`MergeError` unless ``entry``'s slices tile its tensor exactly."""
    if not entry.shape:
        raise MergeError(f"{key!r}: a scalar cannot be sliced")
    boxes = []
    for s in entry.slices:
        try:
            box = slice_bounds(s, entry.shape)
        except ValueError as exc:
            raise MergeError(f"{key!r}: {exc}") from exc
        part = entries.get(encode_slice_key(key, s))
        if part is None:
            raise MergeError(f"{key!r}: slice {box} has no slice entry")
        if part.slices or part.dtype != entry.dtype or part.shape != tuple(b - a for a, b in box):
            raise MergeError(f"{key!r}: the entry of slice {box} has dtype {part.dtype} shape "
                             f"{list(part.shape)}")
        boxes.append(box)
    total = 1
    for d in entry.shape:
        total *= d
    if len(boxes) == 1 and all(a == 0 and b == d for (a, b), d in zip(boxes[0], entry.shape)):
        raise MergeError(f"{key!r}: a single slice covers the whole tensor; TF wants a plain "
                         "entry")
    # Sorting by start lets the overlap scan stop early; pairs are compared only while
    # their first extents can still meet (slices along dim 0, the usual case, are linear).
    boxes.sort()
    covered = 0
    for i, a in enumerate(boxes):
        covered += _numel(a)
        for b in boxes[i + 1:]:
            if b[0][0] >= a[0][1]:
                break
            if all(max(x0, y0) < min(x1, y1) for (x0, x1), (y0, y1) in zip(a, b)):
                raise MergeError(f"{key!r}: slices {a} and {b} overlap")
    if covered != total:
        raise MergeError(f"{key!r}: slices cover {covered} of {total} elements")


def _numel(box: tuple[tuple[int, int], ...]) -> int:
    n = 1
    for a, b in box:
        n *= b - a
    return n
