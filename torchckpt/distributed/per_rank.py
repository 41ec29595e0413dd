"""Per-rank state: values that differ from rank to rank, saved once for each rank.

Most of a data-parallel checkpoint is replicated (DDP parameters, optimizer
state) or sharded (FSDP2 DTensors). Some state is neither: each rank has its
own RNG stream (dropout, augmentation) and its own position in its part of the
data. Such an object is *per-rank*:

* ``torchckpt.RNGState`` and ``torchckpt.data.ResumableLoader`` are per-rank;
* any other trackable object is, once wrapped: ``ckpt.meter = PerRank(meter)``.

With a process group of more than one rank initialized (``W`` ranks, this
process rank ``r``, both of the default group), a per-rank object is a node
whose one child, ``rank_<r>_of_<W>``, holds the object's values::

    rng/rank_1_of_2/.ATTRIBUTES/py_state
    rng/rank_1_of_2/.ATTRIBUTES/tensor_0
    data/rank_1_of_2/.ATTRIBUTES/py_state

A collective save merges the ranks' children under the one node (rank 0
holds ``rank_0_of_2``, rank 1 ``rank_1_of_2``, ...), so the checkpoint has one
child per rank, each written by its rank. TensorFlow reads these keys like
any other. Without a process group (or with one rank) the object is saved as
if it were not per-rank, with its values on its own node.

Restoring places ``rank_<r>_of_<W>`` into rank ``r`` of a world of the same
size ``W``; the other ranks' children belong to the other ranks. On another
world size nothing per-rank is placed (a rank's RNG stream or data position
means nothing in a world of another size): the values are reported by
``RestoreStatus`` as ``unplaced_per_rank`` and the live objects as unmatched,
so nothing is dropped silently.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Callable

import torch.distributed as dist

from ..adapters import default_registry
from ..adapters.registry import Adapter, AdapterFactory, Handle, ValueSource
from ..adapters.values import ValueSlot

__all__ = ["PerRank", "PerRankAdapter", "Placement", "per_rank_adapter", "rank_name",
           "parse_rank_name", "process_rank"]

_RANK_NAME = re.compile(r"rank_(\d+)_of_(\d+)")


def rank_name(rank: int, world: int) -> str:
    """The local name of rank ``rank``'s child in a world of ``world`` ranks."""
    return f"rank_{rank}_of_{world}"


def parse_rank_name(name: str) -> tuple[int, int] | None:
    """``(rank, world)`` of a per-rank child's name, or None for any other name."""
    m = _RANK_NAME.fullmatch(name)
    if m is None:
        return None
    rank, world = int(m.group(1)), int(m.group(2))
    return (rank, world) if 0 <= rank < world else None


def process_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process in the default process group; ``(0, 1)``
    when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Placement(enum.Enum):
    """Where a saved child of a per-rank node goes on this rank."""

    MINE = "mine"            # this rank's values: restored here
    OTHER_RANK = "other"     # another rank of this world restores them
    UNPLACED = "unplaced"    # saved by a world of another size: no rank takes them


class PerRank:
    """Declares ``obj``'s state per-rank: saved once for each rank, restored into the same rank.

    Use it for state that differs between the ranks of a data-parallel job and
    that the job needs back on resume: a per-rank metric accumulator, a
    per-rank generator, a rank's own sampler. ``obj`` is anything a
    ``Checkpoint`` tracks (an object with ``state_dict``/``load_state_dict``, a
    ``torch.Generator``, a tensor, a module, a dict). ``RNGState`` and
    ``ResumableLoader`` need no wrapper: they are per-rank already.

    Example:
        >>> import torch, torchckpt
        >>> g = torch.Generator().manual_seed(7)
        >>> ckpt = torchckpt.Checkpoint(sampler_rng=torchckpt.PerRank(g))

    Args:
        obj: the object whose values are per-rank.
    """

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __repr__(self) -> str:
        return f"PerRank({self.obj!r})"


