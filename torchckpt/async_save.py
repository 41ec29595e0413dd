"""Asynchronous saving: snapshot now, write on a background thread.

``save()`` with ``CheckpointOptions(enable_async=True)`` blocks only while it
copies every tensor into host buffers that belong to the saver (pinned memory
for CUDA tensors, so the device-to-host copies run at full speed and
asynchronously). Those buffers are kept and reused by the next save of the same
shapes, since touching fresh memory costs more than the copy itself. The write
and the state-file update then happen on one background thread, so training
continues while the bytes go to disk.

Invariants: at most one save in flight; the next ``save()``, ``write()`` or
``sync()`` waits for it and re-raises its error there; the state file names a
checkpoint only after its bundle is complete.

An error is never lost, at exit either. The writer thread is not a daemon, so
the interpreter waits for a save in flight before it exits. If that save
failed and nothing re-raised its error, an exit handler (registered on the
first asynchronous save, not at import) prints it to stderr, runs the other
exit handlers and ends the process with status 1: a job whose last checkpoint
was not written must not look successful. Call ``Checkpoint.sync()`` before
the end of the program to handle the error yourself.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
import weakref
from typing import Callable

import torch

from .saving import SavePlan

FAILED_AT_EXIT_STATUS = 1
# Savers whose last background save may have failed unseen (weak: a saver that is
# garbage-collected takes its error with it, as an unraised exception would).
_unseen: "weakref.WeakSet[AsyncSaver]" = weakref.WeakSet()
_exit_handler_registered = False


class AsyncSaver:
    """Owns the snapshot buffers and the one background writer thread."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffers: dict[str, torch.Tensor] = {}

    def release_buffers(self) -> None:
        """Free the snapshot buffers (REQUIRES: no save in flight: :meth:`wait` first)."""
        self._buffers = {}

    def wait(self) -> None:
        """Block until the save in flight is done; raise its error, if any."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        _unseen.discard(self)
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
        _watch_at_exit(self)
        self._thread.start()


def _watch_at_exit(saver: AsyncSaver) -> None:
    global _exit_handler_registered
    _unseen.add(saver)
    if not _exit_handler_registered:
        atexit.register(_report_unseen_failures)
        _exit_handler_registered = True


def _report_unseen_failures() -> None:
    """At exit: print a background save's unseen error and end with a failing status.

    Non-daemon writer threads have been joined by now (the interpreter does
    that before it runs exit handlers), so every save has finished.
    """
    failures = []
    for saver in list(_unseen):
        if saver._thread is not None:
            saver._thread.join()
        if saver._error is not None:
            failures.append(saver._error)
    _unseen.clear()
    if not failures:
        return
    for error in failures:
        print("torchckpt: an asynchronous checkpoint save failed in the background and the "
              "program ended before anything re-raised its error (Checkpoint.sync() does); "
              "the checkpoint was not written:", file=sys.stderr)
        traceback.print_exception(error, file=sys.stderr)
    # Other exit handlers still run (os._exit would skip them), then the failing status.
    atexit.unregister(_report_unseen_failures)
    run_remaining = getattr(atexit, "_run_exitfuncs", None)
    if run_remaining is not None:
        run_remaining()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(FAILED_AT_EXIT_STATUS)
