"""Restoring onto any world size: read one box of a logical tensor, and fill DTensors.

No collectives: each rank reads, for each DTensor it holds, only the stored
pieces that overlap its local chunk. A stored piece is a plain entry (the
whole tensor) or one slice of a sliced entry, whichever the checkpoint has: a
checkpoint saved by N ranks restores onto M ranks, onto another mesh, or onto
one process. A piece needed whole, whose place in the destination is
contiguous, is read straight into it (``BundleReader.read_into``: no
temporary, checksum verified on the destination); a piece needed in part is
viewed through the memory-mapped file and only that part is copied.

Checksums: a piece's CRC32C covers all of its bytes, so when the reader
verifies checksums (the default) a rank that needs part of a piece reads the
whole piece once, through the mapping, to check it; it still allocates and
copies only the part it needs. With ``verify_checksums=False`` only the pages
holding the needed elements are touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..adapters.tensors import array_to_tensor, tensor_to_buffer, tf_dtype_of, torch_dtype_of
from ..errors import CorruptCheckpointError
from ..format import BundleReader
from ..format.dtypes import FIXED_WIDTH, DataType
from ..format.records import ENDIAN_LITTLE, BundleEntry
from ..format.slices import encode_slice_key, slice_bounds
from .layout import (
    Box,
    box_numel,
    box_shape,
    full_box,
    intersect,
    is_dtensor,
    local_chunk,
    relative,
)


def read_box(reader: BundleReader, key: str | bytes, box: Box, out: np.ndarray) -> None:
    """Fill ``out`` (shaped like ``box``, in the format's storage dtype) with the
    elements of ``key`` that lie in ``box``.

    Raises:
        CorruptCheckpointError: a slice out of bounds or missing, overlapping
            slices, or slices that leave part of ``box`` uncovered.
        KeyNotFoundError: no such key.
    """
    k = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    entry = reader.entry(k)
    if box_numel(box) == 0:
        return
    if not entry.slices:
        _copy_piece(reader, k, entry, full_box(entry.shape), box, box, out)
        return
    done: list[Box] = []
    for s in entry.slices:
        try:
            bounds = slice_bounds(s, entry.shape)
        except ValueError as exc:
            raise CorruptCheckpointError(reader.index_path, f"bad slice: {exc}", key=k) from exc
        part = intersect(bounds, box)
        if part is None:
            continue
        if any(intersect(part, d) is not None for d in done):
            raise CorruptCheckpointError(reader.index_path, "overlapping slices", key=k)
        piece_key = encode_slice_key(k, s)
        if piece_key not in reader:
            raise CorruptCheckpointError(reader.index_path, f"slice {list(bounds)} has no "
                                         "entry", key=k)
        piece = reader.entry(piece_key)
        if piece.slices or piece.dtype != entry.dtype or piece.shape != box_shape(bounds):
            raise CorruptCheckpointError(reader.index_path, f"slice {list(bounds)} is stored "
                                         f"with dtype {piece.dtype} shape {list(piece.shape)}",
                                         key=k)
        _copy_piece(reader, piece_key, piece, bounds, part, box, out)
        done.append(part)
    covered = sum(box_numel(d) for d in done)
    if covered != box_numel(box):
        raise CorruptCheckpointError(reader.index_path, f"slices cover {covered} of the "
                                     f"{box_numel(box)} elements of {list(box)}", key=k)


def _copy_piece(reader: BundleReader, key: bytes, entry: BundleEntry, piece_box: Box,
                part: Box, box: Box, out: np.ndarray) -> None:
    """Copy ``part`` (inside both ``piece_box``, the stored piece, and ``box``, ``out``'s)."""
    dst = out[relative(part, box)]
    plain = reader.header.endianness == ENDIAN_LITTLE and entry.dtype in FIXED_WIDTH
    if plain and part == piece_box and dst.flags.c_contiguous:
        reader.read_into(key, dst)  # the whole piece lands in place; checksum checked there
        return
    if not plain:
        dst[...] = reader.read_array(key)[relative(part, piece_box)]
        return
    raw = reader.read_raw(key)  # a view of the mapped file: only ``part`` is copied
    storage = FIXED_WIDTH[DataType(entry.dtype)].storage
    dst[...] = np.frombuffer(raw, dtype=storage).reshape(entry.shape)[relative(part, piece_box)]


# Sub-byte integers are stored one per byte with junk allowed in the high bits, which
# array_to_tensor normalizes; they take the read_array path instead of raw byte copies.
_NEEDS_DECODING = frozenset({DataType.DT_INT4, DataType.DT_UINT4, DataType.DT_INT2,
                             DataType.DT_UINT2})


def _bitwise(dtype: int) -> bool:
    """Whether a stored element's bytes are the torch element's bytes."""
    return dtype in FIXED_WIDTH and dtype not in _NEEDS_DECODING


def _storage_view(t: torch.Tensor) -> np.ndarray:
    """A writable numpy view of contiguous CPU tensor ``t`` in the format's storage dtype."""
    storage = FIXED_WIDTH[tf_dtype_of(t.dtype)].storage
    return np.frombuffer(tensor_to_buffer(t), dtype=storage).reshape(tuple(t.shape))


def fill_local(reader: BundleReader, key: str | bytes, box: Box, local: torch.Tensor) -> None:
    """Read ``box`` of ``key`` into ``local`` (any device or layout; staged on the CPU
    only when ``local`` is not a plain contiguous CPU tensor)."""
    if box_numel(box) == 0:
        return
    direct = (local.device.type == "cpu" and local.is_contiguous() and not local.is_conj()
              and not local.is_neg())
    target = local if direct else torch.empty(tuple(local.shape), dtype=local.dtype)
    read_box(reader, key, box, _storage_view(target))
    if not direct:
        local.copy_(target)


def copy_into(reader: BundleReader, key: str | bytes, dest: Any) -> None:
    """Restore ``key`` into ``dest`` in place: a DTensor gets only this rank's chunk read;
    a plain tensor is filled piece by piece (a sliced entry needs no full-size temporary).

    ``dest``'s (global) shape and dtype must match the entry's (callers check).
    """
    dtype = reader.entry(key).dtype
    if not is_dtensor(dest):
        if _bitwise(dtype):
            fill_local(reader, key, full_box(dest.shape), dest)
        else:
            dest.copy_(array_to_tensor(reader.read_array(key), dtype))
        return
    chunk = local_chunk(dest) if _bitwise(dtype) else None
    local = dest.to_local()
    if chunk is not None:
        fill_local(reader, key, chunk.box, local)
    elif dest.device_mesh.get_coordinate() is not None:  # placements without a box
        local.copy_(_distributed_full(reader, key, dest).to_local())


def dtensor_like(reader: BundleReader, key: str | bytes, template: Any) -> Any:
    """A new DTensor with ``template``'s mesh, placements and global shape holding ``key``'s
    value (in the checkpoint's dtype); only this rank's chunk is read."""
    from torch.distributed.tensor import DTensor

    dtype = reader.entry(key).dtype
    chunk = local_chunk(template) if _bitwise(dtype) else None
    if chunk is None:
        return _distributed_full(reader, key, template)
    local = torch.empty(box_shape(chunk.box), dtype=torch_dtype_of(dtype),
                        device=template.to_local().device)
    fill_local(reader, key, chunk.box, local)
    return DTensor.from_local(local, template.device_mesh, template.placements,
                              run_check=False, shape=template.shape, stride=template.stride())


def _distributed_full(reader: BundleReader, key: str | bytes, template: Any) -> Any:
    """Fallback for placements that are not boxes (``_StridedShard``): read the whole
    tensor and keep this rank's part (``src_data_rank=None``: local split, no collective)."""
    from torch.distributed.tensor import distribute_tensor

    entry = reader.entry(key)
    full = array_to_tensor(reader.read_array(key), entry.dtype)
    full = full.to(template.to_local().device)
    return distribute_tensor(full, template.device_mesh, template.placements, src_data_rank=None)
