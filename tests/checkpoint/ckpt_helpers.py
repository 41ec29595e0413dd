"""A small training setup shared by the checkpoint tests and their subprocess script.

``Net`` has every layer kind acceptance (3a) names: Linear, Conv2d, BatchNorm2d
(running stats and ``num_batches_tracked``), Embedding, LSTM, and a weight tied
between the embedding and the output head. ``Run`` bundles it with an
optimizer, an LR scheduler, a CPU ``GradScaler`` and the data generator, so
that "continue training" is a pure function of the restored state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

VOCAB, DIM, HIDDEN, SEQ, BATCH = 12, 6, 5, 4, 3

OPTIMIZERS = {
    "adam": lambda params, lr=1e-2: torch.optim.Adam(params, lr=lr),
    "adamw": lambda params, lr=1e-2: torch.optim.AdamW(params, lr=lr, weight_decay=0.1),
    "sgd": lambda params, lr=1e-1: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda params, lr=1e-2: torch.optim.RMSprop(params, lr=lr, momentum=0.5,
                                                           centered=True),
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.lstm = nn.LSTM(DIM, HIDDEN, batch_first=True)
        self.fc1 = nn.Linear(HIDDEN, DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.embed.weight  # tied: one node, two edges

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.embed(tokens)                                  # B, T, D
        c = torch.relu(self.bn(self.conv(e.unsqueeze(1))))      # B, 2, T, D
        h, _ = self.lstm(e + c.mean(1))                         # B, T, H
        return self.head(torch.tanh(self.fc1(h)))               # B, T, V


@dataclass
class Run:
    model: Net
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    data: torch.Generator

    def objects(self) -> dict[str, object]:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler, "data": self.data}

    def step(self) -> float:
        tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=self.data)
        logits = self.model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    def train(self, steps: int) -> None:
        for _ in range(steps):
            self.step()


def make_run(optimizer: str, seed: int, lr: float | None = None,
             groups: Callable[[Net], Any] | None = None) -> Run:
    """A run whose initial values all depend on ``seed`` (a fresh run differs everywhere).

    ``groups(model)`` gives the optimizer's params / param groups (default: all
    parameters in registration order).
    """
    torch.manual_seed(seed)
    model = Net()
    params = model.parameters() if groups is None else groups(model)
    opt = OPTIMIZERS[optimizer](params, **({} if lr is None else {"lr": lr}))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    # a short growth interval so the scale changes between saves
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** (8 + seed % 4), growth_interval=2)
    return Run(model, opt, sched, scaler, torch.Generator().manual_seed(seed))


def state_arrays(run: Run) -> dict[str, np.ndarray]:
    """Every number that decides the next step, by a readable name, as numpy arrays."""
    out = {f"model.{k}": v.detach().numpy().copy() for k, v in run.model.state_dict().items()}
    names = {id(p): n for n, p in run.model.named_parameters(remove_duplicate=False)}
    for p, state in run.optimizer.state.items():
        for slot, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"opt.{names[id(p)]}.{slot}"] = value.detach().numpy().copy()
    out["lr"] = np.array([g["lr"] for g in run.optimizer.param_groups])
    out["scale"] = run.scaler.get_scale() * np.ones(1)
    out["data"] = run.data.get_state().numpy().copy()
    return out
