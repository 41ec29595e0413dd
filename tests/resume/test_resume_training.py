"""A training run killed at a random step after a save and resumed in a
fresh process gives bitwise the same per-step losses and final parameters as a run that
never stopped.

Each run is a separate Python process (``train_script.py``): the killed one dies by
SIGKILL, the resumed one starts from nothing but the checkpoint directory. Kill steps
are drawn from fixed seeds (so a failure reproduces) among the steps after the first
save. With saves every 4 steps and 11 batches per epoch they currently are 12 (on a save,
one batch into epoch 1), 23 (resumes at 20, mid-epoch, and crosses into epoch 2), 29
(``num_workers=0``) and 14 (torchdata's ``StatefulDataLoader``).

The runs are independent processes, so the module fixture starts them all up front,
a few at a time, and the tests only compare their outputs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from processes import run_isolated

SCRIPT = os.path.join(os.path.dirname(__file__), "train_script.py")
STEPS, SAVE_EVERY = 30, 4

pytestmark = pytest.mark.slow


def _command(directory, name: str, *, workers: int, loader: str, kill_at: int = 0):
    return [sys.executable, SCRIPT, "--dir", str(directory / name),
            "--log", str(directory / f"{name}.log"), "--out", str(directory / f"{name}.npz"),
            "--steps", str(STEPS), "--save-every", str(SAVE_EVERY), "--workers", str(workers),
            "--loader", loader, "--kill-at", str(kill_at)]


def _run_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run independent processes a few at a time (each spends seconds importing torch)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda c: run_isolated(c, timeout=600), commands))


def _losses(path) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        return [(int(s), h) for s, h in (line.split() for line in f)]


def _params(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _kill_steps(seed: int, n: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(SAVE_EVERY, STEPS), n))


CASES = ([(2, "resumable", k) for k in _kill_steps(5, 2)]
         + [(0, "resumable", k) for k in _kill_steps(6, 1)]
         + [(2, "stateful", k) for k in _kill_steps(7, 1)])
IDS = [f"{loader}-w{w}-kill{k}" for w, loader, k in CASES]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of every case, made up front in parallel: the uninterrupted reference of
    each configuration and each killed run, then each resumed run."""
    tmp = tmp_path_factory.mktemp("runs")
    cases = list(CASES)
    configs = sorted({(w, loader) for w, loader, _ in cases})
    first = [_command(tmp, f"ref-{loader}-{w}", workers=w, loader=loader) for w, loader in configs]
    first += [_command(tmp, f"run-{i}", workers=w, loader=loader, kill_at=k)
              for i, (w, loader, k) in enumerate(cases)]
    done = _run_all(first)
    resumed = _run_all([_command(tmp, f"run-{i}", workers=w, loader=loader)
                        for i, (w, loader, _) in enumerate(cases)])
    out = {"tmp": tmp, "exit": {}, "stderr": {}}
    for cmd, proc in zip(first + first[len(configs):], done + resumed):
        out["exit"].setdefault(cmd[cmd.index("--log") + 1], []).append(proc.returncode)
        out["stderr"][cmd[cmd.index("--log") + 1]] = proc.stderr
    return out


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_killed_and_resumed_run_is_bitwise_identical(runs, case):
    workers, loader, kill_at = CASES[case]
    tmp = runs["tmp"]
    ref_log, log = str(tmp / f"ref-{loader}-{workers}.log"), str(tmp / f"run-{case}.log")
    assert runs["exit"][ref_log] == [0], runs["stderr"][ref_log]
    assert runs["exit"][log] == [-signal.SIGKILL, 0], runs["stderr"][log]
    ref_losses = _losses(ref_log)
    assert [s for s, _ in ref_losses] == list(range(1, STEPS + 1))

    losses = _losses(log)
    first, second = losses[:kill_at], losses[kill_at:]
    last_save = kill_at - kill_at % SAVE_EVERY
    assert [s for s, _ in first] == list(range(1, kill_at + 1))
    assert [s for s, _ in second] == list(range(last_save + 1, STEPS + 1))
    assert first == ref_losses[:kill_at]
    assert second == ref_losses[last_save:]  # the redone steps too: the same losses again

    ref_params = _params(tmp / f"ref-{loader}-{workers}.npz")
    params = _params(tmp / f"run-{case}.npz")
    assert sorted(params) == sorted(ref_params)
    for name, value in params.items():
        assert value.tobytes() == ref_params[name].tobytes(), name
