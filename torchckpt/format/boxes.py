"""Reading a box of a tensor, whether the bundle stores it whole or in slices.

A *box* is one ``(start, stop)`` pair per dimension of a logical tensor: the
elements ``start <= i < stop`` on every axis. A tensor ``K`` is stored either
as one plain entry, or (TF's partitioned variables, and torchckpt's sharded
saves) as a full entry that lists its slices plus one plain entry per slice
under ``encode_slice_key(K, slice)`` (:mod:`.slices`). A box read finds the
*pieces* (the plain entry, or the slice entries whose slices overlap the box)
and copies each overlap into the caller's array. Every read of a sliced
tensor goes through here: the whole value (:func:`reassemble`, what
``BundleReader.read_array`` returns for a sliced key, as TF's
``BundleReader::GetSliceValue`` assembles it) and one rank's part of it
(:func:`read_box`, for DTensors in ``torchckpt/transfer/boxes.py``).

Checks before any element is copied (code-style P4), naming the file and the key:

* every listed slice lies inside the tensor (``bad slice``);
* every slice that overlaps the box has its entry, a plain entry of the
  tensor's dtype and the slice's shape (a string slice has at least one
  payload byte per element);
* the overlapping slices hold exactly as many elements of the box as it has,
  and no two overlap (``tensor_slice_set.cc``), so they cover it exactly: a
  slice listed twice is an overlap and is looked up once, since each lookup
  builds a key as long as ``K``;
* no two slice entries share payload bytes: each holds exactly its elements,
  so with disjoint payloads a tensor is never larger than the bytes on disk
  (without this, 1,024 slice entries pointing at one 4 MiB payload would make
  a 4 GiB tensor).

:func:`reassemble` allocates the whole tensor from the entry's shape, so it
also checks every piece's payload against its data file first; a box read
fills memory its caller allocated, and each piece's payload is checked when
it is read. Overlap is checked pairwise for up to :data:`PAIRWISE_PIECES`
pieces, else with a mask of one byte per element of the box, so a forged
index cannot make the check quadratic.

Cost: a piece needed whole whose place in the output is contiguous is read
straight into it (``BundleReader.read_into``, checksum verified there); a
piece needed in part is viewed through the memory-mapped file and only that
part is copied. A piece's CRC32C covers all its bytes, so with checksums on,
a read of part of a piece still reads (but never allocates) the whole piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import CorruptCheckpointError, UnsupportedFormatError
from .dtypes import FIXED_WIDTH, DataType, dtype_name
from .records import ENDIAN_LITTLE, BundleEntry, TensorSlice
from .slices import encode_slice_key, slice_bounds

if TYPE_CHECKING:
    from .bundle_reader import BundleReader

Box = tuple[tuple[int, int], ...]

PAIRWISE_PIECES = 64  # above this many pieces, overlap is checked with a coverage mask


def full_box(shape: Sequence[int]) -> Box:
    """The box of every element of a tensor of ``shape``."""
    return tuple((0, int(d)) for d in shape)


def box_shape(box: Box) -> tuple[int, ...]:
    return tuple(b - a for a, b in box)


def box_numel(box: Box) -> int:
    n = 1
    for a, b in box:
        n *= b - a
    return n


def intersect(a: Box, b: Box) -> Box | None:
    """The common part of two boxes, or None when it holds no element."""
    out = tuple((max(x0, y0), min(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b))
    return None if any(lo >= hi for lo, hi in out) else out


def relative(inner: Box, outer: Box) -> tuple[slice, ...]:
    """The index of ``inner`` within an array that holds ``outer``."""
    return tuple(slice(a - o, b - o) for (a, b), (o, _) in zip(inner, outer))


@dataclass(frozen=True, slots=True)
class Piece:
    """One stored piece that holds elements of a box.

    Attributes:
        key: the plain entry that holds the piece's payload.
        entry: that entry, validated.
        bounds: where the piece lies in the logical tensor.
        part: the elements of the box it supplies (inside both ``bounds`` and the box).
    """

    key: bytes
    entry: BundleEntry
    bounds: Box
    part: Box


def _key(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def find_pieces(reader: BundleReader, key: str | bytes, box: Box, *,
                check_files: bool = False) -> list[Piece]:
    """The pieces of ``key`` that hold the elements of ``box``, checked as the module
    docstring says (an empty box needs none, but the slices listed are still checked
    to lie inside the tensor).

    Args:
        reader: the bundle.
        key: the logical tensor's key.
        box: inside the tensor's shape.
        check_files: also check, piece by piece, that each payload lies inside its
            data file (before the overlap mask, whose size the tensor's shape sets).

    Raises:
        CorruptCheckpointError: a slice out of bounds, missing or stored with another
            dtype or shape, slices that overlap or leave part of ``box`` uncovered,
            slice entries sharing payload bytes.
        KeyNotFoundError: no such key.
        ValueError: ``box`` does not lie inside the tensor.
    """
    k = _key(key)
    e = reader.entry(k)
    if len(box) != len(e.shape) or any(not 0 <= a <= b <= d for (a, b), d in zip(box, e.shape)):
        raise ValueError(f"box {list(box)} does not lie inside shape {list(e.shape)} of {k!r}")
    if not e.slices:
        return [Piece(k, e, full_box(e.shape), box)] if box_numel(box) else []
    seen: set[Box] = set()
    found: list[Piece] = []
    covered = 0
    repeated = False
    for tslice in e.slices:
        try:
            bounds = slice_bounds(tslice, e.shape)
        except ValueError as exc:
            raise CorruptCheckpointError(reader.index_path, f"bad slice: {exc}", key=k) from exc
        part = intersect(bounds, box)
        if part is None:
            continue
        covered += box_numel(part)
        if bounds in seen:
            repeated = True
            continue
        seen.add(bounds)
        found.append(_piece(reader, k, e, tslice, bounds, part, check_files))
    if covered != box_numel(box):
        where = "" if box == full_box(e.shape) else f" of {list(box)}"
        raise CorruptCheckpointError(reader.index_path, f"slices cover {covered} of "
                                     f"{box_numel(box)} elements{where}", key=k)
    if repeated:
        raise CorruptCheckpointError(reader.index_path, "overlapping slices", key=k)
    _check_backing(reader, k, found)
    _check_overlap(reader, k, found, box)
    return found


def _piece(reader: BundleReader, k: bytes, e: BundleEntry, tslice: TensorSlice, bounds: Box,
           part: Box, check_files: bool) -> Piece:
    """The checked slice entry of ``tslice``: present, plain, of ``e``'s dtype and the
    slice's shape (and, with ``check_files``, inside its data file)."""
    piece_key = encode_slice_key(k, tslice)
    if piece_key not in reader:
        raise CorruptCheckpointError(reader.index_path, f"slice {list(bounds)} is missing: the "
                                     "bundle has no entry for it", key=k)
    piece = reader.entry(piece_key)
    want = box_shape(bounds)
    if piece.slices or piece.dtype != e.dtype or piece.shape != want:
        sliced = " (itself sliced)" if piece.slices else ""
        raise CorruptCheckpointError(reader.index_path, f"slice entry of {list(bounds)} has "
                                     f"dtype/shape {dtype_name(piece.dtype)}{list(piece.shape)}"
                                     f"{sliced}, expected {dtype_name(e.dtype)}{list(want)}",
                                     key=k)
    if check_files:
        reader.payload_location(piece_key)
    if piece.dtype == DataType.DT_STRING and box_numel(bounds) > piece.size:
        raise CorruptCheckpointError(reader.index_path, f"{box_numel(bounds)} string elements "
                                     f"cannot fit in {piece.size} bytes", key=piece_key)
    return Piece(piece_key, piece, bounds, part)


def _check_backing(reader: BundleReader, k: bytes, pieces: list[Piece]) -> None:
    """No two slice entries may share payload bytes (see the module docstring)."""
    spans = sorted((p.entry.shard_id, p.entry.offset, p.entry.offset + p.entry.size)
                   for p in pieces if p.entry.size)
    for (shard, _, end), (next_shard, next_start, _) in zip(spans, spans[1:]):
        if shard == next_shard and next_start < end:
            raise CorruptCheckpointError(
                reader.index_path, f"slice entries share payload bytes (shard {shard}, offset "
                f"{next_start}): the tensor is larger than the bytes that back it", key=k)


def _check_overlap(reader: BundleReader, k: bytes, pieces: list[Piece], box: Box) -> None:
    """No two pieces may supply the same element of ``box``."""
    parts = [p.part for p in pieces]
    if len(parts) <= PAIRWISE_PIECES:
        for i, a in enumerate(parts):
            if any(intersect(a, b) is not None for b in parts[:i]):
                raise CorruptCheckpointError(reader.index_path, "overlapping slices", key=k)
        return
    mask = np.zeros(box_shape(box), dtype=bool)
    for part in parts:
        region = mask[relative(part, box)]
        if region.any():
            raise CorruptCheckpointError(reader.index_path, "overlapping slices", key=k)
        region[...] = True


def _copy(reader: BundleReader, piece: Piece, box: Box, out: np.ndarray) -> None:
    """Copy ``piece.part`` of the stored piece into ``out``, which holds ``box``."""
    dst = out[relative(piece.part, box)] if box else out  # out[()] of 0-d would be a scalar
    e = piece.entry
    plain = reader.header.endianness == ENDIAN_LITTLE and e.dtype in FIXED_WIDTH
    if plain and piece.part == piece.bounds and dst.flags.c_contiguous:
        reader.read_into(piece.key, dst)  # the whole piece lands in place; checksum checked there
        return
    if not plain:  # strings, big-endian files: decoded whole, then the part is copied
        dst[...] = reader.read_array(piece.key)[relative(piece.part, piece.bounds)]
        return
    raw = reader.read_raw(piece.key)  # a view of the mapped file: only the part is copied
    storage = FIXED_WIDTH[DataType(e.dtype)].storage
    dst[...] = np.frombuffer(raw, dtype=storage).reshape(e.shape)[
        relative(piece.part, piece.bounds)]


def read_box(reader: BundleReader, key: str | bytes, box: Box, out: np.ndarray) -> None:
    """Fill ``out`` (shaped like ``box``, in the format's storage dtype: see
    :mod:`.dtypes`) with the elements of ``key`` that lie in ``box``.

    Reads only the pieces that overlap ``box``; slices elsewhere in the tensor
    are neither looked up nor read.

    Raises:
        ChecksumMismatchError: a piece's payload does not match its CRC32C.
        CorruptCheckpointError: as :func:`find_pieces`, or a payload past the end of its file.
        KeyNotFoundError: no such key.
        UnsupportedFormatError: a dtype with no array form.
        ValueError: ``box`` is not inside the tensor, or ``out`` is not shaped like it.
    """
    if tuple(out.shape) != box_shape(box):
        raise ValueError(f"output of shape {list(out.shape)} for box {list(box)}")
    for piece in find_pieces(reader, key, box):
        _copy(reader, piece, box, out)


def reassemble(reader: BundleReader, key: str | bytes) -> np.ndarray:
    """The whole value of sliced tensor ``key`` as a new array (strings as ``bytes``
    objects), checked before it is allocated: every element is backed by its own
    payload bytes in the data files.

    Raises:
        ChecksumMismatchError: a slice's payload does not match its CRC32C.
        CorruptCheckpointError: as :func:`find_pieces`, or a payload past the end of its file.
        KeyNotFoundError: no such key.
        UnsupportedFormatError: a dtype with no array form, or a shape numpy cannot hold.
    """
    k = _key(key)
    e = reader.entry(k)
    reader.check_decodable(k, e)
    box = full_box(e.shape)
    pieces = find_pieces(reader, k, box, check_files=True)
    storage = (object if e.dtype == DataType.DT_STRING
               else FIXED_WIDTH[DataType(e.dtype)].storage)
    try:
        full = np.empty(e.shape, dtype=storage)
    except ValueError as exc:  # numpy holds at most 64 dimensions
        raise UnsupportedFormatError(reader.index_path, f"cannot hold shape {list(e.shape)}: "
                                     f"{exc}", key=k) from exc
    for piece in pieces:
        _copy(reader, piece, box, full)
    return full
