"""Run a test's child process so that the suite can never hang on it.

The child runs in a session of its own; its output goes to a temporary file,
never to a pipe (a grandchild that outlives it, such as a DataLoader worker of
a SIGKILLed trainer, would hold a pipe open and a reader would wait for an EOF
that never comes). When the child ends, or its time is up, every process of its
session is killed, and every descendant that started a session of its own
(torchrun starts each worker so) while its parent still lives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Sequence


@dataclass
class Finished:
    """What ``subprocess.run(..., capture_output=True, text=True)`` would have returned."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_isolated(args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> Finished:
    """Run ``args`` to completion (or ``timeout``) in its own session; kill its group after.

    Raises:
        subprocess.TimeoutExpired: the child ran past ``timeout`` (its group is killed).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, cwd=cwd, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            proc.wait()
            raise subprocess.TimeoutExpired(proc.args, timeout, output=_read(out),
                                            stderr=_read(err)) from None
        finally:
            _kill_tree(proc.pid)  # grandchildren the child left behind
        return Finished(list(args), returncode, _read(out), _read(err))


def _read(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def _kill_tree(sid: int) -> None:
    """SIGKILL the session ``sid`` and the descendants of its members. Each process found
    is stopped first, so that none forks or reparents while the rest are looked up."""
    found: set[int] = set()
    while True:
        table = _process_table()
        new = {pid for pid, (_, session) in table.items() if session == sid}
        grown = True
        while grown:
            parents = new | found
            more = {pid for pid, (ppid, _) in table.items() if ppid in parents} - parents
            new |= more
            grown = bool(more)
        new -= found
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        found |= new
    for pid in found:
        _signal(pid, signal.SIGKILL)


def _process_table() -> dict[int, tuple[int, int]]:
    """``{pid: (parent pid, session id)}`` of every process, from ``/proc``."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        table[int(name)] = (int(fields[1]), int(fields[3]))
    return table


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
