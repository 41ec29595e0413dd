"""Which saves are collective, and what a save from one rank alone may hold.

``CheckpointOptions(collective=...)`` decides, on each call:

* ``None`` (the default): collective when a process group of more than one
  rank is initialized; then every rank must call (``save.write``), and a rank
  that does not come within ``collective_timeout`` makes the callers raise
  :class:`~.errors.CollectiveTimeoutError`.
* ``True``: collective (the same, said explicitly; with no process group, or
  one rank, it is an ordinary save).
* ``False``: this rank saves alone, with no collective and no waiting, as
  ``torch.save`` on rank 0 would. The checkpoint is an ordinary one-shard
  bundle of the replicated state as this rank holds it. A DTensor that is
  replicated on every mesh dimension is saved from its local copy; one that is
  sharded (FSDP2, tensor parallelism) exists whole on no single rank, so it
  is refused, by name. Per-rank objects save this rank's values only.
"""

from __future__ import annotations

from typing import Any

from ..saving import SavePlan
from .comm import is_active
from .errors import DistributedCheckpointError
from .layout import describe_layout, is_dtensor

__all__ = ["one_rank_plan", "saves_collectively"]


def saves_collectively(collective: bool | None, group: Any = None) -> bool:
    """Whether a save with the option ``collective`` is a collective over ``group``."""
    if collective is False:
        return False
    return is_active(group)


def one_rank_plan(plan: SavePlan, prefix: str) -> SavePlan:
    """``plan`` with each replicated DTensor replaced by its local copy, for a save that
    this rank makes alone.

    Raises:
        DistributedCheckpointError: the plan holds sharded DTensors (listed by key).
    """
    if not any(is_dtensor(t) for _, t in plan.tensors):
        return plan
    sharded = [f"{key} ({describe_layout(t)})" for key, t in plan.tensors
               if is_dtensor(t) and not _replicated(t)]
    if sharded:
        shown = "\n  ".join(sharded[:10]) + (f"\n  ... and {len(sharded) - 10} more"
                                              if len(sharded) > 10 else "")
        raise DistributedCheckpointError(
            prefix, "a save from one rank (CheckpointOptions(collective=False)) holds only "
            "what that rank has whole, and these values are sharded across ranks (FSDP2 or "
            f"tensor parallelism):\n  {shown}\ncall save() on every rank instead (the "
            "default, collective=None)")
    tensors = [(key, _local(t) if is_dtensor(t) else t) for key, t in plan.tensors]
    return SavePlan(plan.graph, tensors, list(plan.strings))


def _replicated(dt: Any) -> bool:
    return all(p.is_replicate() for p in dt.placements)


def _local(dt: Any) -> Any:
    return dt.to_local()
