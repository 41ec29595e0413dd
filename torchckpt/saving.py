"""Saving: live objects -> object graph + tensors -> a bundle on disk.

Call order: :func:`plan_save` walks the live objects breadth-first through
their adapters and decides every node, edge, attribute and key; then
:func:`write_plan` streams the tensors into a :class:`BundleWriter` in node
order, then the Python-state strings, then the serialized object graph (the
order TensorFlow writes them in), and commits the bundle atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, cast

import torch

from .adapters import AdapterRegistry, ValueSlot, default_registry
from .errors import UntrackableError
from .format import BundleWriter
from .format.storage import StorageOptions, is_remote, local_path, staged_bundle
from .graph.keys import (
    OBJECT_GRAPH_PROTO_KEY,
    VARIABLE_VALUE_KEY,
    format_key,
    object_path,
    slot_path,
)
from .graph.object_graph import Attribute, GraphNode, ObjectGraph, SlotRef, readable_path
from .graph.traversal import Walk, breadth_first
from .staging import StagingBuffers
from .transfer import add_tensors


def identity(obj: Any) -> Hashable:
    """What makes two live objects the same node."""
    return obj.identity if isinstance(obj, ValueSlot) else id(obj)


@dataclass
class SavePlan:
    graph: ObjectGraph
    tensors: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    strings: list[tuple[str, str]] = field(default_factory=list)


def walk_live(root: Any, registry: AdapterRegistry = default_registry) -> tuple[Walk, list[Any]]:
    """Breadth-first walk of live objects; returns the walk and each node's adapter.

    Raises:
        UntrackableError: an object has no adapter; the message says where it is.
    """
    adapters: dict[Hashable, Any] = {}
    paths: dict[Hashable, tuple[str, ...]] = {identity(root): ()}

    def children_of(obj: Any) -> list[tuple[str, Any]]:
        key = identity(obj)
        adapter = adapters.get(key)
        try:
            if adapter is None:
                adapter = adapters[key] = registry.adapter(obj)
            children = adapter.children()
        except UntrackableError as exc:
            where = paths.get(key, ())
            if not where:
                raise
            raise UntrackableError(f"{readable_path(where)}: {exc}") from exc
        for name, child in children:
            paths.setdefault(identity(child), paths.get(key, ()) + (name,))
        return children

    walk = breadth_first(root, children_of, identity)
    return walk, [adapters[identity(o)] for o in walk.objects]


def plan_save(root: Any, registry: AdapterRegistry = default_registry) -> SavePlan:
    """Decide the object graph and the key of every value reachable from ``root``."""
    walk, adapters = walk_live(root, registry)
    nodes = [GraphNode(children=list(edges)) for edges in walk.edges]
    plan = SavePlan(ObjectGraph(nodes))
    for i, adapter in enumerate(adapters):
        _add_values(plan, nodes[i], walk.paths[i], adapter.values())
    for i, adapter in enumerate(adapters):
        for variable, slot_name, tensor in adapter.slot_variables():
            var_id = walk.ids.get(identity(variable))
            if var_id is None:
                raise UntrackableError(
                    f"{readable_path(walk.paths[i])} holds state for a parameter that no other "
                    "checkpointed object reaches; add the model to the Checkpoint too")
            path = walk.paths[var_id] + (".OPTIMIZER_SLOT",) + walk.paths[i] + (slot_name,)
            slot_node = GraphNode()
            nodes.append(slot_node)
            key_path = slot_path(object_path(walk.paths[var_id]), object_path(walk.paths[i]),
                                 slot_name)
            _add_values(plan, slot_node, path, {VARIABLE_VALUE_KEY: tensor}, key_path)
            cast(list, nodes[i].slot_variables).append(SlotRef(var_id, slot_name, len(nodes) - 1))
    _mark_values(nodes)
    return plan


def _add_values(plan: SavePlan, node: GraphNode, path: tuple[str, ...],
                values: dict[str, torch.Tensor | str], key_path: str | None = None) -> None:
    prefix = object_path(path) if key_path is None else key_path
    for name, value in values.items():
        key = format_key(prefix, name)
        full_name = "/".join(path) if name == VARIABLE_VALUE_KEY else ""
        cast(list, node.attributes).append(Attribute(name, key, full_name))  # built: a list
        if isinstance(value, str):
            plan.strings.append((key, value))
        else:
            plan.tensors.append((key, value))


def _mark_values(nodes: list[GraphNode]) -> None:
    """Set ``has_checkpoint_values``: own values, or any descendant's (fixed point)."""
    flags = [bool(n.attributes or n.slot_variables) for n in nodes]
    changed = True
    while changed:
        changed = False
        for i in range(len(nodes) - 1, -1, -1):
            if not flags[i] and any(flags[c.node_id] for c in nodes[i].children):
                flags[i] = changed = True
    for n, f in zip(nodes, flags):
        n.has_checkpoint_values = f


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
        writer.add_strings(OBJECT_GRAPH_PROTO_KEY, [plan.graph.to_bytes()], ())
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return prefix
