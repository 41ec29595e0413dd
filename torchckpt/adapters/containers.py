"""Adapters for Python containers: dicts and lists, like TF's tracked containers.

A ``dict`` with string keys has one child per key; a ``list``/``tuple`` one
child per index (``"0"``, ``"1"``, ...), as ``tf.Module`` tracks them. Numbers
inside are wrapped in :class:`~.values.ValueSlot` so a restore can store the
new value back into the container.
"""

from __future__ import annotations

from typing import Any

from ..errors import UntrackableError
from .registry import Adapter
from .values import ValueSlot, is_python_scalar


def wrap_child(container: Any, key: Any, value: Any) -> Any:
    """The graph object for ``container[key]``: the value, or a slot for a number."""
    return ValueSlot(container, key) if is_python_scalar(value) else value


class DictAdapter(Adapter):
    def children(self) -> list[tuple[str, Any]]:
        out = []
        for k, v in self.obj.items():
            if not isinstance(k, str):
                raise UntrackableError(f"dict key {k!r} is not a string; only str-keyed dicts "
                                       "can be tracked")
            if v is not None:
                out.append((k, wrap_child(self.obj, k, v)))
        return out

    def child(self, name: str) -> Any | None:
        v = self.obj.get(name)
        return None if v is None else wrap_child(self.obj, name, v)


class ListAdapter(Adapter):
    def children(self) -> list[tuple[str, Any]]:
        return [(str(i), wrap_child(self.obj, i, v)) for i, v in enumerate(self.obj)
                if v is not None]

    def child(self, name: str) -> Any | None:
        if not name.isdigit() or int(name) >= len(self.obj):
            return None
        v = self.obj[int(name)]
        return None if v is None else wrap_child(self.obj, int(name), v)
