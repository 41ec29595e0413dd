"""The benchmark data sets, built the same way in every worker process.

Each data set is a model-like object plus a flat ``name -> tensor`` view of all
of its state, in a fixed order. Values are deterministic and cheap to make
(a 4 MiB random block tiled over each tensor, offset per tensor, so no two
tensors are equal), because drawing 3 GiB of random numbers takes longer than
the benchmark itself on a 2-core machine.

* ``model3g`` 64 ``Linear(2048, 2048)`` plus Adam state after one
  step: 128 parameters + 128 x (step, exp_avg, exp_avg_sq) = 512 float32
  tensors, 3.0 GiB.
* ``small50k``: 50,000 tensors of 256 float32 (48.8 MiB).
* ``adam50k``: 12,500 parameters of 256 float32 plus Adam state after one step:
  12,500 x (step, exp_avg, exp_avg_sq) = 50,000 tensors (36.7 MiB); the
  ``Checkpoint`` case saves them as parameters and optimizer slots.
* ``gib150``: 1 GiB of float32 in 150 tensors: 128 matrices of
  2048 x 1024 and 22 vectors of 1024.

``--quick`` shrinks them (``model3g`` to 8 layers = 384 MiB, ``small50k`` and
``adam50k`` to 10,000 tensors, ``gib150`` to 16 matrices = 128 MiB) to check the
harness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DATASETS = ("model3g", "small50k", "adam50k", "gib150")


@dataclass
class Dataset:
    """A data set: the objects a user would checkpoint and their flat tensor view.

    Attributes:
        name: one of :data:`DATASETS`.
        model: an ``nn.Module`` holding the parameters.
        optimizer: an optimizer whose state holds the rest (or ``None``).
        tensors: ``name -> tensor`` over every tensor, in a fixed order
            (``torch.save``/safetensors/DCP key style).
        tf_keys: the TF-style checkpoint key of each tensor, same order.
    """

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    tensors: dict[str, torch.Tensor]
    tf_keys: list[str]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def _fill(tensors: list[torch.Tensor]) -> None:
    """Deterministic, distinct, non-trivial values; touches every page."""
    gen = torch.Generator().manual_seed(0)
    block = torch.rand(1 << 20, generator=gen)
    for i, t in enumerate(tensors):
        flat = t.view(-1)
        for a in range(0, flat.numel(), block.numel()):
            n = min(block.numel(), flat.numel() - a)
            flat[a:a + n].copy_(block[:n])
        if flat.numel():
            flat[0] = float(i)


def _model3g(layers: int) -> Dataset:
    with torch.device("meta"):
        model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(layers)])
    model = model.to_empty(device="cpu")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():  # Adam's state after one step, without 1 GiB of gradients
        opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.empty_like(p),
                        "exp_avg_sq": torch.empty_like(p)}
    tensors: dict[str, torch.Tensor] = {}
    tf_keys: list[str] = []
    for name, p in model.named_parameters():
        tensors[name] = p.data
        tf_keys.append(f"model/{name.replace('.', '/')}/.ATTRIBUTES/VARIABLE_VALUE")
    for i, p in enumerate(model.parameters()):
        for slot, t in opt.state[p].items():
            tensors[f"optimizer.state.{i}.{slot}"] = t
            tf_keys.append(f"optimizer/state/{i}/{slot}/.ATTRIBUTES/VARIABLE_VALUE")
    _fill(list(tensors.values()))
    return Dataset("model3g", model, opt, tensors, tf_keys)


def _with_adam(name: str, params: int, size: int) -> Dataset:
    model = torch.nn.Module()
    model.params = torch.nn.ParameterList([torch.nn.Parameter(torch.empty(size))
                                           for _ in range(params)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():  # Adam's state after one step
        opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.empty_like(p),
                        "exp_avg_sq": torch.empty_like(p)}
    tensors: dict[str, torch.Tensor] = {}
    tf_keys: list[str] = []
    for i, p in enumerate(model.params):
        tensors[f"params.{i}"] = p.data
        tf_keys.append(f"model/params/{i}/.ATTRIBUTES/VARIABLE_VALUE")
    for i, p in enumerate(model.params):
        for slot, t in opt.state[p].items():
            tensors[f"optimizer.state.{i}.{slot}"] = t
            tf_keys.append(f"model/params/{i}/.OPTIMIZER_SLOT/optimizer/{slot}"
                           "/.ATTRIBUTES/VARIABLE_VALUE")
    _fill(list(tensors.values()))
    return Dataset(name, model, opt, tensors, tf_keys)


def _params(name: str, shapes: list[tuple[int, ...]]) -> Dataset:
    model = torch.nn.Module()
    model.params = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.empty(s), requires_grad=False) for s in shapes])
    tensors = {f"params.{i}": p.data for i, p in enumerate(model.params)}
    tf_keys = [f"model/params/{i}/.ATTRIBUTES/VARIABLE_VALUE" for i in range(len(shapes))]
    _fill(list(tensors.values()))
    return Dataset(name, model, None, tensors, tf_keys)


def build(name: str, quick: bool = False) -> Dataset:
    """Make data set ``name`` (see the module docstring)."""
    if name == "model3g":
        return _model3g(8 if quick else 64)
    if name == "small50k":
        return _params(name, [(256,)] * (10_000 if quick else 50_000))
    if name == "adam50k":
        return _with_adam(name, 2_500 if quick else 12_500, 256)
    if name == "gib150":
        mats = 16 if quick else 128
        return _params(name, [(2048, 1024)] * mats + [(1024,)] * 22)
    raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")
