"""The errors of collective saves: one rank failed, or some rank never called.

Kept here rather than in ``torchckpt.errors`` while the package is new; it is a
:class:`~torchckpt.errors.TorchckptError` like every other error torchckpt raises.
"""

from __future__ import annotations

from ..errors import TorchckptError


class DistributedCheckpointError(TorchckptError):
    """A save under ``torch.distributed`` failed, or was refused.

    A collective save that failed on one rank, or whose ranks disagree on what
    to save, raises this on *every* rank, so that no rank goes on as if the
    checkpoint existed; the rank that failed also chains its own cause
    (``__cause__``). A save from one rank raises it for sharded values.

    Attributes:
        prefix: the checkpoint prefix being written.
        ranks: the ranks that reported the failure (empty when unknown).
    """

    def __init__(self, prefix: str, what: str, *, ranks: list[int] | None = None) -> None:
        self.prefix = prefix
        self.what = what
        self.ranks = list(ranks or [])
        on = f" (ranks {self.ranks})" if self.ranks else ""
        super().__init__(f"checkpoint '{prefix}' not saved{on}: {what}")


class CollectiveTimeoutError(DistributedCheckpointError):
    """A collective save was called on some ranks only: the others did not join in time.

    With a process group of more than one rank, ``save()``/``write()`` are
    collective by default (``CheckpointOptions(collective=None)``): every rank
    must call them. This is raised, within ``CheckpointOptions.collective_timeout``
    seconds, on each rank that called, instead of waiting forever.

    Attributes:
        prefix: the checkpoint prefix.
        ranks: the ranks that did not join (as far as this rank knows).
        world: the number of ranks in the group.
        timeout: the deadline, in seconds.
    """

    def __init__(self, prefix: str, *, ranks: list[int], world: int, timeout: float,
                 detail: str = "") -> None:
        self.world = world
        self.timeout = timeout
        who = f"rank(s) {list(ranks)}" if ranks else "some ranks"
        cause = _first_line(detail)
        super().__init__(
            prefix,
            f"save()/write() with a process group of {world} ranks is collective: every rank "
            f"must call it, and {who} did not within {timeout:g} s"
            f"{f' ({cause})' if cause else ''}. Call it on every rank (each writes its part, "
            "rank 0 commits), or pass torchckpt.CheckpointOptions(collective=False) on the one "
            "rank that saves, to write the replicated state from it alone; raise "
            "collective_timeout if a rank is only slow to arrive. The process group cannot be "
            "used after this error", ranks=ranks)


def _first_line(detail: str) -> str:
    """The backend's message without its source location (``[.../pair.cc:553] ...``)."""
    line = detail.strip().splitlines()[0] if detail.strip() else ""
    if line.startswith("[") and "] " in line:
        line = line[line.index("] ") + 2:]
    return line[:200]
