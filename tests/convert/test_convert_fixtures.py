"""On the golden TF fixtures: hand-written torch models reproduce ``__output__``.

No TensorFlow needed: the fixtures (tests/data/tf, real TF 2.21 checkpoints)
carry TF's own forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from convert_helpers import FIXTURES, fixture_arrays, rel_error
from torch import nn

from torchckpt.convert import load_tf_weights

KERAS2 = FIXTURES / "keras2_adam"
TF1 = FIXTURES / "tf1_name_based"
K = "net/layer_with_weights-{}/{}/.ATTRIBUTES/VARIABLE_VALUE"
SLOT = "net/layer_with_weights-{}/{}/.OPTIMIZER_SLOT/opt/{}/.ATTRIBUTES/VARIABLE_VALUE"


class SmallNet(nn.Module):
    """keras2_adam: Dense(7, sigmoid) -> LayerNormalization(epsilon=1e-5) -> Dense(3)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 7)
        self.norm = nn.LayerNorm(7, eps=1e-5)
        self.head = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(torch.sigmoid(self.proj(x))))


class Classifier(nn.Module):
    """tf1_name_based: tanh(x @ fc_0/weights + biases) @ out/weights + out/biases."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


class Scoped(nn.Module):
    """The same classifier with module names that mirror the TF scopes."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.ModuleDict({"fc_0": nn.Linear(4, 5), "out": nn.Linear(5, 3)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier["out"](torch.tanh(self.classifier["fc_0"](x)))


TF1_MAP = {"classifier/fc_0/": "hidden", r"classifier/out/(weights|biases)": r"out.\1"}


def forward(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x))


@pytest.mark.parametrize("path", [KERAS2, KERAS2 / "ckpt-1", KERAS2 / "ckpt-1.index"])
def test_keras2_adam_reproduces_reference_output(path) -> None:
    ref = fixture_arrays("keras2_adam", "ckpt-1")
    model = SmallNet()
    report = load_tf_weights(model, path)
    assert report.ok and report.mode == "keras"
    assert rel_error(forward(model, ref["__input__"]), ref["__output__"]) < 1e-5
    assert report.transforms["proj.weight"] == "transpose(1, 0)"
    assert report.transforms["norm.weight"] == "identity"
    assert str(report.path).endswith("ckpt-1")


def test_keras2_adam_optimizer_state_is_converted() -> None:
    ref = fixture_arrays("keras2_adam", "ckpt-1")
    model = SmallNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, eps=1e-7)
    report = load_tf_weights(model, KERAS2, optimizer=opt)
    state = opt.state_dict()["state"]
    assert report.ok and len(report.optimizer_matched) == 12 + 1  # 6 x (m, v) and the step
    assert report.transforms["optimizer.state[*].step"] == "the optimizer's iteration counter"
    np.testing.assert_array_equal(state[0]["exp_avg"].numpy(), ref[SLOT.format(0, "kernel", "m")].T)
    np.testing.assert_array_equal(state[0]["exp_avg_sq"].numpy(),
                                  ref[SLOT.format(0, "kernel", "v")].T)
    np.testing.assert_array_equal(state[3]["exp_avg"].numpy(), ref[SLOT.format(1, "beta", "m")])
    steps = {s["step"].item() for s in state.values()}
    assert steps == {ref["opt/iter/.ATTRIBUTES/VARIABLE_VALUE"].item()}
    assert "opt/learning_rate/.ATTRIBUTES/VARIABLE_VALUE" in report.skipped
    assert report.optimizer_matched[0].target == "optimizer.state[proj.weight].exp_avg"


def test_tf1_name_based_with_assignment_map() -> None:
    ref = fixture_arrays("tf1_name_based", "model.ckpt-2")
    model = Classifier()
    report = load_tf_weights(model, TF1 / "model.ckpt-2", assignment_map=TF1_MAP)
    assert report.ok and report.mode == "assignment_map"
    assert rel_error(forward(model, ref["__input__"]), ref["__output__"]) < 1e-5
    assert report.transforms == {"hidden.weight": "transpose(1, 0)", "hidden.bias": "identity",
                                 "out.weight": "transpose(1, 0)", "out.bias": "identity"}
    assert set(report.skipped) == {"global_step", *(f"classifier/{s}/{v}/Momentum"
                                                    for s in ("fc_0", "out")
                                                    for v in ("weights", "biases"))}


def test_tf1_name_based_by_scope_names() -> None:
    ref = fixture_arrays("tf1_name_based", "model.ckpt-2")
    model = Scoped()
    report = load_tf_weights(model, TF1)
    assert report.ok and report.mode == "names"
    assert rel_error(forward(model, ref["__input__"]), ref["__output__"]) < 1e-5


def test_tf1_momentum_slots_become_momentum_buffers() -> None:
    ref = fixture_arrays("tf1_name_based", "model.ckpt-2")
    model = Classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    report = load_tf_weights(model, TF1, assignment_map=TF1_MAP, optimizer=opt)
    assert report.ok
    buffers = [s["momentum_buffer"].numpy() for s in opt.state_dict()["state"].values()]
    # TF1 MomentumOptimizer keeps accum = momentum * accum + grad: torch's buffer as is
    np.testing.assert_array_equal(buffers[0], ref["classifier/fc_0/weights/Momentum"].T)
    np.testing.assert_array_equal(buffers[3], ref["classifier/out/biases/Momentum"])


def test_partitioned_variable_is_reassembled_into_an_embedding() -> None:
    ref = fixture_arrays("partitioned", "model.ckpt")
    model = nn.Module()
    model.lookup = nn.Module()
    model.lookup.table = nn.Embedding(7, 5)  # the variable is named like its module
    model.lookup.scale = nn.Parameter(torch.zeros(5))
    report = load_tf_weights(model, FIXTURES / "partitioned")
    assert report.transforms == {"lookup.table.weight": "identity", "lookup.scale": "identity"}
    np.testing.assert_array_equal(model.lookup.table.weight.detach().numpy(), ref["lookup/table"])
