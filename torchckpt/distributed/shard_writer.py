"""Rank ``r`` writes data file ``r`` of ``N``: its own bytes, nothing else.

The file is written and fsynced under its temporary name, with the token all
ranks share for this save (``BundleWriter.finish_data``); the entries stay in
memory until rank 0 gathers them and commits every rank's file with the index
(``format/commit.py``). Until then, the file belongs to no checkpoint that any
reader can see.

GATHER items are collectives (``DTensor.full_tensor``), so every rank walks the
same list in the same order; a rank whose write fails keeps walking (without
writing) so that its peers do not wait on it, and raises at the end.
"""

from __future__ import annotations

from typing import Sequence

from ..adapters.tensors import tensor_to_buffer
from ..format import BundleWriter
from ..format.boxes import box_shape, full_box
from ..format.records import BundleEntry
from ..graph.keys import OBJECT_GRAPH_PROTO_KEY
from ..transfer.host import host_tensor
from .layout import tensor_slice
from .planning import Item, Kind, writes_chunk

GRAPH_WRITER = 0  # the rank that writes the object graph (its shard is read first on restore)


def write_shard(prefix: str, rank: int, world: int, items: Sequence[Item],
                owners: Sequence[int | None], graph: bytes, *,
                sync: bool = True, token: str | None = None) -> dict[bytes, BundleEntry]:
    """Write this rank's share of ``items`` to ``prefix.data-<rank>-of-<world>``.

    Args:
        prefix: checkpoint prefix.
        rank, world: this rank and the number of ranks (= data files).
        items: every item of the plan, in plan order.
        owners: the writer of each non-SLICE item (:func:`~.planning.assign_owners`).
        graph: the serialized object graph (written by rank 0).
        sync: fsync the file.
        token: the token of this save's temporary names, the same on every rank.

    Returns:
        The entries this rank wrote (``shard_id == rank``), keyed by checkpoint key.

    Raises:
        Whatever the write raised, after the collectives of every GATHER item ran.
    """
    writer = BundleWriter(prefix, num_shards=world, sync=sync, token=token)
    error: BaseException | None = None
    for item, owner in zip(items, owners):
        value = item.value
        if item.kind is Kind.GATHER:
            value = value.full_tensor()  # collective: every rank, in plan order
        mine = writes_chunk(item) if item.kind is Kind.SLICE else owner == rank
        if not mine or error is not None:
            continue
        try:
            _add(writer, item, value, rank)
        except Exception as exc:  # keep joining the remaining collectives, then raise
            error = exc
    try:
        if error is None and rank == GRAPH_WRITER:
            writer.add_strings(OBJECT_GRAPH_PROTO_KEY, [graph], (), shard=rank)
    except Exception as exc:
        error = exc
    if error is not None:
        writer.abort()
        raise error
    return writer.finish_data([rank])


def _add(writer: BundleWriter, item: Item, value: object, rank: int) -> None:
    if item.kind is Kind.STRING:
        writer.add_strings(item.key, [str(value).encode("utf-8")], (), shard=rank)
        return
    box = full_box(item.shape)
    if item.kind is Kind.SLICE and item.chunk is not None:
        box = item.chunk.box
        value = value.to_local()  # type: ignore[attr-defined]
    t = host_tensor(value)  # type: ignore[arg-type]
    if tuple(t.shape) != box_shape(box):
        raise ValueError(f"{item.key}: local tensor of shape {tuple(t.shape)}, expected "
                         f"{box_shape(box)}")
    if box == full_box(item.shape):  # also a chunk holding everything: TF wants a plain entry
        writer.add(item.key, tensor_to_buffer(t), item.dtype, item.shape, shard=rank)
    else:
        writer.add_sliced(item.key, item.dtype, item.shape,
                          [(tensor_slice(box), tensor_to_buffer(t))], shard=rank)
