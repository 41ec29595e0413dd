"""Adapters for values: tensors and parameters, Python numbers, ``torch.Generator``.

A tensor is a TF *variable*: one node with one attribute, ``VARIABLE_VALUE``.
Restoring copies into the existing tensor, so its identity, device and
``requires_grad`` stay (optimizers and tied modules keep pointing at it). A
tensor on the meta device is materialized from the checkpoint instead, with
``torch.utils.swap_tensors`` so that every reference to it sees the new data.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from ..errors import InvalidValueError, MismatchError, UntrackableError
from ..graph.keys import PY_STATE_KEY, VARIABLE_VALUE_KEY
from .registry import Adapter, ValueSource
from .schema import describe, generator_state
from .tensors import torch_dtype_or_name


def is_uninitialized(t: Any) -> bool:
    """True for a lazy module's parameter or buffer that has no shape yet."""
    return isinstance(t, (UninitializedParameter, UninitializedBuffer))


def holds_data(t: Any) -> bool:
    """False for a tensor that has no values yet: on the meta device, or lazy."""
    if type(t) in _NEVER_LAZY:  # the usual case, without the isinstance tests
        return not t.is_meta
    return not (isinstance(t, torch.Tensor) and (t.is_meta or is_uninitialized(t)))


_NEVER_LAZY = (torch.Tensor, torch.nn.Parameter)  # exact types: lazy ones are subclasses


def check_compatible(dest: torch.Tensor, src: ValueSource) -> None:
    """Raise ``MismatchError`` unless ``src`` has ``dest``'s shape and dtype."""
    saved_dtype = torch_dtype_or_name(src.dtype)
    if tuple(dest.shape) != tuple(src.shape):
        raise MismatchError(src.key, "shape", saved=list(src.shape), live=list(dest.shape))
    if dest.dtype != saved_dtype:
        raise MismatchError(src.key, "dtype", saved=saved_dtype, live=dest.dtype)


def assign_tensor(dest: torch.Tensor, src: ValueSource) -> None:
    """Put ``src``'s value into ``dest`` in place (materializing meta tensors)."""
    check_compatible(dest, src)
    if dest.is_meta:
        fresh = src.tensor()
        if isinstance(dest, torch.nn.Parameter):
            fresh = torch.nn.Parameter(fresh, requires_grad=dest.requires_grad)
        torch.utils.swap_tensors(dest, fresh)
        return
    with torch.no_grad():
        src.copy_into(dest)


class TensorAdapter(Adapter):
    """``torch.Tensor`` / ``nn.Parameter`` / buffers."""

    holds_values = True

    is_variable = True

    def values(self) -> dict[str, torch.Tensor | str]:
        t = self.obj
        if is_uninitialized(t) or t.is_meta:
            return {}  # nothing to save yet; its node still exists
        return {VARIABLE_VALUE_KEY: t}

    def restore(self, values: dict[str, ValueSource]) -> None:
        src = values.get(VARIABLE_VALUE_KEY)
        if src is not None:
            assign_tensor(self.obj, src)


def plain_tensor_types(registry: Any) -> frozenset[type]:
    """Of ``torch.Tensor`` and ``nn.Parameter``, the types ``registry`` (an
    :class:`~.registry.AdapterRegistry`) gives the plain :class:`TensorAdapter` (a user may
    register another): their objects are saved and restored without an adapter object."""
    samples = (torch.empty(0), torch.nn.Parameter(torch.empty(0)))
    return frozenset(type(t) for t in samples if registry.find(t) is TensorAdapter)


