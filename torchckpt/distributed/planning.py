"""Who writes what: the per-value decisions of a sharded save.

Every rank runs :func:`plan_items` on its own :class:`~torchckpt.saving.SavePlan`
(the same objects on every rank give the same keys in the same order; the
ranks check that with :func:`plan_digest` before anything is written). Each
value becomes one :class:`Item` of one of four kinds:

* ``SLICE``: a DTensor whose placements are ``Shard``/``Replicate`` and whose
  dtype TF can reassemble. Each rank writes its own chunk, as a TF slice of the
  logical tensor, if it is the primary holder of that chunk (see
  :class:`~.layout.Chunk`). A chunk that covers the whole tensor is written as a
  plain entry (TF does not store a whole-tensor slice), an empty one not at all.
* ``GATHER``: any other DTensor (float16/uint16-64/float8, ``_StridedShard``,
  ``Partial``): every rank of its mesh calls ``full_tensor()`` in plan order and
  one of them writes it as a plain entry, so TensorFlow can read it.
* ``TENSOR``: a plain tensor, or a DTensor replicated on every mesh dimension,
  or an empty one. It is the same on every holder, so one holder writes it.
* ``STRING``: a JSON ``py_state`` value, also written once.

The single writer of each TENSOR/GATHER/STRING item is chosen by
:func:`assign_owners`: largest first, each to its least loaded holder (counting
the DTensor chunks that rank already writes), ties to the lowest rank. This
spreads a DDP model's replicated parameters over all ranks, so they are written
in parallel; the rule is deterministic, so the ranks agree without talking.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..adapters.tensors import tf_dtype_of
from ..format.boxes import box_numel
from ..format.dtypes import FIXED_WIDTH, DataType
from ..saving import SavePlan
from .layout import (
    Chunk,
    describe_layout,
    has_box,
    is_dtensor,
    local_chunk,
    mesh_ranks,
    tf_can_reassemble,
)


class Kind(enum.Enum):
    TENSOR = "tensor"
    SLICE = "slice"
    GATHER = "gather"
    STRING = "string"


@dataclass(frozen=True)
class Item:
    """One value of the save plan, as this rank sees it.

    Attributes:
        key: the checkpoint key.
        kind: see the module docstring.
        dtype: TF dtype (``DT_STRING`` for strings).
        shape: the logical (global) shape.
        nbytes: bytes of the whole value, the weight used to balance writers.
        holders: group ranks that hold the whole value (None: every rank).
        layout: mesh and placements as text ("" for plain values).
        value: the tensor (the DTensor itself for GATHER) or the JSON text.
        chunk: this rank's chunk (SLICE only; None if it holds none).
    """

    key: str
    kind: Kind
    dtype: int
    shape: tuple[int, ...]
    nbytes: int
    holders: tuple[int, ...] | None
    layout: str
    value: Any
    chunk: Chunk | None = None

    def describe(self) -> str:
        return f"{self.key}|{self.kind.value}|{self.dtype}|{list(self.shape)}|{self.layout}"


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def plan_items(plan: SavePlan, group_rank_of: Callable[[int], int]) -> list[Item]:
    """This rank's items for ``plan``, in plan order (tensors, then strings).

    Args:
        plan: this rank's save plan.
        group_rank_of: maps a global rank (as in a device mesh) to its rank in
            the process group doing the save.
    """
    items = [_tensor_item(key, t, group_rank_of) for key, t in plan.tensors]
    for key, text in plan.strings:
        items.append(Item(key, Kind.STRING, int(DataType.DT_STRING), (),
                          len(text.encode("utf-8")), None, "", text))
    return items


def _tensor_item(key: str, t: Any, group_rank_of: Callable[[int], int]) -> Item:
    """``t``: a tensor or a DTensor."""
    dtype = int(tf_dtype_of(t.dtype))
    shape = tuple(int(d) for d in t.shape)
    nbytes = _numel(shape) * FIXED_WIDTH[DataType(dtype)].itemsize
    if not is_dtensor(t):
        return Item(key, Kind.TENSOR, dtype, shape, nbytes, None, "", t)
    holders = tuple(sorted(group_rank_of(r) for r in mesh_ranks(t)))
    layout = describe_layout(t)
    if nbytes == 0:  # nothing to slice: an empty plain entry, written once
        return Item(key, Kind.TENSOR, dtype, shape, 0, holders, layout,
                    torch.empty(shape, dtype=t.dtype))
    if all(p.is_replicate() for p in t.placements):
        return Item(key, Kind.TENSOR, dtype, shape, nbytes, holders, layout, t.to_local())
    if not tf_can_reassemble(dtype) or not has_box(t.placements):
        return Item(key, Kind.GATHER, dtype, shape, nbytes, holders, layout, t)
    return Item(key, Kind.SLICE, dtype, shape, nbytes, holders, layout, t, local_chunk(t))


def writes_chunk(item: Item) -> bool:
    """Whether this rank writes its chunk of a SLICE item."""
    c = item.chunk
    return c is not None and c.primary and all(b > a for a, b in c.box)


def chunk_bytes(items: Sequence[Item]) -> int:
    """Bytes of the DTensor chunks this rank writes (its load before balancing)."""
    total = 0
    for item in items:
        if item.kind is Kind.SLICE and item.chunk is not None and writes_chunk(item):
            itemsize = item.nbytes // max(_numel(item.shape), 1)
            total += box_numel(item.chunk.box) * itemsize
    return total


def plan_digest(prefix: str, world: int, items: Sequence[Item], graph: bytes) -> bytes:
    """32 bytes that are equal on all ranks iff they are about to write the same checkpoint.

    Covers the prefix, world size, every key with its kind, dtype, shape, mesh
    and placements, and the object graph; not the values.
    """
    h = hashlib.sha256()
    h.update(f"{prefix}\0{world}\0".encode("utf-8"))
    for item in items:
        h.update(item.describe().encode("utf-8"))
        h.update(b"\0")
    h.update(graph)
    return h.digest()


def assign_owners(items: Sequence[Item], loads: Sequence[int]) -> list[int | None]:
    """The rank that writes each item (None for SLICE items: each holder writes its own chunk).

    Args:
        items: the items in plan order (the same on every rank).
        loads: bytes each rank already writes (its DTensor chunks), indexed by group rank.
    """
    load = list(loads)
    heap = [(b, r) for r, b in enumerate(load)]
    heapq.heapify(heap)
    owners: list[int | None] = [None] * len(items)
    order = sorted((i for i, it in enumerate(items) if it.kind is not Kind.SLICE),
                   key=lambda i: (-items[i].nbytes, i))
    for i in order:
        holders = items[i].holders
        if holders is None:
            while heap[0][0] != load[heap[0][1]]:  # skip entries made stale by a subset pick
                heapq.heappop(heap)
            _, owner = heap[0]
        else:
            owner = min(holders, key=lambda r: (load[r], r))
        load[owner] += items[i].nbytes
        heapq.heappush(heap, (load[owner], owner))
        owners[i] = owner
    return owners