class RankSlot(ValueSlot):
    """This rank's child of a per-rank object that is itself the node (``RNGState``).

    The child is a view of ``owner``: its adapter is ``plain(owner)``. It is a
    :class:`ValueSlot` because, like a number's place, the view is made anew at
    each walk and is identified by where it is, ``(owner, name)``, not by ``id``.
    """

    def __init__(self, owner: Any, name: str, plain: AdapterFactory) -> None:
        super().__init__(owner, name)
        self.plain = plain


class PerRankAdapter(Adapter):
    """The node of a per-rank object: one child per rank, or the object's own values alone.

    Args:
        obj: the live per-rank object (a :class:`PerRank`, an ``RNGState``, ...).
        child_of: the live object that holds this rank's values, given ``obj``.
        plain: the adapter ``obj`` has where per-rank saving does not apply
            (no process group, or one rank).
    """

    def __init__(self, obj: Any, child_of: Callable[[Any, str], Any],
                 plain: Callable[[Any], Adapter]) -> None:
        super().__init__(obj)
        self.rank, self.world = process_rank()
        self._name = rank_name(self.rank, self.world)
        self._child_of = child_of
        self._plain = plain(obj) if self.world == 1 else None
        self.holds_values = self._plain.holds_values if self._plain is not None else False
        self.is_variable = self._plain.is_variable if self._plain is not None else False

    @property
    def per_rank(self) -> bool:
        """Whether the values are saved per rank here (a world of more than one rank)."""
        return self._plain is None

    def placement(self, local_name: str) -> Placement | None:
        """Where a saved child called ``local_name`` goes on this rank; None for an ordinary
        child of the object, in a world of one. With several ranks, a child that is not a
        rank's was saved by one process (the object's own layout there): unplaced."""
        parsed = parse_rank_name(local_name)
        if parsed is None:
            return Placement.UNPLACED if self.per_rank else None
        if self.per_rank and parsed == (self.rank, self.world):
            return Placement.MINE
        if self.per_rank and parsed[1] == self.world:
            return Placement.OTHER_RANK
        return Placement.UNPLACED

    def children(self) -> list[tuple[str, Any]]:
        if self._plain is not None:
            return self._plain.children()
        return [(self._name, self._child_of(self.obj, self._name))]

    def child(self, name: str) -> Any | None:
        if self._plain is not None:
            return self._plain.child(name)
        return self._child_of(self.obj, self._name) if name == self._name else None

    def child_ready(self, name: str, obj: Any) -> bool:
        return self._plain.child_ready(name, obj) if self._plain is not None else True

    def values(self) -> dict[str, Any]:
        return self._plain.values() if self._plain is not None else {}

    def restore(self, values: dict[str, ValueSource]) -> None:
        """Restore the object's own values (a world of one). With several ranks the node
        holds no values of its own, and the restore session reports any it finds as
        unplaced instead of calling this."""
        if self._plain is not None:
            self._plain.restore(values)

    def watch(self, name: str, callback: Callable[[Any], None]) -> Handle | None:
        return self._plain.watch(name, callback) if self._plain is not None else None

    def slot_variables(self) -> list[tuple[Any, str, Any]]:
        return self._plain.slot_variables() if self._plain is not None else []

    def restore_slot(self, variable: Any, slot_name: str, value: ValueSource,
                     done: Callable[[], None]) -> None:
        if self._plain is None:
            super().restore_slot(variable, slot_name, value, done)
        else:
            self._plain.restore_slot(variable, slot_name, value, done)


def per_rank_adapter(plain: AdapterFactory) -> AdapterFactory:
    """An adapter factory that makes a class per-rank: register it for the class.

    ``plain`` is the adapter the class has otherwise (``StatefulAdapter`` for an
    object with ``state_dict``/``load_state_dict``); each rank's child is a
    :class:`RankSlot` adapted by it.
    """
    def factory(obj: Any) -> Adapter:
        return PerRankAdapter(obj, lambda owner, name: RankSlot(owner, name, plain), plain)
    return factory


def _wrapped(wrapper: PerRank, name: str) -> Any:
    return wrapper.obj


default_registry.register(RankSlot, lambda slot: slot.plain(slot.container))
default_registry.register(
    PerRank, lambda w: PerRankAdapter(w, _wrapped, lambda w2: default_registry.adapter(w2.obj)))