class ValueSlot:
    """A Python number (or string) held in a container under ``key``.

    Numbers are immutable, so restoring one means storing the new value back
    into its container; the slot remembers where. Two slots are the same node
    when they name the same place.
    """

    def __init__(self, container: Any, key: Any, setter: Any = None) -> None:
        self.container = container
        self.key = key
        self._setter = setter

    @property
    def identity(self) -> tuple[int, Any]:
        return (id(self.container), self.key)

    def get(self) -> Any:
        if isinstance(self.container, (dict, list)):
            return self.container[self.key]
        return getattr(self.container, self.key)

    def set(self, value: Any) -> None:
        if self._setter is not None:
            self._setter(value)
        elif isinstance(self.container, tuple):
            if self.container[self.key] != value:
                raise UntrackableError(f"cannot restore {value!r} into element {self.key} of a "
                                       "tuple (tuples are immutable); use a list")
        elif isinstance(self.container, (dict, list)):
            self.container[self.key] = value
        else:
            setattr(self.container, self.key, value)


_SCALAR_DTYPES = {bool: torch.bool, int: torch.int64, float: torch.float64}
_KIND = {bool: "a bool", int: "an int", float: "a real number", str: "a string"}


def is_python_scalar(value: Any) -> bool:
    return type(value) in _SCALAR_DTYPES or isinstance(value, str)


def _holds(kind: type, dtype: torch.dtype) -> bool:
    """Whether a 0-d tensor of ``dtype`` is a value for a Python ``kind`` attribute: a
    bool only from bool, an int only from an integer type, a float from either numeric
    kind (never complex: ``int(1j)`` and ``float(1j)`` are errors, not values)."""
    integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    if kind is bool:
        return dtype == torch.bool
    if kind is int:
        return integer
    return kind is float and (integer or dtype.is_floating_point)


class ScalarAdapter(Adapter):
    """A Python ``int``/``float``/``bool`` as a 0-d variable; a ``str`` as py_state."""

    holds_values = True

    is_variable = True

    def values(self) -> dict[str, torch.Tensor | str]:
        v = self.obj.get()
        if isinstance(v, str):
            return {PY_STATE_KEY: json.dumps(v)}
        return {VARIABLE_VALUE_KEY: torch.tensor(v, dtype=_SCALAR_DTYPES[type(v)])}

    def restore(self, values: dict[str, ValueSource]) -> None:
        """Set the attribute to the saved value if it is of the live value's kind (the
        table in ``schema``: an int from an integer type only, a str from a JSON string
        only; floats may be inf or NaN, which a Python float attribute can hold).

        Raises:
            InvalidValueError: the saved value is of another kind; nothing is set.
        """
        current = self.obj.get()
        kind = str if isinstance(current, str) else type(current)
        if PY_STATE_KEY in values:
            source = values[PY_STATE_KEY]
            value = source.json()
            if kind is not str or not isinstance(value, str):
                raise InvalidValueError(f"expected {_KIND[kind]}, found {describe(value)}",
                                        path=source.path, key=source.key)
            self.obj.set(value)
            return
        src = values.get(VARIABLE_VALUE_KEY)
        if src is None:
            return
        if src.shape != ():
            raise MismatchError(src.key, "shape", saved=list(src.shape), live=[])
        dtype = torch_dtype_or_name(src.dtype)
        if not isinstance(dtype, torch.dtype) or not _holds(kind, dtype):
            found = str(dtype).replace("torch.", "")
            raise InvalidValueError(f"expected {_KIND[kind]}, found a scalar of dtype {found}",
                                    path=src.path, key=src.key)
        value = src.tensor("cpu").item()
        self.obj.set(float(value) if kind is float else value)


class GeneratorAdapter(Adapter):
    """``torch.Generator``: its state bytes as a uint8 variable."""

    holds_values = True

    is_variable = True

    def values(self) -> dict[str, torch.Tensor | str]:
        return {VARIABLE_VALUE_KEY: self.obj.get_state()}

    def restore(self, values: dict[str, ValueSource]) -> None:
        src = values.get(VARIABLE_VALUE_KEY)
        if src is not None:
            check_compatible(self.obj.get_state(), src)
            state = src.tensor("cpu")
            try:
                generator_state(state, "", self.obj.device)
            except InvalidValueError as exc:
                raise exc.located(src.path, src.key) from exc.__cause__
            self.obj.set_state(state)
