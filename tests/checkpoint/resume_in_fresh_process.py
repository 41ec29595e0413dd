"""Run by ``test_ckpt_resume.py`` in a fresh interpreter: restore, continue, dump.

Usage: ``python resume_in_fresh_process.py OUT_DIR STEPS OPT=PREFIX [OPT=PREFIX ...]``.
For each optimizer it builds a *different* run (another seed, another learning
rate), restores the checkpoint into it, checks that every value was consumed,
trains ``STEPS`` more steps and writes every state array to ``OUT_DIR/OPT.npz``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ckpt_helpers import make_run, state_arrays

from torchckpt import Checkpoint


def main(out_dir: str, steps: int, jobs: list[str]) -> None:
    for job in jobs:
        name, prefix = job.split("=", 1)
        run = make_run(name, seed=99, lr=0.5)
        Checkpoint(**run.objects()).restore(prefix).assert_consumed()
        run.train(steps)
        np.savez(os.path.join(out_dir, f"{name}.npz"), **state_arrays(run))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
