"""The few collectives a sharded save needs, on tensors only (no pickle).

``torch.distributed``'s ``*_object`` collectives pickle their payload, so a
peer could make another rank run code; these helpers move only integers and
raw bytes. Each call is a collective: every rank of the group calls the same
helpers in the same order.

Timeouts are the process group's (``init_process_group(timeout=...)`` or
``new_group(timeout=...)``): if a peer dies, gloo raises on the survivors when
the connection drops, and a peer that hangs is given up on after the timeout.
Use a dedicated gloo group with a short timeout for checkpointing if the
default group's is long.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

_F = TypeVar("_F", bound=Callable[..., Any])


class CollectiveError(RuntimeError):
    """A collective failed: a peer died, hung past the timeout, or the group is broken."""


def _collective(fn: _F) -> _F:
    """Turn the backend's error (gloo/NCCL raise ``RuntimeError``) into :class:`CollectiveError`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:
            raise CollectiveError(f"{fn.__name__}: {exc}") from exc
    return wrapper  # type: ignore[return-value]


class Comm:
    """A process group seen as ``rank`` of ``size`` with a device for its tensors.

    Args:
        group: the process group (None: the default group).
    """

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        backend = str(dist.get_backend(group)).lower()
        # NCCL moves only CUDA tensors; a group that also has gloo ("cpu:gloo,cuda:nccl") takes CPU.
        if "nccl" in backend and "gloo" not in backend:
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")

    def global_rank(self, group_rank: int) -> int:
        return group_rank if self.group is None else dist.get_global_rank(self.group, group_rank)

    def group_rank(self, global_rank: int) -> int:
        """The group rank of a global rank.

        Raises:
            ValueError: the rank is not in this group.
        """
        if self.group is None:
            return global_rank
        r = dist.get_group_rank(self.group, global_rank)
        if r is None or r < 0:
            raise ValueError(f"global rank {global_rank} is not in the checkpointing group")
        return r

    @_collective
    def all_gather_ints(self, values: list[int]) -> list[list[int]]:
        """Every rank's ``values`` (all ranks pass the same count), indexed by rank."""
        mine = torch.tensor(values, dtype=torch.int64, device=self.device)
        out = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(out, mine, group=self.group)
        return [[int(v) for v in t.tolist()] for t in out]

    @_collective
    def gather_bytes(self, payload: bytes, sizes: list[int], dst: int = 0) -> list[bytes]:
        """Each rank's ``payload`` on rank ``dst`` (an empty list elsewhere).

        ``sizes`` are all ranks' payload lengths (from :meth:`all_gather_ints`):
        payloads are padded to the longest, as collectives move equal-sized tensors.
        """
        longest = max(sizes)
        if longest == 0:
            return [b""] * self.size if self.rank == dst else []
        buf = torch.zeros(longest, dtype=torch.uint8)
        if payload:
            buf[:len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        buf = buf.to(self.device)
        bins = ([torch.empty(longest, dtype=torch.uint8, device=self.device)
                 for _ in range(self.size)] if self.rank == dst else None)
        dist.gather(buf, bins, dst=self.global_rank(dst), group=self.group)
        if bins is None:
            return []
        return [bytes(t[:n].cpu().numpy().tobytes()) for t, n in zip(bins, sizes)]

    @_collective
    def broadcast_int(self, value: int, src: int = 0) -> int:
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=self.global_rank(src), group=self.group)
        return int(t.item())


def is_active(group: Any = None) -> bool:
    """Whether saves should be sharded: a process group with more than one rank exists."""
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size(group) > 1)
