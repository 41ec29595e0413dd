"""TensorFlow reads the merged multi-shard checkpoints as one checkpoint.

``tf.train.load_checkpoint`` must list every logical tensor with its full
shape (slice keys hidden) and ``get_tensor`` must return the full value,
reassembled from the ranks' slices, equal bit for bit to the values the ranks
held; per-rank values (``rng/rank_1_of_2/...``) are listed under their readable
keys, each equal to what its rank held. TensorFlow runs in a subprocess, away
from the torch process.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from processes import run_isolated

CHECK = r"""
import json, sys
import numpy as np
import tensorflow as tf

out = {}
for prefix, dump in json.loads(sys.argv[1]):
    problems = []
    try:
        meta = json.load(open(dump + ".json"))
        with np.load(dump + ".npz", allow_pickle=False) as z:
            want = {k: z[f"arr_{i}"] for i, k in enumerate(meta["keys"])}
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        missing = sorted(set(want) - set(shapes))
        if missing:
            problems.append(f"not listed: {missing}")
        extra = sorted(k for k in shapes if k.startswith("\x00"))
        if extra:
            problems.append(f"slice keys listed: {extra}")
        for key, value in want.items():
            got = reader.get_tensor(key)
            if got.dtype.name == "bfloat16":
                got = got.view(np.int16)
            if list(shapes.get(key, [])) != list(value.shape) or got.shape != value.shape \
                    or got.tobytes() != value.tobytes():
                problems.append(f"{key}: TF {got.dtype}{got.shape}, "
                                f"ranks {value.dtype}{value.shape}")
    except Exception as exc:  # reported per checkpoint: the others are still checked
        problems.append(f"{type(exc).__name__}: {exc}")
    out[dump] = problems
print(json.dumps(out))
"""


def _merged_cases(dist_run) -> list[tuple[str, str]]:
    """``(prefix, dump)`` of the checkpoints that ranks saved together (one per layout)."""
    w = str(dist_run.workdir)
    return [(os.path.join(w, name, f"ckpt-{n}"), os.path.join(w, name))
            for name, n in (("ddp4", 1), ("fsdp4", 1), ("dt4", 1), ("fsdp2", 2))]


def _per_rank_cases(resume_run) -> list[tuple[str, str]]:
    """``(prefix, dump)`` of each rank's own values in the resumed runs' latest checkpoint."""
    w = resume_run.workdir
    cases = []
    for parallel in ("ddp", "fsdp"):
        log = w / f"{parallel}_full-0.log.json"
        prefix = resume_run.json(log.name)["latest"] if log.exists() else str(log)
        cases += [(prefix, str(w / f"{parallel}_full-{rank}.log.values")) for rank in range(2)]
    return cases


@pytest.fixture(scope="module")
def tensorflow_view(dist_run, resume_run) -> dict[str, list[str]]:
    """One TensorFlow process reads every checkpoint of both tests: ``{dump: problems}``,
    where ``problems`` lists each tensor TF lists or reads otherwise than the ranks held."""
    cases = _merged_cases(dist_run) + _per_rank_cases(resume_run)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = run_isolated([sys.executable, "-c", CHECK, json.dumps(cases)], env=env,
                        timeout=240)
    if proc.returncode != 0:
        pytest.fail(f"TensorFlow could not read the checkpoints (is tensorflow-cpu installed? "
                    f"`pip install -e .[test]`):\n{proc.stderr[-4000:]}", pytrace=False)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tensorflow_check(view: dict[str, list[str]], cases: list[tuple[str, str]]) -> None:
    """Each ``(prefix, dump)``: every tensor of the dump is in TF's view of the prefix."""
    assert {dump: view[dump] for _, dump in cases} == {dump: [] for _, dump in cases}


@pytest.mark.tf
def test_tensorflow_reads_merged_checkpoints(dist_run, tensorflow_view) -> None:
    dist_run.check("save4", "on2")
    _tensorflow_check(tensorflow_view, _merged_cases(dist_run))


@pytest.mark.tf
def test_tensorflow_reads_per_rank_values(resume_run, tensorflow_view) -> None:
    resume_run.check("ddp_full", "fsdp_full")
    _tensorflow_check(tensorflow_view, _per_rank_cases(resume_run))
