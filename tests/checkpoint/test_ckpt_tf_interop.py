"""torchckpt and real TensorFlow read each other's object-based checkpoints.

TensorFlow reads a torchckpt checkpoint of a model + Adam: ``list_variables``
lists every parameter, buffer and slot with its shape; ``CheckpointView`` parses
the object graph and its slot links; a mirror built from ``tf.Module``s with
the same attribute names (the tied weight one shared ``tf.Variable``) restores
with ``assert_existing_objects_matched()`` and equal values; keys look like TF's.

torchckpt reads what TensorFlow writes: a ``tf.Module`` tree (with a list,
a dict, several dtypes) saved by TF restores into a torch module tree with the
same names.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ckpt_helpers import Net
from torch import nn

from torchckpt import Checkpoint, UnmatchedError

pytestmark = pytest.mark.tf

SLOT = "{}/.OPTIMIZER_SLOT/optimizer/{}/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Net and its Adam after two steps, saved by torchckpt."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randint(0, 12, (2, 3))).sum().backward()
        opt.step()
    path = Checkpoint(model=model, optimizer=opt).save(str(tmp_path_factory.mktemp("c") / "ckpt"))
    return model, opt, path


def expected_variables(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, list[int]]:
    """Key -> shape, computed from torch: each tensor once, under its first name."""
    out = {}
    first_name = {}
    for name, t in model.state_dict(keep_vars=True).items():
        first_name.setdefault(id(t), name)
        if first_name[id(t)] == name:
            out[f"model/{name.replace('.', '/')}/.ATTRIBUTES/VARIABLE_VALUE"] = list(t.shape)
    for p, state in opt.state.items():
        var = "model/" + first_name[id(p)].replace(".", "/")
        for slot, value in state.items():
            out[SLOT.format(var, slot)] = list(value.shape)
    out["optimizer/.ATTRIBUTES/py_state"] = []
    out["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] = []
    out["_CHECKPOINTABLE_OBJECT_GRAPH"] = []
    return out


def test_tf_lists_every_parameter_buffer_and_slot(tf, trained) -> None:
    model, opt, path = trained
    listed = dict(tf.train.list_variables(path))
    assert listed == expected_variables(model, opt)
    assert "model/fc1/weight/.ATTRIBUTES/VARIABLE_VALUE" in listed
    assert SLOT.format("model/fc1/weight", "exp_avg") in listed
    assert "model/bn/num_batches_tracked/.ATTRIBUTES/VARIABLE_VALUE" in listed
    reader = tf.train.load_checkpoint(path)
    np.testing.assert_array_equal(reader.get_tensor(SLOT.format("model/lstm/weight_hh_l0",
                                                                "exp_avg_sq")),
                                  opt.state[model.lstm.weight_hh_l0]["exp_avg_sq"].numpy())


def test_tf_checkpoint_view_parses_graph_and_slot_links(tf, trained) -> None:
    _, opt, path = trained
    view = tf.train.CheckpointView(path)
    root = view.children(0)
    assert set(root) == {"model", "optimizer", "save_counter"}
    net = view.children(root["model"])
    assert set(net) == {"embed", "conv", "bn", "lstm", "fc1", "head"}
    assert view.children(net["head"])["weight"] == view.children(net["embed"])["weight"]  # tied
    proto = view._object_graph_proto  # CheckpointView exposes no slot API; read its proto
    slots = proto.nodes[root["optimizer"]].slot_variables
    assert len(slots) == sum(len(s) for s in opt.state.values())
    fc1_weight = view.children(net["fc1"])["weight"]
    linked = {s.slot_name: s.slot_variable_node_id for s in slots
              if s.original_variable_node_id == fc1_weight}
    assert set(linked) == {"step", "exp_avg", "exp_avg_sq"}
    (attr,) = proto.nodes[linked["exp_avg"]].attributes
    assert attr.checkpoint_key == SLOT.format("model/fc1/weight", "exp_avg")
    assert len(view.descendants()) == len(proto.nodes) - len(slots)


def tf_mirror(tf, module: nn.Module, memo: dict[int, object]):
    """A tf.Module tree with the same attribute names; shared tensors share one tf.Variable."""
    mirror = tf.Module()
    tensors = list(module._parameters.items()) + list(module._buffers.items())
    for name, t in tensors:
        if t is None:
            continue
        if id(t) not in memo:
            memo[id(t)] = tf.Variable(tf.zeros(t.shape, dtype=t.detach().numpy().dtype))
        setattr(mirror, name, memo[id(t)])
    for name, child in module._modules.items():
        setattr(mirror, name, tf_mirror(tf, child, memo))
    return mirror


def test_tf_module_mirror_restores_with_equal_values(tf, trained) -> None:
    model, _, path = trained
    mirror = tf_mirror(tf, model, {})
    assert mirror.head.weight is mirror.embed.weight
    status = tf.train.Checkpoint(model=mirror).restore(path)
    status.assert_existing_objects_matched()
    status.expect_partial()  # the torch optimizer has no counterpart here
    for name, t in model.state_dict().items():
        var = mirror
        for part in name.split("."):
            var = getattr(var, part)
        np.testing.assert_array_equal(var.numpy(), t.numpy(), err_msg=name)


class TFDense:
    """Builds the TF side of (d): tf.Modules named like torch modules."""

    @staticmethod
    def make(tf, i: int, o: int, seed: int):
        m = tf.Module()
        m.weight = tf.Variable(tf.random.stateless_normal([o, i], seed=[seed, 0]))
        m.bias = tf.Variable(tf.random.stateless_normal([o], seed=[seed, 1]))
        return m


def tf_tree(tf):
    net = tf.Module()
    net.fc1 = TFDense.make(tf, 3, 4, 1)
    net.blocks = [TFDense.make(tf, 4, 4, 2), TFDense.make(tf, 4, 2, 3)]
    net.heads = {"a": TFDense.make(tf, 2, 1, 4)}
    net.scale = tf.Variable(2.5, dtype=tf.float64)
    net.count = tf.Variable(7, dtype=tf.int64)
    net.fp16 = tf.Variable([1.5, -3.0], dtype=tf.float16)
    return net


class TorchTree(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 2)])
        self.heads = nn.ModuleDict({"a": nn.Linear(2, 1)})
        self.scale = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("fp16", torch.zeros(2, dtype=torch.float16))


def assert_same_values(tf_net, net: nn.Module) -> None:
    for name, t in net.state_dict().items():
        var = tf_net
        for part in name.split("."):
            var = var[int(part)] if isinstance(var, list) else (
                var[part] if isinstance(var, dict) else getattr(var, part))
        np.testing.assert_array_equal(var.numpy(), t.numpy(), err_msg=name)


@pytest.fixture(scope="module")
def tf_written(tf, tmp_path_factory):
    net = tf_tree(tf)
    path = tf.train.Checkpoint(model=net).save(str(tmp_path_factory.mktemp("tf") / "tfck"))
    return net, path


def test_tf_written_module_tree_restores_into_torch(tf_written) -> None:
    tf_net, path = tf_written
    net = TorchTree()
    Checkpoint(model=net).restore(path).assert_consumed()  # save_counter: restore creates it
    assert_same_values(tf_net, net)
    assert net.count.dtype == torch.int64 and net.fp16.dtype == torch.float16


def test_tf_written_read_leaves_save_counter_unused(tf_written) -> None:
    tf_net, path = tf_written
    net = TorchTree()
    status = Checkpoint(model=net).read(path)
    status.assert_existing_objects_matched()
    with pytest.raises(UnmatchedError, match="save_counter"):
        status.assert_consumed()
    assert_same_values(tf_net, net)
