"""Adapters: how torchckpt sees a live object as a node of the object graph.

An adapter exposes an object's named *children* (other objects, each its own
node), its *values* (the tensors and JSON strings saved as the node's
attributes), how to *restore* those values, and, for optimizers, its *slot
variables*. Users never subclass anything: torch types are handled by the
built-in adapters, any object with ``state_dict()``/``load_state_dict()`` is
handled generically (the :class:`Checkpointable` protocol, like
``torch.distributed.checkpoint.stateful.Stateful``), and other types can be
taught with :meth:`AdapterRegistry.register`.

The registry is an explicit object with a default instance, not module state
that code mutates behind the caller's back.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import torch

from ..errors import InvalidValueError, UntrackableError
from ..format._fast_entries import PayloadLocation


@runtime_checkable
class Checkpointable(Protocol):
    """What a user class implements to be saved: torch's ``state_dict`` pair.

    ``state_dict()`` returns nested dicts/lists of tensors and JSON-able values;
    ``load_state_dict(state)`` receives the same structure with restored values.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


class Handle(Protocol):
    def remove(self) -> None: ...


class ValueSource(Protocol):
    """A saved value, read on demand (see ``torchckpt.restoring``).

    ``key`` is its checkpoint key and ``path`` the file it comes from (for
    error messages). ``text()``/``json()`` read string values (python state);
    they raise ``CorruptCheckpointError`` for anything but UTF-8 JSON and never
    unpickle or import anything.
    """

    key: str
    path: str
    dtype: int
    shape: tuple[int, ...]

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor: ...

    def copy_into(self, dest: torch.Tensor) -> None: ...

    def tensor_like(self, template: torch.Tensor) -> torch.Tensor:
        """A new tensor holding the value, laid out like ``template`` (a DTensor
        template gives a DTensor with its mesh and placements)."""
        ...

    def text(self) -> str: ...

    def json(self) -> Any: ...


class Adapter:
    """Base of the built-in adapters. ``obj`` is the live object."""

    #: whether this node's values are torch tensors saved under ``VARIABLE_VALUE``
    is_variable = False
    #: whether the object itself saves attributes (so it must match something on restore)
    holds_values = False

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def children(self) -> list[tuple[str, Any]]:
        """Named children in a fixed, documented order."""
        return []

    def child(self, name: str) -> Any | None:
        """The live child called ``name``, or None if it does not exist (yet)."""
        for n, o in self.children():
            if n == name:
                return o
        return None

    def child_ready(self, name: str, obj: Any) -> bool:
        """Whether ``obj`` can take values now (False for lazy, not-yet-shaped parameters)."""
        return True

    def values(self) -> dict[str, torch.Tensor | str]:
        """Attributes to save: tensors, or strings (JSON python state)."""
        return {}

    def restore(self, values: dict[str, ValueSource]) -> None:
        """Apply saved attribute values (in place where the object allows)."""

    def watch(self, name: str, callback: Callable[[Any], None]) -> Handle | None:
        """Call ``callback(child)`` once child ``name`` appears or becomes ready.

        Returns a handle to cancel, or None when this kind of object cannot
        announce new children (the value then stays pending).
        """
        return None

    def slot_variables(self) -> list[tuple[Any, str, torch.Tensor]]:
        """``(variable, slot name, slot tensor)`` triples (optimizers only)."""
        return []

    def restore_slot(self, variable: Any, slot_name: str, value: ValueSource,
                     done: Callable[[], None]) -> None:
        """Restore one slot of ``variable``; call ``done()`` once it is applied."""
        raise UntrackableError(f"{type(self.obj).__name__} has no slot variables")

    def slot_targets(self, variables: Sequence[Any], slot_names: Sequence[str],
                     locations: Sequence[PayloadLocation | None]) -> SlotTargets | None:
        """Where the saved slots at ``locations`` (their TF dtype and shape; ``None``: not
        a plain payload) can be read in place: a tensor that takes the saved value when
        it has the saved dtype and shape and is a plain host tensor (the restore checks
        these before it reads), where :meth:`restore_slot` would then accept the value
        and do no more than copy it there. One call for all the slots of a pass, so
        that a restore reads many slots in one batch; ``None``, or a ``None`` in
        :attr:`SlotTargets.tensors`, leaves a slot to :meth:`restore_slot`, as does a
        tensor the restore cannot read into."""
        return None


SlotCheck = Callable[[Sequence[int]], list[tuple[int, InvalidValueError]]]


class SlotTargets(NamedTuple):
    """Slots read in place: ``tensors[i]`` receives the saved value of slot ``i`` (``None``:
    not read in place). ``land``, when set, runs after the reads with the positions
    read: it checks their values and puts each accepted one where it belongs, puts the
    value each refused slot had back, and returns ``(position, InvalidValueError)`` of
    the refused ones, in order."""

    tensors: list[torch.Tensor | None]
    land: SlotCheck | None = None


AdapterFactory = Callable[[Any], Adapter]


class AdapterRegistry:
    """Maps types to adapter factories; the most specific registered type wins."""

    def __init__(self) -> None:
        self._by_type: list[tuple[type, AdapterFactory]] = []
        self._fallbacks: list[tuple[Callable[[Any], bool], AdapterFactory]] = []
        # type -> factory of the most specific registered type (None: none matches), so
        # a walk over 50,000 parameters does not test every registered type for each
        self._type_cache: dict[type, AdapterFactory | None] = {}

    def register(self, cls: type, factory: AdapterFactory) -> None:
        """Use ``factory(obj)`` for instances of ``cls`` (and its subclasses)."""
        self._by_type.insert(0, (cls, factory))
        self._type_cache.clear()

    def register_predicate(self, test: Callable[[Any], bool], factory: AdapterFactory) -> None:
        """Use ``factory`` for objects where ``test(obj)`` holds (checked after types)."""
        self._fallbacks.append((test, factory))

    def find(self, obj: Any) -> AdapterFactory | None:
        """The factory for ``obj``: the most specific registered type it is an instance
        of (decided once per type), else the first predicate that holds."""
        cls = type(obj)
        if cls in self._type_cache and obj.__class__ is cls:
            found = self._type_cache[cls]
        else:
            found = self._find_by_type(obj)
            if obj.__class__ is cls:  # a proxy's __class__ may claim another type
                self._type_cache[cls] = found
        if found is not None:
            return found
        for test, factory in self._fallbacks:
            if test(obj):
                return factory
        return None

    def _find_by_type(self, obj: Any) -> AdapterFactory | None:
        best: tuple[type, AdapterFactory] | None = None
        for cls, factory in self._by_type:
            if isinstance(obj, cls) and (best is None or issubclass(cls, best[0])):
                best = (cls, factory)
        return None if best is None else best[1]

    def adapter(self, obj: Any) -> Adapter:
        """The adapter of ``obj``.

        Raises:
            UntrackableError: nothing knows how to save this type.
        """
        factory = self.find(obj)
        if factory is None:
            raise UntrackableError(
                f"cannot checkpoint a {type(obj).__module__}.{type(obj).__qualname__}: it is not a "
                "torch module, optimizer, tensor, container, number or an object with "
                "state_dict()/load_state_dict(); register an adapter with "
                "torchckpt.adapters.default_registry.register(type, factory)")
        return factory(obj)
