"""A training run killed at a random step after a save and resumed in a
fresh process gives bitwise the same per-step losses and final parameters as a run that
never stopped.

Each run is a separate Python process (``train_script.py``): the killed one dies by
SIGKILL, the resumed one starts from nothing but the checkpoint directory. Kill steps
are drawn from fixed seeds (so a failure reproduces) among the steps after the first
save. With saves every 4 steps and 11 batches per epoch they currently are 12 (on a save,
one batch into epoch 1), 23 (resumes at 20, mid-epoch, and crosses into epoch 2), 29
(``num_workers=0``) and 14 (torchdata's ``StatefulDataLoader``).

The module fixture makes every run up front, in one child that imports torch once and
forks each run from there (two at a time), and the tests only compare their outputs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys

import numpy as np
import pytest

from processes import run_isolated

SCRIPT = os.path.join(os.path.dirname(__file__), "train_script.py")
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, SAVE_EVERY = 30, 4

pytestmark = pytest.mark.slow


def _args(directory, name: str, *, workers: int, loader: str, kill_at: int = 0) -> list[str]:
    return ["--dir", str(directory / name), "--log", str(directory / f"{name}.log"),
            "--out", str(directory / f"{name}.npz"), "--steps", str(STEPS),
            "--save-every", str(SAVE_EVERY), "--workers", str(workers), "--loader", loader,
            "--kill-at", str(kill_at)]


def _run_rounds(directory, rounds: list[list[list[str]]]) -> tuple[list[list[int]], str]:
    """Each round's runs, forked by one child (``train_script.py --rounds``); a round
    starts once the one before it has ended. Returns the exit codes and the output."""
    runs, results = directory / "runs.json", directory / "results.json"
    runs.write_text(json.dumps(rounds))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [TESTS, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = run_isolated([sys.executable, SCRIPT, "--rounds", str(runs), str(results)],
                        timeout=600, env=env)
    assert proc.returncode == 0 and results.exists(), proc.output[-4000:]
    return json.loads(results.read_text()), proc.output


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
    configs = sorted({(w, loader) for w, loader, _ in CASES})
    first = [_args(tmp, f"ref-{loader}-{w}", workers=w, loader=loader) for w, loader in configs]
    first += [_args(tmp, f"run-{i}", workers=w, loader=loader, kill_at=k)
              for i, (w, loader, k) in enumerate(CASES)]
    resumed = [_args(tmp, f"run-{i}", workers=w, loader=loader)
               for i, (w, loader, _) in enumerate(CASES)]
    codes, output = _run_rounds(tmp, [first, resumed])
    out = {"tmp": tmp, "exit": {}, "output": output}
    for args, code in zip(first + resumed, codes[0] + codes[1]):
        out["exit"].setdefault(args[args.index("--log") + 1], []).append(code)
    return out


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_killed_and_resumed_run_is_bitwise_identical(runs, case):
    workers, loader, kill_at = CASES[case]
    tmp = runs["tmp"]
    ref_log, log = str(tmp / f"ref-{loader}-{workers}.log"), str(tmp / f"run-{case}.log")
    assert runs["exit"][ref_log] == [0], runs["output"][-4000:]
    assert runs["exit"][log] == [-signal.SIGKILL, 0], runs["output"][-4000:]
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
