"""Fixtures for the multi-process tests: one run of ``dist_phases.py`` and one of
``resume_phases.py`` per session.

The phases run in a subprocess (it forks process groups, which the pytest
process, possibly with TensorFlow's threads in it, must not do) and leaves
its results under a ``tmp_path_factory`` folder; the tests only read them.
Each phase has a time limit in its script, so a hang fails that phase fast.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from processes import run_isolated

HERE = Path(__file__).resolve().parent
PHASES = HERE / "dist_phases.py"
REPO = HERE.parent.parent
EXPECTED_EXIT = {
    "save4": [0, 0, 0, 0], "on2": [0, 0], "on4": [0, 0, 0, 0], "disagree": [0, 0],
    "write_error": [0, 0], "crash_first": [0, 0],
    "crash_writer": [0, -9], "crash_committer": [-9, 0], "crash_recover": [0, 0],
    "manager_saves": [0, 0], "manager_crash": [0, -9], "manager_recover": [0, 0],
    # resume_phases.py: a killed run's rank 0 dies at its next collective after rank 1
    "ddp_full": [0, 0], "ddp_killed": [1, -9], "ddp_resumed": [0, 0],
    "fsdp_full": [0, 0], "fsdp_killed": [1, -9], "fsdp_resumed": [0, 0],
    "one_rank_save": [0, 0], "rank0_only": [0, 0], "rank1_only": [0, 0],
}


@dataclass
class DistRun:
    workdir: Path
    phases: dict[str, Any]
    log: str

    def json(self, name: str) -> Any:
        return json.loads((self.workdir / name).read_text())

    def check(self, *phases: str) -> None:
        """Fail with the harness log unless ``phases`` ended as planned."""
        for name in phases:
            got = self.phases.get(name, {}).get("exit")
            if got != EXPECTED_EXIT[name]:
                pytest.fail(f"phase {name} exited {got}, expected {EXPECTED_EXIT[name]}; "
                            f"harness log:\n{self.log[-6000:]}", pytrace=False)


def _run_phases(script: Path, workdir: Path) -> DistRun:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = run_isolated([sys.executable, str(script), str(workdir)], env=env, timeout=300)
    log = proc.stdout + proc.stderr
    phases_file = workdir / "phases.json"
    if proc.returncode != 0 or not phases_file.exists():
        pytest.fail(f"{script.name} failed ({proc.returncode}):\n{log[-6000:]}", pytrace=False)
    return DistRun(workdir, json.loads(phases_file.read_text()), log)


@pytest.fixture(scope="session")
def dist_run(tmp_path_factory: pytest.TempPathFactory) -> DistRun:
    return _run_phases(PHASES, tmp_path_factory.mktemp("distributed"))


@pytest.fixture(scope="session")
def resume_run(tmp_path_factory: pytest.TempPathFactory) -> DistRun:
    return _run_phases(HERE / "resume_phases.py", tmp_path_factory.mktemp("resume"))
