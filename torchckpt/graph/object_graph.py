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


@dataclass
class GraphNode:
    children: list[ChildRef] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    slot_variables: list[SlotRef] = field(default_factory=list)
    has_checkpoint_values: bool | None = None
    registered_saver: str = ""


@dataclass
class ObjectGraph:
    """A decoded object graph; ``nodes[0]`` is the root."""

    nodes: list[GraphNode]

    def to_bytes(self) -> bytes:
        msg = protos.TrackableObjectGraph()
        for node in self.nodes:
            n = msg.nodes.add()
            for c in node.children:
                n.children.add(node_id=c.node_id, local_name=c.local_name)
            for a in node.attributes:
                n.attributes.add(name=a.name, full_name=a.full_name, checkpoint_key=a.checkpoint_key)
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
                [ChildRef(c.node_id, c.local_name) for c in n.children],
                [Attribute(a.name, a.checkpoint_key, a.full_name) for a in n.attributes],
                [SlotRef(s.original_variable_node_id, s.slot_name, s.slot_variable_node_id)
                 for s in n.slot_variables],
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
        """Whether a node or anything below it holds checkpoint values."""
        node = self.nodes[node_id]
        if node.has_checkpoint_values is not None:
            return node.has_checkpoint_values
        seen: set[int] = set()
        stack = [node_id]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            n = self.nodes[i]
            if n.attributes or n.slot_variables:
                return True
            stack.extend(c.node_id for c in n.children)
        return False

    def paths(self) -> dict[int, tuple[str, ...]]:
        """The first breadth-first path of local names to every reachable node.

        Slot-variable nodes get ``(*variable path, ".OPTIMIZER_SLOT", *optimizer path, slot)``.
        """
        found: dict[int, tuple[str, ...]] = {0: ()}
        queue = [0]
        for i in queue:
            for c in self.nodes[i].children:
                if c.node_id not in found:
                    found[c.node_id] = found[i] + (c.local_name,)
                    queue.append(c.node_id)
        for i in list(queue):
            for s in self.nodes[i].slot_variables:
                if s.slot_variable_node_id not in found and s.original_variable_node_id in found:
                    found[s.slot_variable_node_id] = (
                        found[s.original_variable_node_id] + (OPTIMIZER_SLOT_NAME,)
                        + found[i] + (s.slot_name,))
        return found

    def describe(self, node_id: int, paths: dict[int, tuple[str, ...]] | None = None) -> str:
        """A readable name: ``model.fc.weight`` or ``optimizer state 'exp_avg' of model.fc.weight``."""
        p = (paths or self.paths()).get(node_id)
        if p is None:
            return f"<unreachable node {node_id}>"
        return readable_path(p)


def readable_path(names: tuple[str, ...]) -> str:
    """Dotted form of a path; slot paths read as "optimizer state 'm' of model.w"."""
    if OPTIMIZER_SLOT_NAME in names:
        i = names.index(OPTIMIZER_SLOT_NAME)
        var, rest = names[:i], names[i + 1:]
        return (f"{readable_path(rest[:-1])} state '{rest[-1]}' of {readable_path(var)}")
    return ".".join(names) if names else "(root)"
