"""Run a test's child process so that the suite can never hang on it.

The child runs in a session of its own; its output goes to a temporary file,
never to a pipe (a grandchild that outlives it, such as a DataLoader worker of
a SIGKILLed trainer, would hold a pipe open and a reader would wait for an EOF
that never comes). When the child ends, or its time is up, the whole process
group is killed.
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
            _kill_group(proc.pid)
            proc.wait()
            raise subprocess.TimeoutExpired(proc.args, timeout, output=_read(out),
                                            stderr=_read(err)) from None
        finally:
            _kill_group(proc.pid)  # grandchildren the child left behind
        return Finished(list(args), returncode, _read(out), _read(err))


def _read(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
