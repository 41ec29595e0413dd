"""The few collectives a sharded save needs, on tensors only (no pickle).

``torch.distributed``'s ``*_object`` collectives pickle their payload, so a
peer could make another rank run code; these helpers move only integers and
raw bytes. Each call is a collective: every rank of the group calls the same
helpers in the same order.

A save opens with :meth:`Comm.handshake`, which has its own deadline: a rank
that does not join the save within it (the ``if rank == 0: save()`` mistake)
makes the others raise instead of waiting for it. After the handshake, every
rank is in the save, and the timeouts are the process group's
(``init_process_group(timeout=...)`` or ``new_group(timeout=...)``): if a peer
dies, gloo raises on the survivors when the connection drops, and a peer that
hangs is given up on after the timeout.
"""

from __future__ import annotations

import datetime
import functools
import time
from dataclasses import dataclass
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


# Handshake messages: a point-to-point tag of their own, and a first word that says what
# they are ("tkcp"), so that a stray message is not taken for a peer's arrival.
HANDSHAKE_TAG = 0x746B6370
_HELLO = 0x746B6370
_ANSWER_GRACE_S = 2.0


@dataclass(frozen=True)
class HandshakeResult:
    """How the opening handshake of a save ended on this rank.

    Attributes:
        absent: group ranks known not to have joined in time (empty: all joined).
        detail: the backend's error, when there was one.
    """

    absent: list[int]
    detail: str = ""


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

    def handshake(self, timeout: float) -> HandshakeResult:
        """Wait, at most ``timeout`` seconds, until every rank of the group has called this.

        Rank 0 waits for a message from each other rank, then answers each one
        with the list of ranks that did not come; the others send and wait for
        that answer. Every wait has the deadline (``Work.wait(timeout)``), so a
        rank never waits longer for a rank that is not saving, whichever ranks
        called. Point-to-point messages with a tag of their own do not match a
        collective that a peer may be blocked in meanwhile. After a failed
        handshake the process group is unusable (a message may be left
        unmatched); the job is expected to end.
        """
        deadline = time.monotonic() + timeout
        if self.size == 1:
            return HandshakeResult([])
        if self.rank == 0:
            return self._gather_arrivals(deadline)
        try:
            self._wait(dist.isend(self._message([_HELLO]), dst=self.global_rank(0),
                                  group=self.group, tag=HANDSHAKE_TAG), deadline)
            reply = self._message([0] * (self.size + 1))
            # rank 0 decides: give its answer, sent right at the deadline, time to arrive
            self._wait(dist.irecv(reply, src=self.global_rank(0), group=self.group,
                                  tag=HANDSHAKE_TAG), deadline + _ANSWER_GRACE_S)
        except RuntimeError as exc:
            return HandshakeResult([0], str(exc))
        words = reply.cpu().tolist()
        if words[0] != _HELLO:
            return HandshakeResult([0], "rank 0 answered with an unexpected message")
        return HandshakeResult([r for r in range(self.size) if words[1 + r]])

    def _gather_arrivals(self, deadline: float) -> HandshakeResult:
        """Rank 0's side of :meth:`handshake`."""
        inbox = {r: self._message([0]) for r in range(1, self.size)}
        works = {r: dist.irecv(t, src=self.global_rank(r), group=self.group, tag=HANDSHAKE_TAG)
                 for r, t in inbox.items()}
        absent, detail = [], ""
        for r, work in works.items():
            try:
                self._wait(work, deadline)
            except RuntimeError as exc:
                absent.append(r)
                detail = detail or str(exc)
                continue
            if int(inbox[r].cpu()[0]) != _HELLO:
                absent.append(r)
        flags = [0] * self.size
        for r in absent:
            flags[r] = 1
        reply = self._message([_HELLO, *flags])
        for r in works:
            if r not in absent:  # those that came learn at once whether the save goes on
                try:
                    self._wait(dist.isend(reply, dst=self.global_rank(r), group=self.group,
                                          tag=HANDSHAKE_TAG), deadline + _ANSWER_GRACE_S)
                except RuntimeError as exc:
                    absent.append(r)
                    detail = detail or str(exc)
        return HandshakeResult(sorted(absent), detail)

    def _message(self, words: list[int]) -> torch.Tensor:
        return torch.tensor(words, dtype=torch.int64, device=self.device)

    @staticmethod
    def _wait(work: Any, deadline: float) -> None:
        left = max(deadline - time.monotonic(), 0.001)
        work.wait(timeout=datetime.timedelta(seconds=left))

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
