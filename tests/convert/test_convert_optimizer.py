"""Train N steps in TF, convert with optimizer state, M steps in torch == N+M in TF.

TensorFlow trains Dense(tanh) -> LayerNormalization -> Dense with MSE for
N = 3 steps, saves ``tf.train.Checkpoint(model, optimizer)``, and trains M = 3
more on the same batches; torch resumes from the checkpoint and must land on
TF's final weights within 1e-5.
"""

from __future__ import annotations

import convert_torch_models as T
import numpy as np
import pytest
import torch
from convert_tf_models import M_STEPS, N_STEPS

from torchckpt.convert import load_tf_weights

pytestmark = pytest.mark.tf

OPTIMIZERS = {
    # TF optimizer (case) -> the torch optimizer with the same hyperparameters
    "train_adam": lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-7),  # tf-keras default Adam
    "train_adam_legacy": lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-7),  # legacy slots
    "train_sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "train_sgd_legacy": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "train_rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5,
                                                   eps=1e-12),
    "train_rmsprop_legacy": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5,
                                                          eps=1e-12),
}


@pytest.mark.parametrize("case", sorted(OPTIMIZERS))
def test_training_resumes_in_torch_like_tf(tf_models, case: str) -> None:
    with np.load(tf_models / case / "ref.npz", allow_pickle=False) as z:
        ref = {k: z[k] for k in z.files}
    model = T.TrainNet()
    opt = OPTIMIZERS[case](model.parameters())
    report = load_tf_weights(model, tf_models / case, optimizer=opt)
    assert report.ok, report.problems()
    assert len(report.optimizer_matched) >= 6
    if not case.startswith("train_sgd"):
        assert {s["step"].item() for s in opt.state_dict()["state"].values()} == {N_STEPS}
    for i in range(N_STEPS, N_STEPS + M_STEPS):
        opt.zero_grad()
        loss = ((model(torch.from_numpy(ref["xs"][i])) - torch.from_numpy(ref["ys"][i])) ** 2)
        loss.mean().backward()
        opt.step()
    ours = [model.fc.weight.T, model.fc.bias, model.norm.weight, model.norm.bias,
            model.head.weight.T, model.head.bias]
    for i, value in enumerate(ours):
        np.testing.assert_allclose(value.detach().numpy(), ref[f"w{i}"], rtol=1e-5, atol=1e-5)


def test_keras3_adam_state(tf_models) -> None:
    model = T.Keras3Model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    report = load_tf_weights(model, tf_models / "keras3", optimizer=opt)
    assert report.ok, report.problems()
    assert len(report.optimizer_matched) == 2 * len(list(model.parameters())) + 1  # + step
    fc = next(m for m in report.optimizer_matched
              if m.target == "optimizer.state[fc.weight].exp_avg")
    assert fc.transform == "transpose(1, 0)" and fc.sources[0].startswith("optimizer/_variables/")
    assert opt.state_dict()["state"][0]["step"].item() == 2  # 8 samples, batch 4, one epoch


def test_tf1_adam_and_bert_slots(tf_models) -> None:
    model = T.MiniBert()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    report = load_tf_weights(model, tf_models / "tf1_bert", assignment_map=T.BERT_MAP,
                             optimizer=opt)
    assert report.ok, report.problems()
    names = [n for n, _ in model.named_parameters()]
    state = opt.state_dict()["state"]
    pooler = state[names.index("pooler.weight")]
    assert torch.all(pooler["exp_avg"] == 0.5) and torch.all(pooler["exp_avg_sq"] == 0.25)
    assert state[0]["step"].item() == 2  # from beta1_power = beta1 ** (steps + 1)
    assert report.transforms["optimizer.state[attn.in_proj_weight].exp_avg"].startswith("q, k, v")
    assert any("no bias correction" in n for n in report.notes)
