"""``RestoreStatus``: what a restore matched, what is waiting, what was left over.

TensorFlow's ``CheckpointLoadStatus`` semantics (``python/checkpoint/checkpoint.py``):

* :meth:`RestoreStatus.assert_consumed` - every checkpoint value found its live
  object and was applied (nothing unused, nothing pending), and the check below.
* :meth:`RestoreStatus.assert_existing_objects_matched` - every live object that
  holds values has a counterpart in the checkpoint.
* :meth:`RestoreStatus.assert_nontrivial_match` - something besides the root matched.
* :meth:`RestoreStatus.expect_partial` - says partial restores are intended;
  torchckpt never warns at garbage collection, so it only returns the status.

Per-rank values (``torchckpt/distributed/per_rank.py``) saved by a world of
another size have no rank to go to: they are listed apart, as
``unplaced_per_rank``, and fail :meth:`RestoreStatus.assert_consumed` like any
value that was not restored. Other ranks' values of the same world are theirs,
not unused.

Failures raise :class:`~torchckpt.errors.UnmatchedError` listing readable paths.
The status is computed on demand from a :class:`MatchSource`, so it reflects
values that landed after ``restore()`` returned.

The status of ``restore(None)`` has no source; like TF's
``InitializationOnlyStatus`` every assertion on it fails (nothing was
restored), while ``expect_partial()`` is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..errors import UnmatchedError


@dataclass(frozen=True)
class MatchReport:
    """A restore's bookkeeping as data; every entry is a readable path.

    ``unplaced_per_rank``: per-rank values that no rank of this world restores,
    because the checkpoint was saved by a world of another size
    (``rng.rank_1_of_2``); they are not in ``unused_in_checkpoint``.
    """

    matched: list[str]
    unused_in_checkpoint: list[str]
    unmatched_live: list[str]
    pending: list[str]
    unplaced_per_rank: list[str] = field(default_factory=list)


class MatchSource(Protocol):
    def report(self) -> MatchReport: ...


class RestoreStatus:
    """Returned by ``Checkpoint.restore``/``read``; see the module docstring."""

    def __init__(self, source: MatchSource | None) -> None:
        self._source = source

    def report(self) -> MatchReport:
        """What matched, what is unused, unmatched or pending, now."""
        if self._source is None:
            return MatchReport([], [], [], [])
        return self._source.report()

    def _require_source(self) -> None:
        if self._source is None:
            raise UnmatchedError("no checkpoint was given (save_path=None); nothing was "
                                 "restored")

    def assert_consumed(self) -> "RestoreStatus":
        """Every checkpoint value was applied and every live object got a value.

        Raises:
            UnmatchedError: listing unused, unplaced per-rank, pending and unmatched
                live paths.
        """
        self._require_source()
        r = self.report()
        problems = []
        if r.unused_in_checkpoint:
            problems.append(_listing("checkpoint values not restored into any object",
                                     r.unused_in_checkpoint))
        if r.unplaced_per_rank:
            problems.append(_listing("per-rank values saved by a world of another size, "
                                     "restored into no rank", r.unplaced_per_rank))
        if r.pending:
            problems.append(_listing("values still waiting for their objects", r.pending))
        if r.unmatched_live:
            problems.append(_listing("live objects with no value in the checkpoint",
                                     r.unmatched_live))
        if problems:
            raise UnmatchedError("restore did not consume the checkpoint:\n" + "\n".join(problems),
                                 unused_in_checkpoint=r.unused_in_checkpoint,
                                 unmatched_live=r.unmatched_live, pending=r.pending)
        return self

    def assert_existing_objects_matched(self) -> "RestoreStatus":
        """Every live object that holds values (tensors, optimizer state, python
        state) got one from the checkpoint or is waiting for it; unused checkpoint
        values are allowed.

        Raises:
            UnmatchedError: listing the unmatched live paths.
        """
        self._require_source()
        r = self.report()
        if r.unmatched_live:
            raise UnmatchedError("some live objects were not matched:\n"
                                 + _listing("live objects with no value in the checkpoint",
                                            r.unmatched_live),
                                 unused_in_checkpoint=r.unused_in_checkpoint,
                                 unmatched_live=r.unmatched_live, pending=r.pending)
        return self

    def assert_nontrivial_match(self) -> "RestoreStatus":
        """Some value besides the root's landed. As in TF, ``save_counter`` counts: after
        ``restore()`` (which creates it) of a ``save()``-written file this passes even
        when nothing else matched.

        Raises:
            UnmatchedError: nothing matched.
        """
        self._require_source()
        r = self.report()
        if not r.matched:
            raise UnmatchedError("nothing in the checkpoint matched any object besides the root",
                                 unused_in_checkpoint=r.unused_in_checkpoint,
                                 unmatched_live=r.unmatched_live, pending=r.pending)
        return self

    def expect_partial(self) -> "RestoreStatus":
        """Say a partial restore is intended. torchckpt never warns at garbage
        collection, so there is nothing to silence: this returns the status."""
        return self

    def run_restore_ops(self, session: object = None) -> None:
        """TF compatibility: values are restored eagerly, so there is nothing to run."""

    def initialize_or_restore(self, session: object = None) -> None:
        """TF compatibility: nothing to do."""


def _listing(title: str, items: list[str], limit: int = 50) -> str:
    shown = "\n".join(f"    {x}" for x in items[:limit])
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"  {title} ({len(items)}):\n{shown}{more}"
