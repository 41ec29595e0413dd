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

from ..errors import CorruptCheckpointError, InvalidValueError, TorchckptError, UntrackableError
from ..graph.keys import PY_STATE_KEY
from .owners import check_known_state
from .registry import Adapter, ValueSource
from .tensors import torch_dtype_or_name

TENSOR_ATTRIBUTE = "tensor_{}"
# A one-key JSON object with one of these keys is a tag; a user dict that looks
# like one is written in the tagged "__dict__" form so it comes back as itself.
_TAGS = frozenset({"__tensor__", "__float__", "__tuple__", "__dict__"})


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
            if all(isinstance(k, str) for k in v) and not (len(v) == 1 and set(v) <= _TAGS):
                return {k: enc(x, f"{where}.{k}") for k, x in v.items()}
            return {"__dict__": [[enc(k, where), enc(x, f"{where}[{k!r}]")] for k, x in v.items()]}
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [enc(x, f"{where}[{i}]") for i, x in enumerate(v)]
        raise UntrackableError(f"{where} is a {type(v).__name__}, which cannot be saved without "
                               "pickle; use tensors, numbers, strings, lists and dicts")

    return json.dumps(enc(state, path), sort_keys=False, allow_nan=False), tensors


def decode_state(data: Any, tensors: list[torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`, from the parsed JSON.

    The tags only rebuild containers and look tensors up by index; the data
    cannot name anything to import or call (a ``"__reduce__"`` key is a key).

    Raises:
        ValueError: a malformed tag (a forged or damaged file).
    """

    def dec(v: Any) -> Any:
        if isinstance(v, list):
            return [dec(x) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (tag, body), = v.items()
            if tag == "__tensor__":
                if type(body) is not int or not 0 <= body < len(tensors):
                    raise ValueError(f"tensor placeholder {body!r} is not an index below "
                                     f"{len(tensors)}")
                return tensors[body]
            if tag == "__float__":
                if not isinstance(body, str):
                    raise ValueError(f"float placeholder {body!r} is not a string")
                return float(body)
            if tag == "__tuple__":
                return tuple(dec(x) for x in _list(body, tag))
            if tag == "__dict__":
                pairs = [_list(p, "__dict__ item") for p in _list(body, tag)]
                if any(len(p) != 2 for p in pairs):
                    raise ValueError("__dict__ items must be [key, value] pairs")
                try:
                    return {_hashable(dec(k)): dec(x) for k, x in pairs}
                except TypeError as exc:  # an unhashable key
                    raise ValueError(f"bad __dict__ key: {exc}") from exc
        return {k: dec(x) for k, x in v.items()}

    try:
        return dec(data)
    except RecursionError as exc:
        raise ValueError("python state nested too deeply") from exc


def _list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise ValueError(f"{what} must be a list, found {type(v).__name__}")
    return v


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def read_state(values: dict[str, ValueSource]) -> Any:
    """The state :func:`encode_state` saved as ``py_state`` + ``tensor_i`` attributes.

    Raises:
        CorruptCheckpointError: ``py_state`` is not JSON, or its tags are malformed.
    """
    source = values[PY_STATE_KEY]
    data = source.json()
    tensors: list[torch.Tensor] = []
    while TENSOR_ATTRIBUTE.format(len(tensors)) in values:
        value = values[TENSOR_ATTRIBUTE.format(len(tensors))]
        if not isinstance(torch_dtype_or_name(value.dtype), torch.dtype):
            raise InvalidValueError(f"expected a tensor, found {torch_dtype_or_name(value.dtype)}",
                                    path=value.path, key=value.key)
        tensors.append(value.tensor("cpu"))
    try:
        return decode_state(data, tensors)
    except ValueError as exc:
        raise CorruptCheckpointError(source.path, f"malformed python state: {exc}",
                                     key=source.key) from exc


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
        """Check the saved state (torch's schedulers and ``GradScaler``: ``owners``), then
        hand it to ``load_state_dict``.

        This is where the file's data enters the object, so the built-in errors that a
        ``load_state_dict`` raises for data it refuses (``ValueError``, ``TypeError``,
        ``KeyError``, ``IndexError``, ``OverflowError``, ``RuntimeError``,
        ``MemoryError``) become an :class:`InvalidValueError` naming the key, chained to
        the original; other errors (``AttributeError``, ``NameError``: bugs, not data)
        propagate as they are.

        Raises:
            InvalidValueError: the state was refused, by the checks or by the object.
        """
        if PY_STATE_KEY not in values:
            return
        source = values[PY_STATE_KEY]
        state = read_state(values)
        owner = type(self.obj).__name__
        try:
            self.obj.load_state_dict(check_known_state(self.obj, state))
        except InvalidValueError as exc:
            if exc.key is not None:
                raise
            raise exc.located(source.path, source.key) from exc.__cause__
        except TorchckptError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, RuntimeError,
                MemoryError) as exc:
            raise InvalidValueError(f"{owner}.load_state_dict refused the saved state "
                                    f"({type(exc).__name__}: {exc})", path=source.path,
                                    key=source.key) from exc
