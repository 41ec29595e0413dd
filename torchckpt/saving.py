"""Saving: live objects -> object graph + tensors -> a bundle on disk.

Call order: :func:`plan_save` walks the live objects breadth-first through
their adapters and decides every node, edge, attribute and key; then
:func:`write_plan` streams the tensors into a :class:`BundleWriter` in node
order, then the Python-state strings, then the serialized object graph (the
order TensorFlow writes them in), and commits the bundle atomically.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import torch

from .adapters import AdapterRegistry, ValueSlot, default_registry
from .adapters.registry import Adapter
from .adapters.values import TensorAdapter, plain_tensor_types
from .errors import UntrackableError
from .format import BundleWriter
from .format.storage import StorageOptions, is_remote, local_path, staged_bundle
from .graph.keys import (
    OBJECT_GRAPH_PROTO_KEY,
    OPTIMIZER_SLOT_NAME,
    VARIABLE_VALUE_KEY,
    escape_local_name,
    format_key,
    slot_path,
)
from .graph.object_graph import (
    GraphColumns,
    ObjectGraph,
    readable_path,
)
from .graph.traversal import Walk
from .transfer.host import add_tensors
from .transfer.staging import StagingBuffers


def identity(obj: Any) -> Hashable:
    """What makes two live objects the same node."""
    return obj.identity if isinstance(obj, ValueSlot) else id(obj)


class SavePlan:
    """What a save writes: the object graph, ``(key, tensor)`` and ``(key, JSON text)``.

    :func:`plan_save` gives the graph as columns (:class:`GraphColumns`), which
    encode without making a node object per node; :attr:`graph` makes the
    nodes on first use (the distributed planners rewrite them).
    """

    def __init__(self, graph: ObjectGraph | GraphColumns,
                 tensors: list[tuple[str, torch.Tensor]] | None = None,
                 strings: list[tuple[str, str]] | None = None) -> None:
        self._graph = graph
        self.tensors = [] if tensors is None else tensors
        self.strings = [] if strings is None else strings

    @property
    def graph(self) -> ObjectGraph:
        if isinstance(self._graph, GraphColumns):
            self._graph = self._graph.to_graph()
        return self._graph

    def graph_bytes(self) -> bytes:
        """The serialized object graph."""
        return self._graph.to_bytes()


def walk_live(root: Any, registry: AdapterRegistry = default_registry
              ) -> tuple[Walk, list[Adapter | None]]:
    """Breadth-first walk of live objects (TF's ``trackable_view.py`` numbering);
    returns the walk and each node's adapter, ``None`` for a plain tensor (a
    ``torch.Tensor`` or ``nn.Parameter`` that the registry gives the plain
    :class:`TensorAdapter`: :func:`leaf_adapter` makes it where needed).

    Node 0 is the root; nodes are numbered in breadth-first order, each object's
    children in the order its adapter lists them; an object reached again keeps
    its first number (and its first, shortest path), and every parent still
    records an edge to it, so the graph can be a DAG. A plain tensor has no
    children, so no adapter is made and none is asked for them: a model of
    50,000 tensors walks in a few dictionary operations per tensor.

    Raises:
        UntrackableError: an object has no adapter; the message says where it is.
    """
    walk = Walk()
    objects, paths, object_paths, edges, ids = (walk.objects, walk.paths, walk.object_paths,
                                                walk.edges, walk.ids)
    make, slot_type, plain = registry.adapter, ValueSlot, plain_tensor_types(registry)
    ids[identity(root)] = 0
    objects.append(root)
    paths.append(())
    object_paths.append("")
    edges.append([])
    adapters: list[Adapter | None] = [None]  # set as each node is visited
    todo = [] if type(root) in plain else [0]  # nodes to ask for children, in id order
    for i in todo:  # grows while it is walked: breadth-first
        obj = objects[i]
        try:
            adapter = make(obj)
            children = [] if type(adapter) is TensorAdapter else adapter.children()
        except UntrackableError as exc:
            if not paths[i]:
                raise
            raise UntrackableError(f"{readable_path(paths[i])}: {exc}") from exc
        adapters[i] = adapter
        if children:
            base, out = paths[i], edges[i]
            prefix = object_paths[i] + "/" if i else ""
            for name, child in children:
                key = child.identity if isinstance(child, slot_type) else id(child)
                j = ids.get(key)
                if j is None:
                    j = ids[key] = len(objects)
                    objects.append(child)
                    paths.append(base + (name,))
                    object_paths.append(prefix + (escape_local_name(name)
                                                  if "." in name or "/" in name else name))
                    adapters.append(None)
                    if type(child) in plain:
                        edges.append(())  # a plain tensor: no children, no adapter made
                    else:
                        edges.append([])
                        todo.append(j)
                out.append((j, name))  # type: ignore[attr-defined]  # visited: a list
    return walk, adapters


def leaf_adapter(adapter: Adapter | None, obj: Any) -> Adapter:
    """``adapter``, or for a plain tensor's ``None`` (:func:`walk_live`) its TensorAdapter."""
    return TensorAdapter(obj) if adapter is None else adapter


