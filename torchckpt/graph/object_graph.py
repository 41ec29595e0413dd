"""The ``TrackableObjectGraph``: nodes, named edges, attributes and slot links.

Mirrors ``tensorflow/core/protobuf/trackable_object_graph.proto``. Node 0 is
the root; node ids come from a breadth-first walk (see :mod:`.traversal`);
slot-variable nodes come after all breadth-first nodes and are reached only
through their optimizer's ``slot_variables``. This module converts between the
wire bytes (through the private protobuf classes) and plain records, checks
every reference of a decoded graph, and names nodes for humans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping

from ..errors import CorruptCheckpointError
from ..format import protos
from .keys import OPTIMIZER_SLOT_NAME


@dataclass(frozen=True, slots=True)
class ChildRef:
    node_id: int
    local_name: str


@dataclass(frozen=True, slots=True)
class Attribute:
    """One saved tensor of an object: ``name`` is local, ``checkpoint_key`` the bundle key."""

    name: str
    checkpoint_key: str
    full_name: str = ""


@dataclass(frozen=True, slots=True)
class SlotRef:
    original_variable_node_id: int
    slot_name: str
    slot_variable_node_id: int


@dataclass(slots=True)  # no per-node __dict__: a graph may have a million nodes
class GraphNode:
    """One object. A decoded graph holds tuples (read-only; every empty one is the
    same object, so a node costs ~80 bytes, not ~250); a graph being built, lists."""

    children: list[ChildRef] | tuple[ChildRef, ...] = field(default_factory=list)
    attributes: list[Attribute] | tuple[Attribute, ...] = field(default_factory=list)
    slot_variables: list[SlotRef] | tuple[SlotRef, ...] = field(default_factory=list)
    has_checkpoint_values: bool | None = None
    registered_saver: str = ""


@dataclass
class ObjectGraph:
    """A decoded object graph; ``nodes[0]`` is the root."""

    nodes: list[GraphNode]
    _values_below: list[bool] | None = field(default=None, init=False, repr=False,
                                             compare=False)

    def to_bytes(self) -> bytes:
        msg = protos.TrackableObjectGraph()
        for node in self.nodes:
            n = msg.nodes.add()
            for c in node.children:
                n.children.add(node_id=c.node_id, local_name=c.local_name)
            for a in node.attributes:
                n.attributes.add(name=a.name, full_name=a.full_name,
                                 checkpoint_key=a.checkpoint_key)
            for s in node.slot_variables:
                n.slot_variables.add(original_variable_node_id=s.original_variable_node_id,
                                     slot_name=s.slot_name,
                                     slot_variable_node_id=s.slot_variable_node_id)
            if node.has_checkpoint_values is not None:
                n.has_checkpoint_values.SetInParent()
                n.has_checkpoint_values.value = node.has_checkpoint_values
        return protos.serialize(msg)

    @classmethod
    def from_bytes(cls, data: bytes, *, path: str = "<object graph>") -> "ObjectGraph":
        """Decode and check the graph (every node id in range, a root exists).

        Raises:
            CorruptCheckpointError: undecodable bytes or dangling references.
        """
        msg = protos.TrackableObjectGraph()
        try:
            msg.ParseFromString(bytes(data))
        except Exception as exc:  # protobuf raises DecodeError or RuntimeError
            raise CorruptCheckpointError(path, f"undecodable object graph: {exc}",
                                         key="_CHECKPOINTABLE_OBJECT_GRAPH") from exc
        nodes = []
        for n in msg.nodes:
            nodes.append(GraphNode(
                tuple([ChildRef(c.node_id, c.local_name) for c in n.children]),
                tuple([Attribute(a.name, a.checkpoint_key, a.full_name) for a in n.attributes]),
                tuple([SlotRef(s.original_variable_node_id, s.slot_name, s.slot_variable_node_id)
                       for s in n.slot_variables]),
                n.has_checkpoint_values.value if n.HasField("has_checkpoint_values") else None,
                n.registered_saver.name if n.HasField("registered_saver") else ""))
        graph = cls(nodes)
        graph._check(path)
        return graph

    def _check(self, path: str) -> None:
        count = len(self.nodes)
        if count == 0:
            raise CorruptCheckpointError(path, "object graph has no root node",
                                         key="_CHECKPOINTABLE_OBJECT_GRAPH")
        for i, node in enumerate(self.nodes):
            refs = [c.node_id for c in node.children]
            refs += [x for s in node.slot_variables
                     for x in (s.original_variable_node_id, s.slot_variable_node_id)]
            bad = [r for r in refs if not 0 <= r < count]
            if bad:
                raise CorruptCheckpointError(path, f"node {i} refers to node {bad[0]} of {count}",
                                             key="_CHECKPOINTABLE_OBJECT_GRAPH")

    def has_values(self, node_id: int) -> bool:
        """Whether a node or anything below it holds checkpoint values.

        The node's own ``has_checkpoint_values`` answers if it is set. The first
        call finds the answer for every node at once, in one pass over the edges
        (a node per node would be quadratic on a long chain), and keeps it:
        REQUIRES that the graph does not change afterwards.
        """
        node = self.nodes[node_id]
        if node.has_checkpoint_values is not None:
            return node.has_checkpoint_values
        if self._values_below is None:
            self._values_below = _holds_values_below(self.nodes)
        return self._values_below[node_id]

    def paths(self) -> "FirstPaths":
        """The first breadth-first path of local names to every reachable node.

        Slot-variable nodes get ``(*variable path, ".OPTIMIZER_SLOT", *optimizer path, slot)``
        when their variable and optimizer are breadth-first nodes. The paths are
        kept as links (see :class:`FirstPaths`): memory and time linear in the
        graph, however deep.
        """
        return FirstPaths(self.nodes)

    def describe(self, node_id: int, paths: "FirstPaths | None" = None) -> str:
        """A readable name: ``model.fc.weight``, or ``optimizer state 'exp_avg' of
        model.fc.weight``."""
        return (paths or self.paths()).describe(node_id)


def _holds_values_below(nodes: list[GraphNode]) -> list[bool]:
    """Per node, whether it or a node it reaches holds values (attributes or slot
    links): the nodes that hold values, then breadth-first up the reversed edges."""
    parents: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for c in node.children:
            parents[c.node_id].append(i)
    below = [bool(node.attributes or node.slot_variables) for node in nodes]
    queue = [i for i, holds in enumerate(below) if holds]
    for i in queue:  # grows while it is walked: a breadth-first pass
        for p in parents[i]:
            if not below[p]:
                below[p] = True
                queue.append(p)
    return below


# Readable paths show at most this many names, the last ones: real object paths are
# a few names deep (model.layer.sublayer.weight), and a forged chain thousands deep
# would otherwise make every description as long as the chain, and a report of all
# its nodes quadratic in it.
PATH_NAMES_SHOWN = 64


@dataclass(frozen=True, slots=True)
class _SlotLink:
    """How a slot variable node's path is made: its variable's and optimizer's paths."""

    variable: int
    optimizer: int
    slot_name: str


