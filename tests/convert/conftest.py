"""Fixtures of the converter tests.

``tf_artifacts`` runs ``tf_artifacts.py`` once per session in a subprocess: it
imports TensorFlow (with torch, tf-keras, Keras 3 and transformers' TF classes)
once, then makes every TensorFlow model and checkpoint (``convert_tf_models.py``,
``convert_hf_models.py``: a tiny ``TFBertModel``, which needs ``transformers``
4.x, pinned in the ``test`` extra) and runs the converter examples, in forked
processes two at a time. The test process itself never imports TensorFlow.
``tf_models``, ``hf_models`` and ``converter_examples`` hand out its parts.
Only tests marked ``tf`` use them; a missing TensorFlow fails them, it does not
skip them.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from processes import run_isolated

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent


@dataclass(frozen=True)
class Artifacts:
    """What ``tf_artifacts.py`` left in ``root``: each job's exit status and output."""

    root: Path
    codes: dict[str, int]

    def output(self, job: str) -> str:
        return (self.root / "logs" / f"{job}.txt").read_text(errors="replace")

    def require(self, prefix: str, what: str) -> None:
        """Fail (not skip) unless every job whose name starts with ``prefix`` succeeded."""
        failed = {job: code for job, code in self.codes.items()
                  if job.startswith(prefix) and code != 0}
        if failed:
            logs = "\n".join(f"--- {job} (exit status {code}):\n{self.output(job)[-3000:]}"
                             for job, code in failed.items())
            pytest.fail(f"{what} (the tf tests need tensorflow-cpu and tf-keras, and "
                        f"transformers 4.x, as the test extra pins):\n{logs}", pytrace=False)


@pytest.fixture(scope="session")
def tf_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    out = tmp_path_factory.mktemp("tf_artifacts")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
           .rstrip(os.pathsep)}
    proc = run_isolated([sys.executable, str(HERE / "tf_artifacts.py"), str(out)],
                        timeout=900, env=env)
    results = out / "results.json"
    if proc.returncode != 0 or not results.exists():
        pytest.fail("TensorFlow could not make the test models (the tf tests need "
                    f"tensorflow-cpu and tf-keras):\n{proc.output[-5000:]}", pytrace=False)
    return Artifacts(out, json.loads(results.read_text()))


@pytest.fixture(scope="session")
def tf_models(tf_artifacts: Artifacts) -> Path:
    tf_artifacts.require("tf-", "TensorFlow could not make the test models")
    return tf_artifacts.root / "tf_models"


@pytest.fixture(scope="session")
def hf_models(tf_artifacts: Artifacts) -> Path:
    tf_artifacts.require("hf-", "transformers' TFBertModel could not make the test model")
    return tf_artifacts.root / "hf_models"


@pytest.fixture(scope="session")
def converter_examples(tf_artifacts: Artifacts) -> Artifacts:
    """The examples' runs: job ``example-SCRIPT``, its exit status and output."""
    return tf_artifacts
