"""``examples/ddp_resume.py`` under ``torchrun --nproc-per-node 2``: a run whose rank 1 is
SIGKILLed after step 10, then the same command resuming from the checkpoint of step 8.

The steps both runs make (9 and 10) must have, on each rank, the same losses bit
for bit; the export rank 0 alone wrote at the end must restore.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

import torchckpt
from processes import run_isolated

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ddp_resume.py"

pytestmark = pytest.mark.slow


def _torchrun(directory: Path, *extra: str):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return run_isolated([sys.executable, "-m", "torch.distributed.run", "--standalone",
                         "--nproc-per-node", "2", str(EXAMPLE), "--dir", str(directory), *extra],
                        env=env, cwd=str(REPO), timeout=180)


def _losses(directory: Path, rank: int) -> dict[int, dict[int, str]]:
    """``{start step of the run: {step: loss}}``."""
    runs: dict[int, dict[int, str]] = {}
    for line in (directory / f"losses-rank{rank}.txt").read_text().splitlines():
        start, step, loss = line.split()
        runs.setdefault(int(start), {})[int(step)] = loss
    return runs


def test_ddp_example_resumes_a_killed_run(tmp_path: Path) -> None:
    first = _torchrun(tmp_path, "--fail-at-step", "10")
    assert first.returncode != 0, first.output[-3000:]  # rank 1 was killed
    second = _torchrun(tmp_path)
    assert second.returncode == 0, second.output[-3000:]
    for rank in range(2):
        assert f"[rank {rank}] resumed from {tmp_path / 'ckpt-2'} at step 8" in second.stdout
    per_rank = []
    for rank in range(2):
        runs = _losses(tmp_path, rank)
        assert sorted(runs) == [0, 8]
        assert sorted(runs[0]) == list(range(1, 11)) and sorted(runs[8]) == [9, 10, 11, 12]
        assert runs[8][9] == runs[0][9] and runs[8][10] == runs[0][10], f"rank {rank}"
        per_rank.append(runs[0])
    assert per_rank[0][9] != per_rank[1][9]  # the ranks run their own streams
    spec = importlib.util.spec_from_file_location("ddp_resume", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    export = torchckpt.Checkpoint(model=module.build_model())
    export.read(str(tmp_path / "final-weights")).assert_consumed()
