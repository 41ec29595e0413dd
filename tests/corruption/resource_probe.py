"""Run reader operations on (hostile) checkpoints and report each one's peak memory and time.

Usage: ``python resource_probe.py OPERATION PREFIX OUT_JSON [OPERATION PREFIX OUT_JSON ...]``
(with ``tests/`` on ``PYTHONPATH``). Run by ``test_resource_bounds.py``: each operation
runs in a process of its own, forked from this one once it has imported everything
(``forked.py``), one at a time, so that the peak resident set is that operation's
alone. After the imports, the kernel's high-water mark is reset
(``/proc/self/clear_refs``, Linux); the JSON then holds how far the resident set
rose above where it stood (``grew_kib``), the seconds taken, and the error raised,
if any (its class name and message).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from typing import Callable

import torch

import torchckpt
from forked import import_ahead, run_forked
from torchckpt import cli
from torchckpt.format import BundleReader


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def open_index(prefix: str) -> None:
    BundleReader(prefix).close()


def read_all(prefix: str) -> None:
    with BundleReader(prefix) as r:
        for k in r.keys():
            r.read_array(k)


def restore(prefix: str) -> None:
    """Restore into a root that has none of the saved objects, then report the status."""
    status = torchckpt.Checkpoint(model=torch.nn.Linear(2, 2)).restore(prefix)
    status.report()
    with contextlib.suppress(torchckpt.errors.UnmatchedError):
        status.assert_consumed()


def graph_command(prefix: str) -> None:
    out = io.StringIO()
    if cli.cmd_graph(cli.build_parser().parse_args(["graph", prefix]), out) != 0:
        raise RuntimeError("torchckpt graph failed")


def verify_command(prefix: str) -> None:
    cli.verify_prefix(prefix, progress=False)


def inspect_command(prefix: str) -> None:
    cli.cmd_inspect(cli.build_parser().parse_args(["inspect", prefix]), io.StringIO())


def list_variables(prefix: str) -> None:
    torchckpt.list_variables(prefix)


OPERATIONS: dict[str, Callable[[str], None]] = {
    f.__name__: f for f in (open_index, read_all, restore, graph_command, verify_command,
                            inspect_command, list_variables)}


def main(operation: str, prefix: str, out_path: str) -> None:
    run = OPERATIONS[operation]
    exact = _reset_peak()
    before = _status_kib("VmRSS") if exact else _status_kib("VmHWM")
    start = time.monotonic()
    error = None
    try:
        run(prefix)
    except BaseException as exc:  # reported, not raised: the test judges it
        error = {"type": type(exc).__name__, "message": str(exc)[:2000],
                 "torchckpt": isinstance(exc, torchckpt.errors.TorchckptError)}
    seconds = time.monotonic() - start
    result = {"grew_kib": _status_kib("VmHWM") - before, "seconds": seconds, "error": error,
              "exact_peak": exact}
    with open(out_path, "w") as f:
        json.dump(result, f)


def main_many(args: list[str]) -> None:
    """Each (OPERATION, PREFIX, OUT_JSON) triple in a forked process, one after another."""
    import_ahead()
    cases = [(main, tuple(args[i:i + 3])) for i in range(0, len(args), 3)]
    codes = run_forked(cases, timeout=120)
    if any(codes):
        raise SystemExit(f"probes exited {codes}")


if __name__ == "__main__":
    main_many(sys.argv[1:])
