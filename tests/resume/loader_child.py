"""Child process of test_loader.py: the DataLoader cases that start worker processes.

    python loader_child.py RESULTS_JSON CASE DIRECTORY [CASE DIRECTORY ...]

Each CASE (a key of ``test_loader.WORKER_CASES``) runs its check in a process
forked from this one (``forked.py``: torch is imported once), with DIRECTORY as
its temporary folder and its output in ``DIRECTORY/output.txt``. The forked
process leads a process group of its own, killed with every DataLoader worker in
it once the case has ended. RESULTS_JSON gets each case's exit status, in order:
0 when every assertion held, 1 with the traceback in the output when one failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from test_loader import WORKER_CASES

from forked import import_ahead, run_forked


def run_case(case: str, directory: str) -> None:
    fd = os.open(os.path.join(directory, "output.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    check, args = WORKER_CASES[case]
    check(Path(directory), *args)


def main() -> None:
    results, rest = sys.argv[1], sys.argv[2:]
    cases = [(run_case, (rest[i], rest[i + 1])) for i in range(0, len(rest), 2)]
    import_ahead()
    import torchdata.stateful_dataloader  # noqa: F401 - imported once, before the forks

    codes = run_forked(cases, timeout=120, at_once=2)
    with open(results, "w") as f:
        json.dump(codes, f)


if __name__ == "__main__":
    main()
