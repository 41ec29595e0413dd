"""Objects with ``state_dict()``/``load_state_dict()``: LR schedulers, ``GradScaler``,
data loaders, RNG state, user classes (the :class:`~.registry.Checkpointable` protocol).

The state dict is split in two, with no pickle: its tensors become attributes
``tensor_0``, ``tensor_1``, ... (TF variables that TensorFlow can list and read),
and everything else becomes a JSON string attribute ``py_state`` (TF's
``PythonState`` convention) in which each tensor is a ``{"__tensor__": i}``
placeholder. Dicts with non-string keys and tuples are tagged so that they come
back as they went in.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from ..errors import UntrackableError
from ..graph.keys import PY_STATE_KEY
from .registry import Adapter, ValueSource

TENSOR_ATTRIBUTE = "tensor_{}"


def encode_state(state: Any, path: str = "state") -> tuple[str, list[torch.Tensor]]:
    """JSON text with tensor placeholders, and the tensors in placeholder order."""
    tensors: list[torch.Tensor] = []

    def enc(v: Any, where: str) -> Any:
        if isinstance(v, torch.Tensor):
            tensors.append(v)
            return {"__tensor__": len(tensors) - 1}
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"__float__": repr(v)}
        if isinstance(v, dict):
            if all(isinstance(k, str) for k in v) and "__tensor__" not in v:
                return {k: enc(x, f"{where}.{k}") for k, x in v.items()}
            return {"__dict__": [[enc(k, where), enc(x, f"{where}[{k!r}]")] for k, x in v.items()]}
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [enc(x, f"{where}[{i}]") for i, x in enumerate(v)]
        raise UntrackableError(f"{where} is a {type(v).__name__}, which cannot be saved without "
                               "pickle; use tensors, numbers, strings, lists and dicts")

    return json.dumps(enc(state, path), sort_keys=False, allow_nan=False), tensors


def decode_state(text: str, tensors: list[torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`."""

    def dec(v: Any) -> Any:
        if isinstance(v, list):
            return [dec(x) for x in v]
        if isinstance(v, dict):
            if "__tensor__" in v and len(v) == 1:
                return tensors[v["__tensor__"]]
            if "__float__" in v and len(v) == 1:
                return float(v["__float__"])
            if "__tuple__" in v and len(v) == 1:
                return tuple(dec(x) for x in v["__tuple__"])
            if "__dict__" in v and len(v) == 1:
                return {_hashable(dec(k)): dec(x) for k, x in v["__dict__"]}
            return {k: dec(x) for k, x in v.items()}
        return v

    return dec(json.loads(text))


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


class StatefulAdapter(Adapter):
    """Any object with ``state_dict()`` and ``load_state_dict()``."""

    holds_values = True

    def values(self) -> dict[str, torch.Tensor | str]:
        text, tensors = encode_state(self.obj.state_dict(), type(self.obj).__name__)
        out: dict[str, torch.Tensor | str] = {TENSOR_ATTRIBUTE.format(i): t
                                              for i, t in enumerate(tensors)}
        out[PY_STATE_KEY] = text
        return out

    def restore(self, values: dict[str, ValueSource]) -> None:
        if PY_STATE_KEY not in values:
            return
        tensors = []
        i = 0
        while TENSOR_ATTRIBUTE.format(i) in values:
            tensors.append(values[TENSOR_ATTRIBUTE.format(i)].tensor("cpu"))
            i += 1
        self.obj.load_state_dict(decode_state(values[PY_STATE_KEY].text(), tensors))
