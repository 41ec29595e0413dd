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

Per-rank: with a process group of more than one rank, each rank's generators
are saved under its own child, ``rng/rank_<r>_of_<W>/...``, and restored into
the same rank on a world of the same size (``distributed/per_rank.py``);
without one, the values sit on the node itself, as in the table above.

Not thread-safe in the sense that matters: the generators are process-global,
so capture and restore while no other thread draws from them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .adapters import default_registry
from .adapters.schema import as_int, as_real, as_tensor, generator_state, refuse
from .adapters.stateful import StatefulAdapter
from .distributed.per_rank import per_rank_adapter
from .errors import InvalidValueError, TorchckptError

__all__ = ["RNGState", "HostRNGSnapshot", "capture_host_rng", "apply_host_rng",
           "check_host_rng"]

_MT_WORDS = 624  # MT19937 state words, shared by numpy's RandomState and CPython's random
_WORD_END = 2 ** 32  # words are uint32 (stored widened to int64)


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
    def from_state_dict(cls, sd: dict[str, Any], field: str = "") -> HostRNGSnapshot:
        """The snapshot ``sd`` describes, checked by :func:`check_host_rng` first.

        Raises:
            InvalidValueError: ``sd`` is not a valid state (``field`` locates it in
                an enclosing state, for the message).
        """
        check_host_rng(sd, field)
        return cls(_as_bytes_tensor(sd["torch"]), dict(sd["numpy"]), dict(sd["python"]))


def check_host_rng(sd: Any, field: str = "") -> None:
    """Refuse anything but a state the three generators take exactly as it is.

    ``torch``: a uint8 tensor of the size of torch's CPU generator state, which a
    scratch generator accepts. ``numpy``: ``key`` an int64 tensor of 624 words in
    [0, 2**32), ``pos`` in [0, 624] (numpy does not check it, and reads its key at
    ``pos``), ``has_gauss`` 0 or 1, ``cached_gaussian`` finite. ``python``:
    ``version`` this Python's (3), ``internal`` an int64 tensor of 624 words and an
    index in [0, 624], ``gauss_next`` None or finite. Nothing is set.

    Raises:
        InvalidValueError: naming the field, expected and found.
    """
    parts = _fields(sd, field, ("torch", "numpy", "python"), "a dict of generator states")
    generator_state(sd["torch"], parts["torch"])
    numpy_sd = sd["numpy"]
    sub = _fields(numpy_sd, parts["numpy"], ("key", "pos", "has_gauss", "cached_gaussian"),
                  "numpy's RandomState as a dict")
    _words(numpy_sd["key"], sub["key"], _MT_WORDS)
    as_int(numpy_sd["pos"], sub["pos"], 0, _MT_WORDS)
    as_int(numpy_sd["has_gauss"], sub["has_gauss"], 0, 1)
    as_real(numpy_sd["cached_gaussian"], sub["cached_gaussian"])
    python_sd = sd["python"]
    sub = _fields(python_sd, parts["python"], ("version", "internal", "gauss_next"),
                  "Python's random state as a dict")
    version = random.getstate()[0]
    as_int(python_sd["version"], sub["version"], version, version)
    internal = _words(python_sd["internal"], sub["internal"], _MT_WORDS + 1)
    if not 0 <= int(internal[-1]) <= _MT_WORDS:
        refuse(f"{sub['internal']}[{_MT_WORDS}]", f"an index in [0, {_MT_WORDS}]",
               int(internal[-1]))
    if python_sd["gauss_next"] is not None:
        as_real(python_sd["gauss_next"], sub["gauss_next"])


def _fields(sd: Any, field: str, names: tuple[str, ...], what: str) -> dict[str, str]:
    """Each of ``names``' field path; refuses a non-dict or a missing name."""
    if not isinstance(sd, dict):
        refuse(field, what, sd)
    paths = {name: f"{field}.{name}" if field else name for name in names}
    for name in names:
        if name not in sd:
            raise InvalidValueError("missing", field=paths[name])
    return paths


def _words(t: Any, field: str, count: int) -> torch.Tensor:
    """An int64 tensor of ``count`` MT19937 words (the last may be an index, checked by
    the caller): every word but that one in [0, 2**32)."""
    as_tensor(t, field, dtype=torch.int64, shape=(count,))
    words = t[:_MT_WORDS]
    if bool((words < 0).any()) or bool((words >= _WORD_END).any()):
        bad = int(words[(words < 0) | (words >= _WORD_END)][0])
        refuse(field, f"words in [0, {_WORD_END})", bad)
    return t


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
    It is per-rank: under ``torch.distributed`` each rank saves and restores its
    own generators (see the module docstring).

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
        """Set the generators to ``state_dict`` (from :meth:`state_dict`, possibly restored).

        Every state is checked before any generator is set (:func:`check_host_rng`;
        each CUDA state must be a uint8 tensor, and for a device that exists here, one
        that device's generator accepts), so a refused state changes nothing.

        Raises:
            InvalidValueError: a state of the wrong type, size or content.
        """
        snapshot = HostRNGSnapshot.from_state_dict(state_dict)
        cuda = _checked_cuda(state_dict.get("cuda", []))
        apply_host_rng(snapshot)
        for device, st in enumerate(cuda):
            torch.cuda.set_rng_state(_as_bytes_tensor(st), device)

    def __repr__(self) -> str:
        return "RNGState()"


def _checked_cuda(states: Any) -> list[torch.Tensor]:
    """The CUDA states to set: one per device that exists here, each checked."""
    if not isinstance(states, (list, tuple)):
        refuse("cuda", "a list of CUDA generator states", states)
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = []
    for device, st in enumerate(states):
        if device < devices:
            out.append(generator_state(st, f"cuda[{device}]", f"cuda:{device}"))
        else:  # no such device here: ignored, as the module doc says
            as_tensor(st, f"cuda[{device}]", dtype=torch.uint8)
    return out


default_registry.register(RNGState, per_rank_adapter(StatefulAdapter))
