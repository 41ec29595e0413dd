"""Run many short cases, each in a process forked from one interpreter that imported torch once.

Starting an interpreter and importing torch costs seconds on two cores; a fork
costs milliseconds. A script that a test runs with ``processes.run_isolated``
imports what its cases need, then calls :func:`run_forked`: every case runs in
a child of its own, so a case that dies (SIGKILL, a crash) or hangs harms no
other, and each starts from the same just-imported state, never from another
case's objects. Each child leads a process group of its own, killed once the
child has ended: a SIGKILLed case's DataLoader workers must not outlive it (they
hold what it held, such as a CheckpointManager's directory lock, until they
notice). The groups stay in the script's session, so the test's kill of that
session (``processes.run_isolated``) ends them too.

The parent must do nothing but import before forking: no threads started, no
model built, no generator drawn from. :func:`import_ahead` imports what torchckpt
would otherwise import on first use, in every child again.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import traceback
from typing import Any, Callable, Sequence

TIMED_OUT = 124  # the exit code reported for a case still running at its deadline


def import_ahead() -> None:
    """Import torchckpt's public API and its distributed package (a save imports it)."""
    import torchckpt

    for name in torchckpt.__all__:
        getattr(torchckpt, name)
    importlib.import_module("torchckpt.distributed")


def run_forked(cases: Sequence[tuple[Callable[..., Any], tuple]], *, timeout: float,
               at_once: int = 1) -> list[int]:
    """Run ``fn(*args)`` for each case in a forked child, ``at_once`` at a time.

    Returns each case's exit code: 0 when ``fn`` returned, the code of a
    ``SystemExit`` it raised, 1 for another exception (its traceback goes to
    stderr), ``-N`` for a child killed by signal N, and :data:`TIMED_OUT` for one
    killed because it ran past ``timeout`` seconds.
    """
    codes: list[int | None] = [None] * len(cases)
    running: dict[int, tuple[int, float]] = {}  # pid -> (case index, deadline)
    todo = list(range(len(cases)))
    while todo or running:
        while todo and len(running) < at_once:
            index = todo.pop(0)
            running[_fork(*cases[index])] = (index, time.monotonic() + timeout)
        _reap(running, codes)
    return [c if c is not None else TIMED_OUT for c in codes]


def _fork(fn: Callable[..., Any], args: tuple) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        try:
            os.setpgid(pid, pid)  # as the child does: whichever runs first
        except OSError:  # the child is already in it, or has ended
            pass
        return pid
    code = 1
    try:
        os.setpgid(0, 0)
        fn(*args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported, then the exit code says it
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(running: dict[int, tuple[int, float]], codes: list[int | None]) -> None:
    time.sleep(0.005)
    for pid, (index, deadline) in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            codes[index] = os.waitstatus_to_exitcode(status)
        elif time.monotonic() > deadline:
            _kill_group(pid)
            os.waitpid(pid, 0)
            codes[index] = TIMED_OUT
        else:
            continue
        _kill_group(pid)  # what the case left behind
        del running[pid]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
