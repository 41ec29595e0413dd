"""Fixtures of the converter tests.

``tf_models`` runs ``convert_tf_models.py`` once per session in a subprocess:
TensorFlow makes every model and checkpoint into a temporary folder (about 20 s
on two cores), and the test process itself never imports TensorFlow. Only tests
marked ``tf`` use it; a missing TensorFlow fails them, it does not skip them.
``hf_models`` does the same with ``convert_hf_models.py`` (a tiny ``TFBertModel``;
it needs ``transformers`` 4.x, pinned in the ``test`` extra).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from processes import run_isolated

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tf_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tf_models")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    proc = run_isolated([sys.executable, str(HERE / "convert_tf_models.py"), str(out)],
                        timeout=900, env=env)
    if proc.returncode != 0:
        pytest.fail("TensorFlow could not make the test models (the tf tests need "
                    f"tensorflow-cpu and tf-keras):\n{proc.stderr[-5000:]}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf_models")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
           "USE_TF": "1"}
    proc = run_isolated([sys.executable, str(HERE / "convert_hf_models.py"), str(out)],
                        timeout=900, env=env)
    if proc.returncode != 0:
        pytest.fail("transformers' TFBertModel could not make the test model (the test needs "
                    "the transformers version pinned in the test extra, with tensorflow-cpu and "
                    f"tf-keras):\n{proc.stderr[-5000:]}", pytrace=False)
    return out
