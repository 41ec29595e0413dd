"""``nn.Module``: submodules, parameters and persistent buffers as named children.

Children are listed in ``state_dict`` order: parameters, persistent buffers,
then submodules, each under its attribute name. A parameter shared by two
modules is one object and therefore one node with two edges, so it stays tied
after a restore.

Deferred values wait through public torch hooks only: the global module,
parameter and buffer *registration* hooks (a child attached later), and a
forward pre-hook registered after the lazy module's own, so values land the
moment a lazy parameter is materialized and before that forward uses it. Every
hook is removed as soon as its value has landed.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn.modules import module as _module_hooks

from .registry import Adapter, Handle
from .values import is_uninitialized


class ModuleAdapter(Adapter):
    def children(self) -> list[tuple[str, Any]]:
        m = self.obj
        out: list[tuple[str, Any]] = [(n, p) for n, p in m._parameters.items() if p is not None]
        out += [(n, b) for n, b in m._buffers.items()
                if b is not None and n not in m._non_persistent_buffers_set]
        out += [(n, c) for n, c in m._modules.items() if c is not None]
        return out

    def child(self, name: str) -> Any | None:
        m = self.obj
        for table in (m._parameters, m._modules):
            if table.get(name) is not None:
                return table[name]
        if m._buffers.get(name) is not None and name not in m._non_persistent_buffers_set:
            return m._buffers[name]
        return None

    def child_ready(self, name: str, obj: Any) -> bool:
        return not is_uninitialized(obj)

    def watch(self, name: str, callback: Callable[[Any], None]) -> Handle | None:
        return _ChildWatch(self.obj, name, callback, self.child_ready)


class _ChildWatch:
    """Fires ``callback(child)`` once ``module.<name>`` exists and is ready."""

    def __init__(self, module: nn.Module, name: str, callback: Callable[[Any], None],
                 ready: Callable[[str, Any], bool]) -> None:
        self._module = module
        self._name = name
        self._callback = callback
        self._ready = ready
        self._handles = [
            _module_hooks.register_module_module_registration_hook(self._on_register),
            _module_hooks.register_module_parameter_registration_hook(self._on_register),
            _module_hooks.register_module_buffer_registration_hook(self._on_register),
            module.register_forward_pre_hook(self._on_forward),
        ]

    def _on_register(self, module: nn.Module, name: str, value: Any) -> None:
        if module is self._module and name == self._name and value is not None:
            self._fire(value)

    def _on_forward(self, module: nn.Module, args: Any) -> None:
        value = ModuleAdapter(module).child(self._name)
        if value is not None:
            self._fire(value)

    def _fire(self, value: Any) -> None:
        if self._handles and self._ready(self._name, value):
            self.remove()
            self._callback(value)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def is_module(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module)
