"""The converter examples run end to end (each makes its TF checkpoint in a temporary folder)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from processes import run_isolated

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.mark.parametrize("script, checks", [
    ("keras_to_torch.py", ["torch outputs equal Keras outputs", "Adam state resumes at step 4"]),
    ("tf1_bert_to_torch.py", ["torch sequence output equals TF's",
                              "torch pooled output equals TF's"]),
])
def test_example_runs(script: str, checks: list[str]) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    proc = run_isolated([sys.executable, str(EXAMPLES / script)], timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for check in checks:
        assert f"checked: {check}" in proc.stdout, proc.stdout
