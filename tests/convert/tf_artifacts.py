"""Make every TensorFlow artifact of the converter tests in one process (a subprocess).

Usage: ``python tf_artifacts.py OUT_DIR``. Imports torch, torchckpt, TensorFlow,
tf-keras, Keras 3 and transformers' TF classes once (imports are about half of
what a fresh process per artifact would cost on two cores), then forks one process per job
(``forked.py``), two at a time, each in a process group of its own. A job is
one of:

* a group of ``convert_tf_models.py`` cases: ``OUT_DIR/tf_models/CASE/``;
  the short eager cases share one job, each longer one (and the graph-mode
  ``tf1_bert``, which turns eager execution off) has its own;
* ``convert_hf_models.py``'s tiny ``TFBertModel``: ``OUT_DIR/hf_models/bert/``;
* an example script of ``examples/``, run as ``__main__`` with ``runpy`` as
  ``python examples/SCRIPT`` would run it (its imports are already loaded).

Each job's output goes to ``OUT_DIR/logs/JOB.txt``; ``OUT_DIR/results.json`` maps
each job to its exit status (0: done; see ``forked.run_forked`` for the rest).
The test process itself never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["USE_TF"] = "1"

import importlib  # noqa: E402
import runpy  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
EXAMPLE_SCRIPTS = ("keras_to_torch.py", "tf1_bert_to_torch.py")
# convert_tf_models cases that take seconds each (training steps, tf.function
# tracing, Keras 3 fit, graph mode): one job each; the rest share one job.
LONG_CASES = ("keras3", "tf1_bert", "rnn", "train_adam", "train_adam_legacy", "train_sgd",
              "train_sgd_legacy", "train_rmsprop", "train_rmsprop_legacy")


def jobs() -> dict[str, tuple]:
    """``{job name: (function, args)}``, longest first so that two at a time finish together."""
    import convert_tf_models

    short = sorted(set(convert_tf_models.CASES) - set(LONG_CASES))
    return {
        **{f"example-{script}": (run_example, (script,)) for script in EXAMPLE_SCRIPTS},
        "hf-bert": (make_hf, ()),
        **{f"tf-{case}": (make_tf, ([case],)) for case in LONG_CASES},
        "tf-short": (make_tf, (short,)),
    }


def make_tf(cases: list[str]) -> None:
    import convert_tf_models
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    for case in cases:
        path = os.path.join(OUT, "tf_models", case)
        os.makedirs(path, exist_ok=True)
        convert_tf_models.CASES[case](path)


def make_hf() -> None:
    import convert_hf_models

    path = os.path.join(OUT, "hf_models", "bert")
    os.makedirs(path, exist_ok=True)
    convert_hf_models.make_bert(path)


def run_example(script: str) -> None:
    path = str(EXAMPLES / script)
    sys.argv = [path]
    sys.path[0] = str(EXAMPLES)
    runpy.run_path(path, run_name="__main__")


def run_job(name: str, fn, args: tuple) -> None:
    fd = os.open(os.path.join(OUT, "logs", f"{name}.txt"),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    fn(*args)


def preload() -> None:
    """What the jobs import, in the examples' order: numpy, torch, torchckpt, then TF."""
    import numpy  # noqa: F401
    import torch  # noqa: F401

    from forked import import_ahead

    import_ahead()
    importlib.import_module("torchckpt.convert")
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
    import tf_keras  # noqa: F401
    from transformers import BertConfig, TFBertModel  # noqa: F401


OUT = ""


def main(argv: list[str]) -> int:
    global OUT
    OUT = argv[0]
    os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
    preload()
    from forked import run_forked

    todo = jobs()
    codes = run_forked([(run_job, (name, fn, args)) for name, (fn, args) in todo.items()],
                       timeout=600, at_once=2)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(dict(zip(todo, codes)), f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
