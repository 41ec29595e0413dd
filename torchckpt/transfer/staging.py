"""Tensors on a device (GPU) to and from the files, through two small pinned buffers.

Why: ``t.to("cpu")`` of a GPU tensor allocates pageable host memory as large
as the tensor (a third of the copy speed of pinned memory: 17 against 55 GB/s
on an H200) and then writes it; restoring through a CPU tensor does the same
in reverse. Here each tensor's bytes go through two reusable pinned buffers
of :data:`STAGING_BYTES`: while the file is written from (or read into) one,
the copy engine fills (or drains) the other, so the device link and the disk
work at the same time, and host memory stays at ``2 * STAGING_BYTES``
whatever the size of the state.

The same code runs for any device; without CUDA the buffers are ordinary
host memory and the copies synchronous (which is how the tests exercise it
on machines without a GPU).

Ownership: the buffers belong to a :class:`StagingBuffers` object (each
``Checkpoint`` has one, freed by ``Checkpoint.close()`` or with the checkpoint);
nothing is kept at module level. Thread-safety: one set is lent to one save or
restore at a time.
"""

from __future__ import annotations

import contextlib
import threading
from itertools import count
from typing import Any, Iterator

import torch

from ..adapters.tensors import tensor_to_buffer
from ..format import BundleReader

STAGING_BYTES = 16 << 20  # per buffer: large enough for full-speed copies, two fit in 64 MiB


def needs_staging(device: torch.device) -> bool:
    """Whether tensors on ``device`` live outside host memory (so their bytes must be
    copied through the buffers). Meta tensors hold no bytes at all."""
    return device.type not in ("cpu", "meta")


class StagingBuffers:
    """Two staging buffers of :data:`STAGING_BYTES` (uint8, pinned when CUDA is available),
    allocated on first use and kept until :meth:`close`: pinning memory costs more than
    using it, so an owner that saves or restores repeatedly (a ``Checkpoint``) keeps
    one set. Lent to one save or restore at a time (:meth:`lend` holds a lock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffers: list[torch.Tensor] = []

    @contextlib.contextmanager
    def lend(self) -> Iterator[list[torch.Tensor]]:
        with self._lock:
            if not self._buffers:
                pin = torch.cuda.is_available()
                self._buffers = [torch.empty(STAGING_BYTES, dtype=torch.uint8, pin_memory=pin)
                                 for _ in range(2)]
            yield self._buffers

    def close(self) -> None:
        """Free the buffers (idempotent); a later :meth:`lend` allocates new ones."""
        with self._lock:
            self._buffers = []


@contextlib.contextmanager
def staging_buffers(owner: StagingBuffers | None = None) -> Iterator[list[torch.Tensor]]:
    """Lend ``owner``'s buffers; without an owner, buffers for this call only, freed on exit."""
    if owner is not None:
        with owner.lend() as buffers:
            yield buffers
        return
    own = StagingBuffers()
    try:
        with own.lend() as buffers:
            yield buffers
    finally:
        own.close()


def _byte_view(t: torch.Tensor) -> torch.Tensor:
    """``t``'s elements as a flat uint8 tensor on its own device (a view when ``t`` is
    contiguous with no lazy conjugate/negative bit; otherwise one device-side copy)."""
    t = t.detach()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t.contiguous().reshape(-1).view(torch.uint8)


def _record(device: torch.device) -> Any:
    """An event marking the work queued so far on ``device``'s current stream, or None
    where copies are synchronous."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def _wait(event: Any) -> None:
    if event is not None:
        event.synchronize()


def device_chunks(t: torch.Tensor, buffers: list[torch.Tensor]) -> Iterator[memoryview]:
    """The bytes of the device tensor ``t``, piece by piece, each piece a view of one of
    ``buffers``: double-buffered, the next piece is being copied while the caller
    writes this one (the caller must be done with a piece when it asks for the next)."""
    flat = _byte_view(t)
    n, size = flat.numel(), buffers[0].numel()
    events: list[Any] = [None, None]

    def start(i: int) -> None:
        a = i * size
        b = min(a + size, n)
        buffers[i % 2][:b - a].copy_(flat[a:b], non_blocking=True)
        events[i % 2] = _record(flat.device)

    pieces = -(-n // size)
    if pieces:
        start(0)
    for i in range(pieces):
        if i + 1 < pieces:
            start(i + 1)  # into the buffer the caller has just finished with
        _wait(events[i % 2])
        yield tensor_to_buffer(buffers[i % 2][:min(size, n - i * size)])


def read_to_device(reader: BundleReader, key: str, dest: torch.Tensor,
                   buffers: list[torch.Tensor]) -> None:
    """Fill the contiguous device tensor ``dest`` with ``key``'s payload: file -> one
    buffer while the other is copied to the device (asynchronously). The checksum is
    verified as :meth:`BundleReader.read_chunks` does, after the last piece.

    REQUIRES: ``key`` is a plain fixed-width little-endian payload of ``dest``'s size.
    """
    flat = dest.detach().view(-1).view(torch.uint8)
    events: list[Any] = [None, None]
    pieces = reader.read_chunks(key, [tensor_to_buffer(b) for b in buffers])
    try:
        for i in count():
            _wait(events[i % 2])  # the device has finished reading the buffer about to be refilled
            piece = next(pieces, None)
            if piece is None:
                break
            pos, part = piece
            n = part.nbytes
            flat[pos:pos + n].copy_(buffers[i % 2][:n], non_blocking=True)
            events[i % 2] = _record(flat.device)
    finally:
        for event in events:  # never hand the buffers on while a copy still reads them
            _wait(event)
