"""``RNGState``: the process's random number generators as a checkpointable object.

``Checkpoint(rng=torchckpt.RNGState())`` saves and restores, with no pickle:

=================  ==========================================================
key                value
=================  ==========================================================
``torch``          ``torch.get_rng_state()``: uint8 tensor (5056 bytes, MT19937
                   plus the cached normal), the default CPU generator
``cuda``           list with one uint8 tensor per CUDA device
                   (``torch.cuda.get_rng_state_all()``); empty without CUDA
``numpy``          numpy's global ``RandomState``: ``{"key": int64 tensor [624],
                   "pos": int, "has_gauss": int, "cached_gaussian": float}``
``python``         ``random.getstate()``: ``{"version": int, "internal": int64
                   tensor [625], "gauss_next": float | None}``
=================  ==========================================================

MT19937 words are uint32; they are stored widened to int64 because every
framework reading the checkpoint (TensorFlow included) has int64 tensors.

Restoring onto a machine with fewer CUDA devices (or none) restores the devices
that exist and ignores the rest, so that a run saved on a GPU box can continue
its CPU-side randomness elsewhere; the CPU, numpy and Python states always
restore exactly.

Not thread-safe in the sense that matters: the generators are process-global,
so capture and restore while no other thread draws from them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import TorchckptError

__all__ = ["RNGState", "HostRNGSnapshot", "capture_host_rng", "apply_host_rng"]

_MT_WORDS = 624  # MT19937 state words, shared by numpy's RandomState and CPython's random


@dataclass(frozen=True)
class HostRNGSnapshot:
    """The CPU-side global generators at one moment (torch CPU, numpy, Python)."""

    torch_state: torch.Tensor
    numpy_state: dict[str, Any]
    python_state: dict[str, Any]

    def to_state_dict(self) -> dict[str, Any]:
        return {"torch": self.torch_state, "numpy": dict(self.numpy_state),
                "python": dict(self.python_state)}

    @classmethod
    def from_state_dict(cls, sd: dict[str, Any]) -> HostRNGSnapshot:
        return cls(_as_bytes_tensor(sd["torch"]), dict(sd["numpy"]), dict(sd["python"]))


def capture_host_rng() -> HostRNGSnapshot:
    """Snapshot torch's default CPU generator, numpy's and Python's global generators."""
    return HostRNGSnapshot(torch.get_rng_state(), _numpy_state(), _python_state())


def apply_host_rng(snap: HostRNGSnapshot) -> None:
    """Put the three global generators back to ``snap``."""
    torch.set_rng_state(snap.torch_state)
    _set_numpy_state(snap.numpy_state)
    _set_python_state(snap.python_state)


def _as_bytes_tensor(t: Any) -> torch.Tensor:
    """A contiguous CPU uint8 tensor, as the generator setters require."""
    if not isinstance(t, torch.Tensor):
        raise TorchckptError(f"a generator state must be a uint8 tensor, got {type(t).__name__}")
    return t.detach().to(device="cpu", dtype=torch.uint8).contiguous()


def _numpy_state() -> dict[str, Any]:
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    if name != "MT19937":  # numpy's global RandomState has always been MT19937
        raise TorchckptError(f"numpy's global generator is {name!r}, expected 'MT19937'")
    return {"key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(sd: dict[str, Any]) -> None:
    key = torch.as_tensor(sd["key"]).to(torch.int64).numpy().astype(np.uint32)
    if key.shape != (_MT_WORDS,):
        raise TorchckptError(f"numpy MT19937 key must have {_MT_WORDS} words, got shape "
                             f"{tuple(key.shape)}")
    np.random.set_state(("MT19937", key, int(sd["pos"]), int(sd["has_gauss"]),
                         float(sd["cached_gaussian"])))


def _python_state() -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    return {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next}


def _set_python_state(sd: dict[str, Any]) -> None:
    internal = tuple(int(x) for x in torch.as_tensor(sd["internal"]).tolist())
    gauss = sd["gauss_next"]
    random.setstate((int(sd["version"]), internal, None if gauss is None else float(gauss)))


class RNGState:
    """The process's generators: torch CPU, CUDA (when available), numpy, Python ``random``.

    Track it in a checkpoint to make a resumed run draw the same random numbers
    (dropout masks, augmentations, shuffles) as one that never stopped. The
    state is read when the checkpoint is saved, not when this object is made.

    Example:
        >>> import random, torch
        >>> rng = RNGState()
        >>> sd = rng.state_dict()
        >>> a = (torch.rand(2), random.random())
        >>> rng.load_state_dict(sd)
        >>> b = (torch.rand(2), random.random())
        >>> bool(torch.equal(a[0], b[0])) and a[1] == b[1]
        True
    """

    def state_dict(self) -> dict[str, Any]:
        """The generators' states now, as tensors and JSON-able values (see the module doc)."""
        sd = capture_host_rng().to_state_dict()
        sd["cuda"] = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Set the generators to ``state_dict`` (from :meth:`state_dict`, possibly restored)."""
        apply_host_rng(HostRNGSnapshot.from_state_dict(state_dict))
        cuda = list(state_dict.get("cuda", []))
        if cuda and torch.cuda.is_available():
            for device, st in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(_as_bytes_tensor(st), device)

    def __repr__(self) -> str:
        return "RNGState()"
