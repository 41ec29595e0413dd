"""A TensorFlow-written object-based checkpoint of a ``tf.Module``
tree restores *lazily* into a torch model with the same names: attached after
``restore()``, built from lazy modules, or built on the meta device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from torchckpt import Checkpoint

pytestmark = pytest.mark.tf


def tf_dense(tf, i: int, o: int, seed: int):
    m = tf.Module()
    m.weight = tf.Variable(tf.random.stateless_normal([o, i], seed=[seed, 0]))
    m.bias = tf.Variable(tf.random.stateless_normal([o], seed=[seed, 1]))
    return m


@pytest.fixture(scope="module")
def tf_written(tf, tmp_path_factory):
    """TF saves ``model`` = {fc1, blocks: [dense, dense], norm: {scale, shift}, steps}."""
    net = tf.Module()
    net.fc1 = tf_dense(tf, 3, 4, 1)
    net.blocks = [tf_dense(tf, 4, 4, 2), tf_dense(tf, 4, 2, 3)]
    net.norm = tf.Module()
    net.norm.running_mean = tf.Variable([0.5, -0.25])
    net.norm.running_var = tf.Variable([2.0, 4.0])
    net.norm.num_batches_tracked = tf.Variable(11, dtype=tf.int64)
    net.norm.weight = tf.Variable([1.5, 0.5])
    net.norm.bias = tf.Variable([0.1, 0.2])
    path = tf.train.Checkpoint(model=net).save(str(tmp_path_factory.mktemp("tf") / "tfck"))
    values = {}
    for name in ("fc1", "blocks/0", "blocks/1", "norm"):
        obj = net
        for part in name.split("/"):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        for var_name in vars(obj):
            var = getattr(obj, var_name)
            if isinstance(var, tf.Variable):
                values[f"{name.replace('/', '.')}.{var_name}"] = var.numpy()
    return path, values


class Net(nn.Module):
    def __init__(self, lazy: bool) -> None:
        super().__init__()
        self.fc1 = nn.LazyLinear(4) if lazy else nn.Linear(3, 4)
        self.blocks = nn.ModuleList([nn.LazyLinear(4) if lazy else nn.Linear(4, 4),
                                     nn.LazyLinear(2) if lazy else nn.Linear(4, 2)])
        self.norm = nn.LazyBatchNorm1d() if lazy else nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks[1](self.blocks[0](self.fc1(x))))


def assert_values(net: nn.Module, values: dict[str, np.ndarray]) -> None:
    state = net.state_dict()
    assert set(state) == set(values)
    for name, value in values.items():
        np.testing.assert_array_equal(state[name].numpy(), value, err_msg=name)


def eager_output(path: str, x: torch.Tensor) -> torch.Tensor:
    net = Net(lazy=False).eval()
    Checkpoint(model=net).restore(path).assert_consumed()
    return net(x)


def test_attached_later_lazy_modules(tf_written) -> None:
    path, values = tf_written
    ckpt = Checkpoint()
    status = ckpt.restore(path)
    assert "model.fc1.weight" in status.report().pending
    ckpt.model = net = Net(lazy=True).eval()
    assert {f"model.{k}" for k in values} == set(status.report().pending)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    out = net(x)  # the first forward materializes, then the values land, then it computes
    status.assert_consumed()
    assert_values(net, values)
    assert torch.equal(out, eager_output(path, x))


def test_meta_device_model(tf_written) -> None:
    path, values = tf_written
    with torch.device("meta"):
        net = Net(lazy=False)
    Checkpoint(model=net).restore(path).assert_consumed()
    assert all(t.device.type == "cpu" for t in net.state_dict().values())
    assert_values(net, values)
