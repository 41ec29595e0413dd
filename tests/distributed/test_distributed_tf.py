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
    meta = json.load(open(dump + ".json"))
    with np.load(dump + ".npz", allow_pickle=False) as z:
        want = {k: z[f"arr_{i}"] for i, k in enumerate(meta["keys"])}
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    problems = []
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
            problems.append(f"{key}: TF {got.dtype}{got.shape}, ranks {value.dtype}{value.shape}")
    out[dump] = problems
print(json.dumps(out))
"""


def _tensorflow_check(cases: list[tuple[str, str]]) -> None:
    """Each ``(prefix, dump)``: every tensor of the dump is in TF's view of the prefix."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = run_isolated([sys.executable, "-c", CHECK, json.dumps(cases)], env=env,
                          timeout=240)
    if proc.returncode != 0:
        pytest.fail(f"TensorFlow could not read the checkpoints (is tensorflow-cpu installed? "
                    f"`pip install -e .[test]`):\n{proc.stderr[-4000:]}", pytrace=False)
    problems = json.loads(proc.stdout.strip().splitlines()[-1])
    assert problems == {dump: [] for _, dump in cases}


@pytest.mark.tf
def test_tensorflow_reads_merged_checkpoints(dist_run) -> None:
    dist_run.check("save4", "on2")
    w = str(dist_run.workdir)
    _tensorflow_check([(os.path.join(w, name, f"ckpt-{n}"), os.path.join(w, name))
                       for name, n in (("ddp4", 1), ("fsdp4", 1), ("dt4", 1), ("fsdp2", 2))])


@pytest.mark.tf
def test_tensorflow_reads_per_rank_values(resume_run) -> None:
    resume_run.check("ddp_full", "fsdp_full")
    w = resume_run.workdir
    cases = []
    for parallel in ("ddp", "fsdp"):
        prefix = resume_run.json(f"{parallel}_full-0.log.json")["latest"]
        cases += [(prefix, str(w / f"{parallel}_full-{rank}.log.values")) for rank in range(2)]
    _tensorflow_check(cases)