def plan_save(root: Any, registry: AdapterRegistry = default_registry) -> SavePlan:
    """Decide the object graph and the key of every value reachable from ``root``.

    Keys are built from each node's escaped object path, which is its first
    parent's plus one name, so no path is joined twice.
    """
    walk, adapters = walk_live(root, registry)
    paths, object_paths = walk.paths, walk.object_paths
    # records as plain tuples of the fields of Attribute and SlotRef (GraphColumns);
    # nodes without any share one empty tuple
    attributes: list[Sequence[tuple[str, str, str]]] = [()] * len(adapters)
    slots: list[Sequence[tuple[int, str, int]]] = [()] * len(adapters)
    tensors: list[tuple[str, torch.Tensor]] = []
    strings: list[tuple[str, str]] = []
    value_suffix = format_key("", VARIABLE_VALUE_KEY)
    objects = walk.objects
    full_names: dict[int, str] = {}  # a value's TF full name: its first path, joined
    for i, adapter in enumerate(adapters):
        if adapter is None and not objects[i].is_meta:
            # TensorAdapter.values() inline, for most nodes of a model
            key = object_paths[i] + value_suffix
            full_names[i] = full_name = "/".join(paths[i])
            attributes[i] = ((VARIABLE_VALUE_KEY, key, full_name),)
            tensors.append((key, objects[i]))
            continue
        values = leaf_adapter(adapter, objects[i]).values()
        if not values:
            continue
        records = []
        for name, value in values.items():
            if name == VARIABLE_VALUE_KEY:
                key = object_paths[i] + value_suffix
                records.append((name, key, "/".join(paths[i])))
            else:
                key = format_key(object_paths[i], name)
                records.append((name, key, ""))
            if isinstance(value, str):
                strings.append((key, value))
            else:
                tensors.append((key, value))
        attributes[i] = records
    children = walk.edges
    for i, adapter in enumerate(adapters):
        if adapter is None or type(adapter) is TensorAdapter:
            continue
        refs = []
        # the parts of a slot's key and full name that depend on the slot name only
        key_ends: dict[str, str] = {}
        name_ends: dict[str, str] = {}
        for variable, slot_name, tensor in adapter.slot_variables():
            var_id = walk.ids.get(identity(variable))
            if var_id is None:
                raise UntrackableError(
                    f"{readable_path(paths[i])} holds state for a parameter that no other "
                    "checkpointed object reaches; add the model to the Checkpoint too")
            end = key_ends.get(slot_name)
            if end is None:  # slot_path(variable path, object_paths[i], slot_name)
                end = key_ends[slot_name] = slot_path("", object_paths[i], slot_name) \
                    + value_suffix
                name_ends[slot_name] = "/" + "/".join((OPTIMIZER_SLOT_NAME, *paths[i], slot_name))
            full = full_names.get(var_id)
            if full is None:
                full = full_names[var_id] = "/".join(paths[var_id])
            key = object_paths[var_id] + end
            children.append(())
            attributes.append(((VARIABLE_VALUE_KEY, key, full + name_ends[slot_name]),))
            slots.append(())
            tensors.append((key, tensor))
            refs.append((var_id, slot_name, len(children) - 1))
        if refs:
            slots[i] = refs
    columns = GraphColumns(children, attributes, slots)
    return SavePlan(columns, tensors, strings)


def write_plan(plan: SavePlan, prefix: str, *, sync: bool = True,
               storage_options: StorageOptions | None = None,
               staging: StagingBuffers | None = None) -> str:
    """Write ``plan`` as the bundle ``prefix`` (atomic; see :class:`BundleWriter`).

    Host tensors are written from their own memory; tensors on a device (GPU)
    through the two pinned staging buffers (:mod:`.staging`), piece by piece.
    An object-store URL is written locally, then uploaded data first, index
    last (``format/storage.py``).
    """
    if is_remote(prefix):
        with staged_bundle(prefix, storage_options) as staged:
            write_plan(plan, staged.prefix, sync=False, staging=staging)
        return prefix
    writer = BundleWriter(local_path(prefix), sync=sync)
    try:
        add_tensors(writer, plan.tensors, staging)
        for key, text in plan.strings:
            writer.add_strings(key, [text.encode("utf-8")], ())
        writer.add_strings(OBJECT_GRAPH_PROTO_KEY, [plan.graph_bytes()], ())
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return prefix
