"""Per-rank subtrees of a collective save: split from each rank's plan, merged on rank 0.

Each rank plans the whole checkpoint (``saving.plan_save``). Where a per-rank
object is (``per_rank.py``), its node has one child, this rank's
``rank_<r>_of_<W>``; everything below that child is the rank's *fragment*.
The rest, the *shared* graph, is the same on every rank (the agreement step
checks it); the fragments are not, and need not be: each rank may hold
per-rank state of its own structure.

:func:`split_per_rank` takes the fragment out of a rank's plan: the shared
graph keeps its nodes in order (renumbered past the removed ones), and the
fragment becomes a small object graph of its own, sent to rank 0 as bytes::

    node 0            the fragment's root; one child per per-rank object,
                      named by the decimal id of that object's node in the
                      shared graph
    nodes 1..n        the fragment's nodes, in plan order, keeping their
                      attributes (checkpoint keys included) and children

:func:`merge_fragments` (rank 0) appends each rank's fragment nodes to the
shared graph, in rank order, and links each per-rank node to its rank's child
``rank_<k>_of_<W>``. A fragment must be self-contained: a node below a
per-rank object that is also reached from elsewhere, or optimizer state of a
per-rank value, is refused (``UntrackableError``) rather than saved twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptCheckpointError, UntrackableError
from ..graph.object_graph import ChildRef, GraphNode, ObjectGraph, SlotRef, readable_path
from ..saving import SavePlan, walk_live
from .per_rank import PerRankAdapter, rank_name


@dataclass
class SplitPlan:
    """A rank's plan with its per-rank values set apart.

    Attributes:
        shared: the plan of the shared graph (tensors and strings of shared nodes).
        own_tensors, own_strings: this rank's per-rank values, by checkpoint key.
        fragment: the serialized fragment (empty when there is none).
    """

    shared: SavePlan
    own_tensors: list[tuple[str, Any]] = field(default_factory=list)
    own_strings: list[tuple[str, str]] = field(default_factory=list)
    fragment: bytes = b""


def split_per_rank(root: Any, plan: SavePlan, rank: int, world: int) -> SplitPlan:
    """Set this rank's per-rank subtrees of ``plan`` (planned from ``root``) apart.

    Raises:
        UntrackableError: a per-rank subtree shares a node with the rest, or holds
            optimizer state.
    """
    name = rank_name(rank, world)
    nodes = plan.graph.nodes
    if not any(c.local_name == name for n in nodes for c in n.children):
        return SplitPlan(plan)  # no per-rank object (checked before walking the objects again)
    roots = _per_rank_roots(root, nodes, name)
    if not roots:
        return SplitPlan(plan)
    below = _below(nodes, [child for _, child in roots])
    roots = [(parent, child) for parent, child in roots if parent not in below]  # outermost
    _check_self_contained(nodes, below, roots, plan)
    keep = [i for i in range(len(nodes)) if i not in below]
    shared_id = {old: new for new, old in enumerate(keep)}
    shared_nodes = [_renumber(nodes[i], shared_id, drop=below) for i in keep]
    frag_ids = {old: new + 1 for new, old in enumerate(sorted(below))}
    frag_root = GraphNode(children=[ChildRef(frag_ids[child], str(shared_id[parent]))
                                    for parent, child in roots])
    fragment = ObjectGraph([frag_root] + [_renumber(nodes[i], frag_ids, drop=set())
                                          for i in sorted(below)])
    own_keys = {a.checkpoint_key for i in below for a in nodes[i].attributes}
    shared = SavePlan(ObjectGraph(shared_nodes),
                      [(k, t) for k, t in plan.tensors if k not in own_keys],
                      [(k, s) for k, s in plan.strings if k not in own_keys])
    return SplitPlan(shared, [(k, t) for k, t in plan.tensors if k in own_keys],
                     [(k, s) for k, s in plan.strings if k in own_keys], fragment.to_bytes())


def _per_rank_roots(root: Any, nodes: list[GraphNode], name: str) -> list[tuple[int, int]]:
    """``(per-rank node, its child for this rank)`` pairs, found by walking the live objects
    again (the walk numbers them as ``plan_save`` did)."""
    _, adapters = walk_live(root)
    out: list[tuple[int, int]] = []
    for i, adapter in enumerate(adapters):
        if isinstance(adapter, PerRankAdapter) and adapter.per_rank:
            out.extend((i, c.node_id) for c in nodes[i].children if c.local_name == name)
    return out


def _below(nodes: list[GraphNode], starts: list[int]) -> set[int]:
    seen: set[int] = set()
    stack = list(starts)
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(c.node_id for c in nodes[i].children)
    return seen


def _check_self_contained(nodes: list[GraphNode], below: set[int],
                          roots: list[tuple[int, int]], plan: SavePlan) -> None:
    allowed = set(roots)
    for i, node in enumerate(nodes):
        for c in node.children:
            crossing = (i in below) != (c.node_id in below)
            if crossing and (i, c.node_id) not in allowed:
                shared = c.node_id if i in below else i
                raise UntrackableError(
                    f"{readable_path(plan.graph.paths()[shared])} is reached both from a "
                    "per-rank object and from the rest of the checkpoint; a per-rank object "
                    "must hold its own state (wrap a separate object in PerRank, or "
                    "checkpoint it only once)")
        for s in node.slot_variables:
            if i in below or s.original_variable_node_id in below:
                var = plan.graph.paths()[s.original_variable_node_id]
                raise UntrackableError(
                    f"optimizer state of per-rank values is not supported "
                    f"({readable_path(var)}); keep optimizers and the parameters they update "
                    "out of per-rank objects")


def _renumber(node: GraphNode, ids: dict[int, int], *, drop: set[int]) -> GraphNode:
    return GraphNode(
        children=[ChildRef(ids[c.node_id], c.local_name) for c in node.children
                  if c.node_id not in drop],
        attributes=list(node.attributes),
        slot_variables=[SlotRef(ids[s.original_variable_node_id], s.slot_name,
                                ids[s.slot_variable_node_id]) for s in node.slot_variables],
        has_checkpoint_values=node.has_checkpoint_values,
        registered_saver=node.registered_saver)


def merge_fragments(shared: ObjectGraph, fragments: list[bytes], world: int) -> ObjectGraph:
    """The checkpoint's object graph: ``shared`` plus every rank's fragment (rank 0).

    Raises:
        CorruptCheckpointError: a fragment that does not decode or names no per-rank node.
    """
    nodes = [_renumber(n, {i: i for i in range(len(shared.nodes))}, drop=set())
             for n in shared.nodes]
    for rank, blob in enumerate(fragments):
        if not blob:
            continue
        frag = ObjectGraph.from_bytes(blob, path=f"<per-rank values of rank {rank}>")
        offset = len(nodes) - 1  # fragment node j (>= 1) becomes node offset + j
        ids = {j: offset + j for j in range(1, len(frag.nodes))}
        if any(c.node_id == 0 for n in frag.nodes for c in n.children) or any(
                n.slot_variables for n in frag.nodes):
            raise CorruptCheckpointError(f"<per-rank values of rank {rank}>",
                                         "a fragment node refers back to its root")
        nodes.extend(_renumber(n, ids, drop=set()) for n in frag.nodes[1:])
        for ref in frag.nodes[0].children:
            parent = int(ref.local_name) if ref.local_name.isdigit() else -1
            if not 0 <= parent < len(shared.nodes):
                raise CorruptCheckpointError(f"<per-rank values of rank {rank}>",
                                             f"no shared node {ref.local_name!r}")
            children = nodes[parent].children
            assert isinstance(children, list)  # _renumber builds lists
            children.append(ChildRef(ids[ref.node_id], rank_name(rank, world)))
    return ObjectGraph(nodes)
