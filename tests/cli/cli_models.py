"""Torch models that ``torchckpt convert --model tests/cli/cli_models.py:NAME`` builds in tests."""

from __future__ import annotations

import torch
from torch import nn


class SmallNet(nn.Module):
    """The model of the ``keras2_adam`` fixture: Dense(7, sigmoid) -> LayerNorm -> Dense(3)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 7)
        self.norm = nn.LayerNorm(7, eps=1e-5)
        self.head = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(torch.sigmoid(self.proj(x))))


class Tied(nn.Module):
    """SmallNet with a second name for ``proj.weight`` (tied weights share one storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallNet()
        self.alias = nn.Module()
        self.alias.weight = self.net.proj.weight


def not_a_module() -> int:
    return 3
