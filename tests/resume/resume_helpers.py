"""Helpers shared by the tests in tests/resume (not a test module)."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset


class LoggingDataset(Dataset):
    """Returns each sample's index (plus noise drawn from torch, numpy and ``random``)
    and appends every fetched index to a log file, which works across worker processes
    (``O_APPEND`` writes of one short line are atomic)."""

    def __init__(self, n: int, log_path: str, noise: bool = False) -> None:
        self.n = n
        self.log_path = log_path
        self.noise = noise

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{int(i)}\n".encode())
        finally:
            os.close(fd)
        if not self.noise:
            return torch.tensor(int(i))
        return torch.stack([torch.tensor(float(i)), torch.rand(()),
                            torch.tensor(np.random.rand()), torch.tensor(random.random())])

    def fetched(self) -> list[int]:
        """Indices fetched since the last call (clears the log)."""
        try:
            with open(self.log_path, encoding="utf-8") as f:
                out = [int(line) for line in f]
        except FileNotFoundError:
            return []
        os.remove(self.log_path)
        return out


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def through_checkpoint_encoding(state):
    """``state`` after a trip through JSON text plus cloned tensors: fails unless the state is
    made of str-keyed dicts, lists, tensors and JSON scalars only (what a checkpoint stores
    without pickle)."""
    tensors: list[torch.Tensor] = []

    def enc(v):
        if isinstance(v, torch.Tensor):
            tensors.append(v.detach().clone())
            return {"__tensor__": len(tensors) - 1}
        if isinstance(v, dict):
            assert all(isinstance(k, str) for k in v), f"non-string keys in {list(v)}"
            return {k: enc(x) for k, x in v.items()}
        if isinstance(v, list):
            return [enc(x) for x in v]
        assert v is None or isinstance(v, (bool, int, float, str)), type(v)
        return v

    def dec(v):
        if isinstance(v, dict):
            if set(v) == {"__tensor__"}:
                return tensors[v["__tensor__"]]
            return {k: dec(x) for k, x in v.items()}
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v

    return dec(json.loads(json.dumps(enc(state), allow_nan=False)))
