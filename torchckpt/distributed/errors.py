"""The error a sharded save raises on every rank when any rank fails.

Kept here rather than in ``torchckpt.errors`` while the package is new; it is a
:class:`~torchckpt.errors.TorchckptError` like every other error torchckpt raises.
"""

from __future__ import annotations

from ..errors import TorchckptError


class DistributedCheckpointError(TorchckptError):
    """A collective save failed, or the ranks disagree on what to save.

    Raised on *every* rank, so that no rank goes on as if the checkpoint existed.
    The rank that failed also chains its own cause (``__cause__``).

    Attributes:
        prefix: the checkpoint prefix being written.
        ranks: the ranks that reported the failure (empty when unknown).
    """

    def __init__(self, prefix: str, what: str, *, ranks: list[int] | None = None) -> None:
        self.prefix = prefix
        self.what = what
        self.ranks = list(ranks or [])
        on = f" (ranks {self.ranks})" if self.ranks else ""
        super().__init__(f"sharded save of '{prefix}' failed{on}: {what}")
