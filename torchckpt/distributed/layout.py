"""Where a DTensor's local data lies in its logical tensor, as a box of TF slice extents.

A *box* is one ``(start, stop)`` pair per dimension of the logical tensor. A
rank's local chunk of a DTensor whose placements are all ``Shard(d)`` or
``Replicate()`` is a box: the mesh dimensions are applied left to right, each
``Shard`` splitting the current extent the way ``torch.chunk`` does (chunks of
``ceil(n / k)``, the last ones short or empty), which is what
``torch.distributed.tensor._utils.compute_local_shape_and_global_offset``
computes. :func:`local_chunk` checks the result against ``to_local().shape`` so
that a change in torch's rule fails loudly instead of misplacing data.
``_StridedShard`` (FSDP2 over tensor parallelism on one dimension) and
``Partial`` have no box; callers gather those instead.

A box becomes a TF ``TensorSliceProto`` with explicit extents on every axis,
as TF2's ``ShardedVariable`` writes them (``docs/tf-checkpoint-format.md`` §5).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..format.boxes import Box, box_shape
from ..format.dtypes import FIXED_WIDTH
from ..format.records import Extent, TensorSlice


def tf_can_reassemble(dtype: int) -> bool:
    """Whether TensorFlow can read a tensor of TF dtype ``dtype`` back from slices
    (``DTypeInfo.reassemblable``: not float16, uint16-64, float8, strings, ...)."""
    info = FIXED_WIDTH.get(dtype)  # type: ignore[call-overload]
    return info is not None and info.reassemblable


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (without importing DTensor:
    if nothing imported it, nothing can be one)."""
    module = sys.modules.get("torch.distributed.tensor")
    cls = getattr(module, "DTensor", None) if module is not None else None
    return cls is not None and isinstance(t, cls)


def tensor_slice(box: Box) -> TensorSlice:
    """The TF slice of ``box``, explicit ``(start, length)`` on every axis."""
    return TensorSlice(tuple(Extent(a, b - a) for a, b in box))


def _is_shard(p: Any) -> bool:
    from torch.distributed.tensor import Shard

    return type(p) is Shard  # not _StridedShard, whose chunk is not a box


def has_box(placements: Sequence[Any]) -> bool:
    """Whether every placement is ``Replicate()`` or a plain ``Shard(d)``."""
    return all(p.is_replicate() or _is_shard(p) for p in placements)


def chunk_box(shape: Sequence[int], mesh_shape: Sequence[int], coordinate: Sequence[int],
              placements: Sequence[Any]) -> Box | None:
    """The box held at mesh ``coordinate``, or None for placements that have no box."""
    lo = [0] * len(shape)
    size = [int(d) for d in shape]
    for mesh_dim, p in enumerate(placements):
        if p.is_replicate():
            continue
        if not _is_shard(p):
            return None
        d = p.dim % len(shape)
        parts, index = int(mesh_shape[mesh_dim]), int(coordinate[mesh_dim])
        chunk = -(-size[d] // parts)  # ceil, as torch.chunk
        start = min(chunk * index, size[d])
        size[d] = max(0, min(size[d], start + chunk) - start)
        lo[d] += start
    return tuple((a, a + n) for a, n in zip(lo, size))


@dataclass(frozen=True)
class Chunk:
    """This rank's part of a DTensor.

    Attributes:
        box: where the local tensor lies in the logical tensor.
        primary: whether this rank is the first of the ranks holding the same box
            (coordinate 0 on every ``Replicate`` mesh dimension): the one that writes it.
    """

    box: Box
    primary: bool


def local_chunk(dt: Any) -> Chunk | None:
    """This rank's chunk of DTensor ``dt``; None if the rank is outside its mesh or its
    placements have no box.

    Raises:
        RuntimeError: torch laid the local tensor out differently from the rule above.
    """
    mesh = dt.device_mesh
    coordinate = mesh.get_coordinate()
    if coordinate is None:
        return None
    box = chunk_box(tuple(dt.shape), tuple(mesh.shape), coordinate, dt.placements)
    if box is None:
        return None
    local_shape = tuple(dt.to_local().shape)
    if box_shape(box) != local_shape:
        raise RuntimeError(f"DTensor of shape {tuple(dt.shape)} with placements {dt.placements} "
                           f"holds a local tensor of shape {local_shape} at mesh coordinate "
                           f"{coordinate}; torchckpt expected {box_shape(box)}")
    primary = all(c == 0 for c, p in zip(coordinate, dt.placements) if p.is_replicate())
    return Chunk(box, primary)


def mesh_ranks(dt: Any) -> list[int]:
    """Global ranks of ``dt``'s device mesh, in mesh order."""
    return [int(r) for r in dt.device_mesh.mesh.flatten().tolist()]


def describe_layout(dt: Any) -> str:
    """Mesh and placements as text, for the cross-rank consistency check."""
    mesh: torch.Tensor = dt.device_mesh.mesh
    return f"mesh{list(mesh.shape)}{mesh.flatten().tolist()}:{list(map(str, dt.placements))}"
