"""Tensors filled from box reads: DTensor chunks, and plain tensors from sliced entries.

The bytes come from :func:`torchckpt.format.boxes.read_box`, which reads the
elements of one box of a logical tensor whether the bundle stores it whole or
in slices. Here that box is chosen and given a tensor to land in:

* a DTensor destination gets only this rank's local chunk (its box from the
  mesh and placements, ``distributed/layout.py``); no collectives, so a
  checkpoint saved by N ranks restores onto M ranks, another mesh, or one
  process;
* a plain destination of a sliced entry is filled piece by piece, with no
  full-size temporary.

A plain contiguous CPU destination is the output array itself; any other
(a GPU tensor, a strided view) is filled through a CPU tensor of its local
shape. Values whose stored bytes are not the torch element's bytes (sub-byte
integers, strings) and placements without a box (``_StridedShard``) are read
whole and converted instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..adapters.tensors import array_to_tensor, tensor_to_buffer, tf_dtype_of, torch_dtype_of
from ..distributed.layout import is_dtensor, local_chunk
from ..format import BundleReader
from ..format.boxes import Box, box_numel, box_shape, full_box, read_box
from ..format.dtypes import FIXED_WIDTH, DataType

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
    only when ``local`` is not a plain contiguous CPU tensor).

    REQUIRES: ``local`` has ``box``'s shape and the entry's dtype, stored bitwise.
    """
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

    REQUIRES: ``dest``'s (global) shape and dtype match the entry's (callers check).
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
