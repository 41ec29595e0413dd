"""Find the weight-holding layers of a Keras 2, Keras 3 or ``tf.Module`` checkpoint, in model order.

Key strings are a by-product of breadth-first numbering (Keras 3 stores some
weights only under ``optimizer/_trainable_variables/N``), so this module walks
the object graph instead of parsing keys:

* A *variable node* has a ``VARIABLE_VALUE`` attribute.
* An *optimizer node* has slot variables (TF1 and Keras 2 legacy optimizers)
  or an iteration counter child (``iter``, ``_iterations``); its subtree is
  optimizer state, handled by :mod:`.optimizer_state`.
* Every other node is visited depth-first, children in the order the object
  lists them, which is model order: a Keras 2 model lists ``layer-0``,
  ``layer_with_weights-0``, ... in ``model.layers`` order (nested models
  recurse), a Keras 3 model its ``_operations``, a ``tf.Module`` its
  attributes in assignment order. A node reached again by another path is
  not visited twice.
* A :class:`WeightGroup` is a visited node with variable children: a Dense
  or Conv layer, a BatchNormalization, an RNN cell, one of a
  MultiHeadAttention's four projections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph.keys import SAVE_COUNTER, VARIABLE_VALUE_KEY, object_path
from ..graph.object_graph import FirstPaths, ObjectGraph
from .source import Source, SourceVar, not_a_weight

_ITERATION_CHILDREN = frozenset({"iter", "_iterations", "iterations"})
_MODEL_VARIABLES = "_trainable_variables"


@dataclass(frozen=True, slots=True)
class WeightGroup:
    """The variables held directly by one object, in the object's child order.

    Attributes:
        path: the object's path (escaped local names joined by ``/``).
        vars: its float variables, each ``name``\\ d by its local name.
        node_id: the object's node in the object graph (-1 when not from a graph).
    """

    path: str
    vars: tuple[SourceVar, ...]
    node_id: int = -1

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(v.key for v in self.vars)

    def describe(self) -> str:
        shapes = ", ".join(f"{v.name} {list(v.shape)}" for v in self.vars)
        return f"'{self.path or '(root)'}' ({shapes})"


@dataclass
class GraphLayout:
    """What the object graph holds, sorted for conversion.

    Attributes:
        groups: weight groups in model order.
        optimizers: node ids of optimizer objects.
        optimizer_keys: every key under an optimizer (slots, iterations, hyperparameters).
        bookkeeping: non-weight keys (``save_counter``, integer or string state) with the reason.
        stray: keys no walk reached, with the reason.
    """

    groups: list[WeightGroup] = field(default_factory=list)
    optimizers: list[int] = field(default_factory=list)
    optimizer_keys: list[str] = field(default_factory=list)
    bookkeeping: dict[str, str] = field(default_factory=dict)
    stray: dict[str, str] = field(default_factory=dict)


def is_variable_node(graph: ObjectGraph, node_id: int) -> bool:
    node = graph.nodes[node_id]
    return any(a.name == VARIABLE_VALUE_KEY for a in node.attributes)


def is_optimizer_node(graph: ObjectGraph, node_id: int) -> bool:
    node = graph.nodes[node_id]
    if node.slot_variables:
        return True
    return any(c.local_name in _ITERATION_CHILDREN for c in node.children)


def find_weight_groups(source: Source) -> GraphLayout:
    """Sort every key of an object-based checkpoint into weight groups, optimizer, bookkeeping.

    REQUIRES: ``source.graph`` is not ``None``.
    """
    graph = source.graph
    assert graph is not None, "find_weight_groups needs an object-based checkpoint"
    paths = graph.paths()
    layout = GraphLayout()
    optimizers = [i for i in range(len(graph.nodes)) if is_optimizer_node(graph, i)]
    layout.optimizers = optimizers
    claimed: set[str] = set()
    for key in _optimizer_keys(source, optimizers):
        layout.optimizer_keys.append(key)
        claimed.add(key)
    counter = next((c.node_id for c in graph.nodes[0].children if c.local_name == SAVE_COUNTER),
                   None)
    skip = set(optimizers)
    counter_var = source.variable_of_node(counter) if counter is not None else None
    if counter is not None and counter_var is not None:
        skip.add(counter)
        claimed.add(counter_var.key)
        layout.bookkeeping[counter_var.key] = "save counter of tf.train.Checkpoint"
    for node_id in _depth_first(graph, 0, skip):
        group = _group_of(source, graph, node_id, paths, claimed, layout.bookkeeping)
        if group is not None:
            layout.groups.append(group)
    for key, var in source.vars.items():
        if key in claimed or key in layout.bookkeeping:
            continue
        if not var.is_float:
            layout.bookkeeping[key] = not_a_weight(var)
        else:
            layout.stray[key] = "not held by any layer the object graph walk reached"
    return layout


def _depth_first(graph: ObjectGraph, start: int, skip: set[int]) -> list[int]:
    """Pre-order node ids from ``start``, children in listed order, each node once."""
    order: list[int] = []
    seen: set[int] = set()
    stack = [start]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id in skip:
            continue
        seen.add(node_id)
        order.append(node_id)
        stack.extend(c.node_id for c in reversed(graph.nodes[node_id].children))
    return order


def _group_of(source: Source, graph: ObjectGraph, node_id: int,
              paths: FirstPaths, claimed: set[str],
              bookkeeping: dict[str, str]) -> WeightGroup | None:
    members = []
    for child in graph.nodes[node_id].children:
        if not is_variable_node(graph, child.node_id):
            continue
        var = source.variable_of_node(child.node_id)
        if var is None or var.key in claimed:
            continue
        claimed.add(var.key)
        if var.is_float:
            members.append(var.renamed(child.local_name))
        else:
            bookkeeping[var.key] = not_a_weight(var)
    if not members:
        return None
    return WeightGroup(object_path(paths.get(node_id, ())), tuple(members), node_id)


def _optimizer_keys(source: Source, optimizers: list[int]) -> list[str]:
    """Keys of every variable below an optimizer node, slot variables included."""
    graph = source.graph
    assert graph is not None
    found: list[str] = []
    seen: set[int] = set()
    stack = list(optimizers)
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = graph.nodes[node_id]
        var = source.variable_of_node(node_id)
        if var is not None and node_id not in optimizers:
            found.append(var.key)
        if node_id in optimizers:
            stack.extend(s.slot_variable_node_id for s in node.slot_variables)
        # Keras 3 optimizers list the model's own variables under ``_trainable_variables``.
        stack.extend(c.node_id for c in node.children if c.local_name != _MODEL_VARIABLES)
    return found