class FirstPaths(Mapping[int, tuple[str, ...]]):
    """The first breadth-first path of every reachable node, kept as links.

    Each node stores only its first parent and the name it adds (a slot node:
    its variable, optimizer and slot name), so memory is linear in the graph
    whatever its depth. ``paths[i]`` puts a path together in time linear in its
    length; :meth:`describe` reads at most :data:`PATH_NAMES_SHOWN` links.
    """

    def __init__(self, nodes: list[GraphNode]) -> None:
        self._parent: dict[int, tuple[int, str]] = {}
        self._depth: dict[int, int] = {0: 0}
        queue = [0]
        for i in queue:  # grows while it is walked: breadth-first
            for c in nodes[i].children:
                if c.node_id not in self._depth:
                    self._depth[c.node_id] = self._depth[i] + 1
                    self._parent[c.node_id] = (i, c.local_name)
                    queue.append(c.node_id)
        self._slots: dict[int, _SlotLink] = {}
        for i in queue:
            for s in nodes[i].slot_variables:
                n = s.slot_variable_node_id
                if n not in self._depth and n not in self._slots and \
                        s.original_variable_node_id in self._depth:
                    self._slots[n] = _SlotLink(s.original_variable_node_id, i, s.slot_name)

    def __getitem__(self, node_id: int) -> tuple[str, ...]:
        slot = self._slots.get(node_id)
        if slot is not None:
            return (self[slot.variable] + (OPTIMIZER_SLOT_NAME,) + self[slot.optimizer]
                    + (slot.slot_name,))
        if node_id not in self._depth:
            raise KeyError(node_id)
        return tuple(reversed(self._names_up(node_id, self._depth[node_id])))

    def __iter__(self) -> Iterator[int]:
        yield from self._depth
        yield from self._slots

    def __len__(self) -> int:
        return len(self._depth) + len(self._slots)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._depth or node_id in self._slots

    def parent(self, node_id: int) -> tuple[int, str] | None:
        """``(parent node, local name)`` of a breadth-first node's first path; ``None``
        for the root, slot nodes and unreachable nodes."""
        return self._parent.get(node_id)

    def describe(self, node_id: int) -> str:
        """``model.fc.weight``, ``optimizer state 'm' of model.fc.weight``, ``(root)``,
        or ``<unreachable node N>``; deep paths keep only their last names."""
        slot = self._slots.get(node_id)
        if slot is not None:
            return (f"{self._dotted(slot.optimizer)} state '{slot.slot_name}' of "
                    f"{self._dotted(slot.variable)}")
        if node_id not in self._depth:
            return f"<unreachable node {node_id}>"
        return self._dotted(node_id)

    def _dotted(self, node_id: int) -> str:
        depth = self._depth[node_id]
        shown = min(depth, PATH_NAMES_SHOWN)
        names = ".".join(reversed(self._names_up(node_id, shown)))
        if shown < depth:
            return f"...[{depth - shown} more].{names}"
        return names or "(root)"

    def _names_up(self, node_id: int, count: int) -> list[str]:
        """The last ``count`` names of ``node_id``'s path, last name first."""
        names = []
        for _ in range(count):
            node_id, name = self._parent[node_id]
            names.append(name)
        return names


def readable_path(names: tuple[str, ...]) -> str:
    """Dotted form of a path; slot paths read as "optimizer state 'm' of model.w".

    Only the first ``.OPTIMIZER_SLOT`` splits (a slot's variable and optimizer are
    breadth-first nodes); each part shows at most :data:`PATH_NAMES_SHOWN` names.
    """
    if OPTIMIZER_SLOT_NAME in names:
        i = names.index(OPTIMIZER_SLOT_NAME)
        var, rest = names[:i], names[i + 1:]
        return f"{_dotted(rest[:-1])} state '{rest[-1] if rest else ''}' of {_dotted(var)}"
    return _dotted(names)


def _dotted(names: tuple[str, ...]) -> str:
    if len(names) > PATH_NAMES_SHOWN:
        hidden = len(names) - PATH_NAMES_SHOWN
        return f"...[{hidden} more]." + ".".join(names[hidden:])
    return ".".join(names) or "(root)"
