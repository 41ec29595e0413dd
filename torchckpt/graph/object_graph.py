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
from typing import Iterator, Mapping, NamedTuple, Sequence

from ..errors import CorruptCheckpointError
from ..format import protos
from . import wire
from .keys import OPTIMIZER_SLOT_NAME


class ChildRef(NamedTuple):
    """A named edge to a child node. Tuples: a graph may have a million of these, and
    a tuple is made several times faster than a frozen dataclass."""

    node_id: int
    local_name: str


class Attribute(NamedTuple):
    """One saved tensor of an object: ``name`` is local, ``checkpoint_key`` the bundle key."""

    name: str
    checkpoint_key: str
    full_name: str = ""


class SlotRef(NamedTuple):
    """An optimizer's slot: its variable's node, the slot's name and the slot's node."""

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


class GraphColumns:
    """A graph being saved, as parallel per-node lists of records: ``children``
    ``(node_id, local_name)``, ``attributes`` ``(name, checkpoint_key, full_name)``
    and ``slots`` ``(variable node, slot name, slot node)``, the fields of
    :class:`ChildRef`, :class:`Attribute` and :class:`SlotRef` as plain tuples;
    ``has_checkpoint_values`` is derived. Encodes straight to bytes
    (:func:`.wire.encode_graph`), without an object per node or record."""

    def __init__(self, children: list[Sequence[tuple[int, str]]],
                 attributes: list[Sequence[tuple[str, str, str]]],
                 slots: list[Sequence[tuple[int, str, int]]]) -> None:
        self.children = children
        self.attributes = attributes
        self.slots = slots

    def flags(self) -> list[bool]:
        """``has_checkpoint_values`` of every node: its own values or any below it."""
        return holds_values_below(self.children, self.attributes, self.slots)

    def to_bytes(self) -> bytes:
        return wire.encode_graph(self.children, self.attributes, self.slots, self.flags())

    def to_graph(self) -> "ObjectGraph":
        """The graph as :class:`GraphNode` records (lists, as a graph being built holds)."""
        return ObjectGraph([
            GraphNode([ChildRef(*r) for r in c], [Attribute(*r) for r in a],
                      [SlotRef(*r) for r in s], f)
            for c, a, s, f in zip(self.children, self.attributes, self.slots, self.flags())])


@dataclass
class ObjectGraph:
    """A decoded object graph; ``nodes[0]`` is the root."""

    nodes: list[GraphNode]
    _values_below: list[bool] | None = field(default=None, init=False, repr=False,
                                             compare=False)

    def to_bytes(self) -> bytes:
        """The serialized ``TrackableObjectGraph`` (:mod:`.wire`: the protobuf bytes)."""
        nodes = self.nodes
        return wire.encode_graph([n.children for n in nodes], [n.attributes for n in nodes],
                                 [n.slot_variables for n in nodes],
                                 [n.has_checkpoint_values for n in nodes])

    @classmethod
    def from_bytes(cls, data: bytes, *, path: str = "<object graph>",
                   full_names: bool = True) -> "ObjectGraph":
        """Decode and check the graph (every node id in range, a root exists).

        ``full_names=False`` leaves every attribute's ``full_name`` empty, for readers
        that never use it (a restore): a model's graph holds one per tensor.

        Raises:
            CorruptCheckpointError: undecodable bytes or dangling references.
        """
        decoded = wire.decode_graph(data, GraphNode, ChildRef, Attribute, SlotRef,
                                    full_names=full_names)
        if decoded is not None:  # checked as _check checks
            return cls(decoded)
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
                tuple([Attribute(a.name, a.checkpoint_key, a.full_name if full_names else "")
                       for a in n.attributes]),
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
            nodes = self.nodes
            self._values_below = holds_values_below([n.children for n in nodes],
                                                    [n.attributes for n in nodes],
                                                    [n.slot_variables for n in nodes])
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


def holds_values_below(children: Sequence[Sequence[tuple[int, str]]],
                       attributes: Sequence[Sequence[object]],
                       slots: Sequence[Sequence[object]]) -> list[bool]:
    """Per node, whether it or a node it reaches holds values (attributes or slot
    links).

    Nodes are numbered breadth-first, so most edges lead to higher numbers: one pass
    from the last node to the first settles every node whose edges all do (a model's
    50,000 parameters in a few ms). An edge back to a lower number (a DAG's second
    parent, a cycle) that the pass needed sends the graph through the general walk:
    the nodes that hold values, then breadth-first up the reversed edges.
    """
    below = [bool(a or s) for a, s in zip(attributes, slots)]
    for i in range(len(children) - 1, -1, -1):
        if below[i]:
            continue
        for c in children[i]:
            j = c[0]
            if j <= i:
                return _holds_values_below_by_parents(children, attributes, slots)
            if below[j]:
                below[i] = True
                break
    return below


def _holds_values_below_by_parents(children: Sequence[Sequence[tuple[int, str]]],
                                   attributes: Sequence[Sequence[object]],
                                   slots: Sequence[Sequence[object]]) -> list[bool]:
    parents: list[list[int]] = [[] for _ in children]
    for i, kids in enumerate(children):
        for c in kids:
            parents[c[0]].append(i)
    below = [bool(a or s) for a, s in zip(attributes, slots)]
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
