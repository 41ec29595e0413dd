"""The converter examples run end to end (each makes its TF checkpoint in a temporary folder).

They run in ``tf_artifacts.py``'s forked processes, as ``__main__``, next to the
test models that TensorFlow makes there (see ``conftest.py``).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.mark.parametrize("script, checks", [
    ("keras_to_torch.py", ["torch outputs equal Keras outputs", "Adam state resumes at step 4"]),
    ("tf1_bert_to_torch.py", ["torch sequence output equals TF's",
                              "torch pooled output equals TF's"]),
])
def test_example_runs(converter_examples, script: str, checks: list[str]) -> None:
    job = f"example-{script}"
    output = converter_examples.output(job)
    assert converter_examples.codes[job] == 0, output[-3000:]
    for check in checks:
        assert f"checked: {check}" in output, output
