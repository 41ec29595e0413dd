"""Models for the lazy-restore tests: one eager, one lazy, same names and shapes.

``make(lazy=False)`` is Conv2d -> BatchNorm2d -> Linear -> BatchNorm1d -> Linear;
``make(lazy=True)`` is the same with ``LazyConv2d``, ``LazyBatchNorm2d``,
``LazyLinear``, ``LazyBatchNorm1d``: its shapes are known only at the first
forward. ``train_steps`` is a deterministic Adam loop over data drawn from a
seeded generator.
"""

from __future__ import annotations

import torch
from torch import nn

IN_CH, SIDE = 2, 5


def make(lazy: bool) -> nn.Sequential:
    if lazy:
        return nn.Sequential(nn.LazyConv2d(3, 3), nn.LazyBatchNorm2d(), nn.ReLU(), nn.Flatten(),
                             nn.LazyLinear(6), nn.LazyBatchNorm1d(), nn.Tanh(), nn.Linear(6, 2))
    return nn.Sequential(nn.Conv2d(IN_CH, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 3 * 3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2))


def batch(step: int) -> torch.Tensor:
    return torch.randn(4, IN_CH, SIDE, SIDE, generator=torch.Generator().manual_seed(100 + step))


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, start: int, count: int) -> None:
    for step in range(start, start + count):
        opt.zero_grad()
        model(batch(step)).square().mean().backward()
        opt.step()


def trained(seed: int = 0, steps: int = 3) -> tuple[nn.Sequential, torch.optim.Adam]:
    torch.manual_seed(seed)
    model = make(lazy=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, opt, 0, steps)
    return model, opt


def assert_state_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and sa[name].shape == sb[name].shape, name
        assert torch.equal(sa[name], sb[name]), name


def assert_optimizer_state_equal(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    pa = [p for g in a.param_groups for p in g["params"]]
    pb = [p for g in b.param_groups for p in g["params"]]
    for i, (x, y) in enumerate(zip(pa, pb)):
        assert a.state[x].keys() == b.state[y].keys(), i
        for k in a.state[x]:
            assert torch.equal(a.state[x][k], b.state[y][k]), (i, k)
