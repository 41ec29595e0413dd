"""``nn.Module``: submodules, parameters and persistent buffers as named children.

Children are listed in ``state_dict`` order: parameters, persistent buffers,
then submodules, each under its attribute name. A parameter shared by two
modules is one object and therefore one node with two edges, so it stays tied
after a restore.

Deferred values wait through public torch hooks only: the global module,
parameter and buffer *registration* hooks (a child attached later), and a
forward pre-hook registered after the lazy module's own, so values land the
moment a lazy parameter is materialized and before that forward uses it.

A lazy module that still has uninitialized parameters is not ready as a whole:
its first forward calls ``reset_parameters()``, which would overwrite values
restored before it (``num_batches_tracked`` of ``LazyBatchNorm*``, or a bias a
lazy module creates eagerly), so all of its children wait for that forward.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, cast

from torch import Tensor, nn
from torch.nn.modules import module as _module_hooks
from torch.nn.modules.lazy import LazyModuleMixin

from .registry import Adapter, Handle
from .values import is_uninitialized

# children of these exact types are never lazy placeholders (a quick answer for the
# many parameters of a model)
_NEVER_LAZY = (nn.Parameter, Tensor)


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
        m = self.obj
        if isinstance(m, LazyModuleMixin) and cast(Any, m).has_uninitialized_params():
            return False  # its first forward resets every parameter and buffer
        return type(obj) in _NEVER_LAZY or not is_uninitialized(obj)

    def watch(self, name: str, callback: Callable[[Any], None]) -> Handle | None:
        return _ChildWatch(self.obj, name, callback, self.child_ready)


class RegistrationWatches:
    """Routes torch's global module/parameter/buffer registration hooks to watches.

    torch runs these hooks in a loop over a dict it does not copy, so no hook may
    add or remove a torch hook while it runs (``RuntimeError: OrderedDict mutated
    during iteration``), and a value landing inside one may well create new
    watches. So one trio of torch hooks serves every watch: watches come and go
    in this object's own table, which is safe to change at any time. The trio is
    installed with the first watch and removed once there are none, at the next
    call made outside a registration hook (:meth:`add`, :meth:`sweep`); until
    then it only does a dict lookup.

    The table holds watches weakly, so an abandoned restore (say, checkpoint
    values for a head the live model never gets) does not keep the model alive
    through torch's process-wide hook dicts: a watch lives as long as the module
    it watches (its forward pre-hook holds it) or the restore that made it.

    Not thread-safe, like module registration itself.
    """

    def __init__(self) -> None:
        self._watches: dict[tuple[int, str], list[weakref.ref[_ChildWatch]]] = {}
        self._handles: list[Any] = []
        self._dispatching = 0
        self._dead = 0  # watches that died since the last scan (counted by weakref callbacks)

    def add(self, watch: _ChildWatch) -> None:
        self.sweep()
        self._watches.setdefault((id(watch.module), watch.name), []).append(
            weakref.ref(watch, self._died))
        if not self._handles:
            self._handles = [
                _module_hooks.register_module_module_registration_hook(self._on_register),
                _module_hooks.register_module_parameter_registration_hook(self._on_register),
                _module_hooks.register_module_buffer_registration_hook(self._on_register),
            ]

    def discard(self, watch: _ChildWatch) -> None:
        key = (id(watch.module), watch.name)
        refs = [r for r in self._watches.get(key, []) if r() is not None and r() is not watch]
        if refs:
            self._watches[key] = refs
        else:
            self._watches.pop(key, None)
        self.sweep()

    def _died(self, _ref: weakref.ref) -> None:
        self._dead += 1

    def sweep(self) -> None:
        """Forget dead watches; remove the torch hooks if none is left (never inside one).

        The table is scanned only once at least half as many watches died since the
        last scan as it has entries (so always once all are dead): every watch adds
        and fires with a sweep, and a scan each time made thousands of watches
        quadratic.
        """
        if self._dispatching:
            return
        if self._dead and 2 * self._dead >= len(self._watches):
            self._dead = 0
            for key in [k for k, refs in self._watches.items()
                        if all(r() is None for r in refs)]:
                del self._watches[key]
        if not self._watches and self._handles:
            for h in self._handles:
                h.remove()
            self._handles = []

    @property
    def installed(self) -> bool:
        return bool(self._handles)

    def _on_register(self, module: nn.Module, name: str, value: Any) -> None:
        refs = self._watches.get((id(module), name))
        if not refs or value is None:
            return
        self._dispatching += 1
        try:
            for ref in list(refs):
                watch = ref()
                if watch is not None and watch.module is module:
                    watch.offer(value)
        finally:
            self._dispatching -= 1


#: The watches of every restore in this process (torch's registration hooks are global).
default_watches = RegistrationWatches()


class _ChildWatch:
    """Fires ``callback(child)`` once, when ``module.<name>`` exists and is ready."""

    def __init__(self, module: nn.Module, name: str, callback: Callable[[Any], None],
                 ready: Callable[[str, Any], bool],
                 watches: RegistrationWatches = default_watches) -> None:
        self.module = module
        self.name = name
        self._callback = callback
        self._ready = ready
        self._watches = watches
        # forward pre-hooks are copied before they run, so removing one inside is safe
        self._forward = module.register_forward_pre_hook(self._on_forward)
        self._open = True
        watches.add(self)

    def _on_forward(self, module: nn.Module, args: Any) -> None:
        value = ModuleAdapter(module).child(self.name)
        if value is not None:
            self.offer(value)
        self._watches.sweep()

    def offer(self, value: Any) -> None:
        """Fire if ``value`` can take its checkpoint values now."""
        if self._open and self._ready(self.name, value):
            self.remove()
            self._callback(value)

    def remove(self) -> None:
        if self._open:
            self._open = False
            self._forward.remove()
            self._watches.discard(self)
