"""Deterministic breadth-first numbering of live objects (TF's ``trackable_view.py``).

Node 0 is the root. Nodes are numbered in breadth-first order, visiting each
object's children in the order its adapter lists them; an object reached again
keeps its first number, so each object is stored once and its *path* (used for
checkpoint keys) is its first, shortest path. Every parent still records an
edge to every child, so the saved graph can be a DAG. Framework-neutral: the
caller supplies how to list children and how to tell objects apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from .object_graph import ChildRef


@dataclass
class Walk:
    """The result of a walk: objects by node id, their paths and their edges."""

    objects: list[Any] = field(default_factory=list)
    paths: list[tuple[str, ...]] = field(default_factory=list)
    edges: list[list[ChildRef]] = field(default_factory=list)
    ids: dict[Hashable, int] = field(default_factory=dict)

    def node_id(self, obj: Any, identity: Callable[[Any], Hashable]) -> int | None:
        return self.ids.get(identity(obj))


def breadth_first(root: Any, children_of: Callable[[Any], list[tuple[str, Any]]],
                  identity: Callable[[Any], Hashable]) -> Walk:
    """Number every object reachable from ``root``."""
    walk = Walk()

    def visit(obj: Any, path: tuple[str, ...]) -> int:
        key = identity(obj)
        found = walk.ids.get(key)
        if found is not None:
            return found
        walk.ids[key] = len(walk.objects)
        walk.objects.append(obj)
        walk.paths.append(path)
        walk.edges.append([])
        return walk.ids[key]

    visit(root, ())
    i = 0
    while i < len(walk.objects):
        for name, child in children_of(walk.objects[i]):
            walk.edges[i].append(ChildRef(visit(child, walk.paths[i] + (name,)), name))
        i += 1
    return walk
