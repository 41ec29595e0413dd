"""Asynchronous saving: snapshot now, write on a background thread.

``save()`` with ``CheckpointOptions(enable_async=True)`` blocks only while it
copies every tensor into host buffers that belong to the saver (pinned memory
for CUDA tensors, so the device-to-host copies run at full speed and
asynchronously). Those buffers are kept and reused by the next save of the same
shapes, since touching fresh memory costs more than the copy itself. The write
and the state-file update then happen on one background thread, so training
continues while the bytes go to disk.

Invariants: at most one save in flight; the next ``save()``, ``write()`` or
``sync()`` waits for it and re-raises its error there (an error is never
lost); the state file names a checkpoint only after its bundle is complete.
"""

from __future__ import annotations

import threading
from typing import Callable

import torch

from .saving import SavePlan


class AsyncSaver:
    """Owns the snapshot buffers and the one background writer thread."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffers: dict[str, torch.Tensor] = {}

    def wait(self) -> None:
        """Block until the save in flight is done; raise its error, if any."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def snapshot(self, plan: SavePlan) -> SavePlan:
        """A plan whose tensors are private host copies, consistent at this instant."""
        copies = []
        on_device = False
        for key, tensor in plan.tensors:
            t = tensor.detach()
            buf = self._buffers.get(key)
            if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
                pin = t.device.type == "cuda" and torch.cuda.is_available()
                buf = self._buffers[key] = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
            buf.copy_(t, non_blocking=t.device.type == "cuda")
            on_device = on_device or t.device.type == "cuda"
            copies.append((key, buf))
        if on_device:
            torch.cuda.synchronize()
        stale = set(self._buffers) - {k for k, _ in plan.tensors}
        for key in stale:  # free buffers of tensors that no longer exist
            del self._buffers[key]
        return SavePlan(plan.graph, copies, list(plan.strings))

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the background thread (REQUIRES: :meth:`wait` was called)."""

        def run() -> None:
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - re-raised by wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="torchckpt-async-save", daemon=False)
        self._thread.start()
