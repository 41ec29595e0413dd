"""The record of a breadth-first walk of live objects (TF's ``trackable_view.py``).

Node 0 is the root, nodes are numbered breadth-first, an object reached again
keeps its first number and path, and every parent keeps an edge to every child
(see ``torchckpt.saving.walk_live``, which makes it). Framework-neutral.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence


@dataclass
class Walk:
    """The result of a walk: objects by node id, their paths and their edges."""

    objects: list[Any] = field(default_factory=list)
    paths: list[tuple[str, ...]] = field(default_factory=list)
    # each node's escaped object path (graph.keys.object_path of its path): keys grow from it
    object_paths: list[str] = field(default_factory=list)
    # (node id, name) of each node's children; a node that cannot have any (a plain tensor)
    # shares one empty tuple
    edges: list[Sequence[tuple[int, str]]] = field(default_factory=list)
    ids: dict[Hashable, int] = field(default_factory=dict)
