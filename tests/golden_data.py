"""The TF-written fixtures under ``tests/data/tf`` and what TensorFlow read back from them.

See ``tests/data/tf/README.md`` for how each was made; ``MANIFEST.json`` holds
their sha256 sums. Everything here only reads; tests copy a fixture into
``tmp_path`` before damaging it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tf")
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclass(frozen=True)
class Golden:
    """One TF-written checkpoint: ``folder/prefix`` plus its expected values."""

    folder: str
    name: str

    @property
    def id(self) -> str:
        return f"{self.folder}/{self.name}"

    @property
    def directory(self) -> str:
        return os.path.join(DATA, self.folder)

    @property
    def prefix(self) -> str:
        return os.path.join(self.directory, self.name)

    @cached_property
    def meta(self) -> dict:
        with open(self.prefix + ".meta.json", encoding="utf-8") as f:
            return json.load(f)

    @cached_property
    def numeric(self) -> dict[str, np.ndarray]:
        """Every numeric tensor TF read back (bfloat16 as uint16 bit patterns)."""
        with np.load(self.prefix + ".expected.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files if not k.startswith("__")}

    @cached_property
    def strings(self) -> dict[str, np.ndarray]:
        """Every string tensor TF read back, as object arrays of ``bytes``."""
        path = self.prefix + ".strings.json"
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        out = {}
        for key, spec in raw.items():
            flat = np.empty(len(spec["base64"]), dtype=object)
            flat[:] = [base64.b64decode(b) for b in spec["base64"]]
            out[key] = flat.reshape(spec["shape"])
        return out

    @property
    def object_graph(self) -> bytes | None:
        b64 = self.meta.get("object_graph_b64")
        return base64.b64decode(b64) if b64 else None

    @property
    def files(self) -> list[str]:
        return sorted(self.meta["files"])

    def copy_to(self, directory: str) -> str:
        """Copy the bundle files and state file into ``directory``; returns the new prefix."""
        os.makedirs(directory, exist_ok=True)
        for name in self.files + ["checkpoint"]:
            dst = os.path.join(directory, name)
            shutil.copyfile(os.path.join(self.directory, name), dst)
            os.chmod(dst, 0o644)
        return os.path.join(directory, self.name)


GOLDENS = [
    Golden("keras2_adam", "ckpt-1"),
    Golden("tf1_name_based", "model.ckpt-2"),
    Golden("dtype_zoo", "ckpt-1"),
    Golden("partitioned", "model.ckpt"),
    Golden("ckpt_manager", "step-30"),
    Golden("ckpt_manager", "step-40"),
]
BY_ID = {g.id: g for g in GOLDENS}


def expected_tensor(g: Golden, key: str) -> torch.Tensor | np.ndarray:
    """What ``CheckpointReader.get_tensor`` must return for ``key`` (strings stay numpy)."""
    if key in g.strings:
        return g.strings[key]
    array = g.numeric[key]
    if g.meta["dtypes"][key] == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality (NaN payloads and -0.0 included), dtype and shape too."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return _raw(a) == _raw(b)


def _raw(t: torch.Tensor) -> bytes:
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).numpy()) if t.numel() else b""
