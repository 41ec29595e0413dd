"""Restoring: match the saved object graph against live objects, lazily.

Matching is TensorFlow's (``python/checkpoint/restore.py``): the live root is
bound to node 0, then breadth-first, each saved edge ``(parent, local name)``
is looked up on the live parent. A child that exists is bound and its values
are applied at once. A child that does not exist yet - or a lazy parameter not
yet materialized - is *deferred*: the parent's adapter is asked to watch for
it, and the value lands the moment it appears, after which the watch is
removed. Slot variables land once both the optimizer and the parameter are
bound and the parameter holds real data. :class:`RestoreSession` keeps the
books that ``RestoreStatus`` reports.

Lifetime: a session is referenced by the hooks it waits on (a module's forward
pre-hook, the root ``Checkpoint``'s attribute watchers) and by its status, so
it lives as long as something can still arrive, and no longer. It closes its
reader as soon as nothing is pending.

Nothing named by the file is imported or called: node and attribute names are
only looked up among the live objects' own children.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any, Hashable, Sequence

import torch
from torch.nn.modules.lazy import LazyModuleMixin

from .adapters import AdapterRegistry, default_registry
from .adapters.module import ModuleAdapter
from .adapters.registry import Adapter, Handle, SlotCheck
from .adapters.values import TensorAdapter, holds_data, plain_tensor_types
from .distributed.per_rank import PerRankAdapter, Placement
from .errors import CorruptCheckpointError, UnsupportedFormatError
from .format import BundleReader
from .format._fast_entries import PayloadLocation
from .format._io import gc_freeze_new
from .format.dtypes import DataType, has_array_form
from .format.records import ENDIAN_LITTLE
from .format.storage import StorageOptions, open_bundle
from .graph.keys import OBJECT_GRAPH_PROTO_KEY, VARIABLE_VALUE_KEY
from .graph.object_graph import FirstPaths, GraphNode, ObjectGraph, SlotRef, readable_path
from .graph.status import MatchReport
from .saving import identity, leaf_adapter, walk_live
from .transfer.in_place import InPlaceReads
from .transfer.staging import StagingBuffers
from .transfer.values import BundleValue


class RestoreSession:
    """Binds checkpoint nodes to live objects and applies values as they appear.

    Bookkeeping: ``bound`` maps node ids to live objects; ``applied`` holds the
    nodes whose values landed; ``pending`` the watched ``(parent node, local
    name)`` edges whose objects have not appeared yet; ``pending_slots`` maps
    slot nodes not restored yet to their variable's node. Under a per-rank
    object (``distributed/per_rank.py``), ``other_ranks`` holds the children
    that other ranks of this world restore, and ``unplaced`` the nodes whose
    values no rank of this world takes (saved by a world of another size).
    """

    def __init__(self, root: Any, reader: BundleReader, graph: ObjectGraph, *,
                 device: torch.device, registry: AdapterRegistry = default_registry,
                 staging: StagingBuffers | None = None) -> None:
        self.root = root
        self._staging = staging  # the owner's GPU staging buffers (a Checkpoint's)
        self.reader: BundleReader | None = reader
        self.graph = graph
        self._registry = registry
        self._device = device
        self.bound: dict[int, Any] = {}
        self._adapters: dict[int, Adapter] = {}  # visited nodes (a plain leaf's made on need)
        self._leaf_nodes: set[int] = set()  # plain host tensors bound and queued in a batch
        self.applied: set[int] = set()
        self.pending: dict[tuple[int, str], Handle | None] = {}
        self.pending_slots: dict[int, int] = {}  # slot node -> its variable's node
        self._slot_waiting: dict[int, list[tuple[int, Any]]] = {}  # variable node -> slots
        self.other_ranks: list[int] = []
        self.unplaced: list[int] = []
        self._queue: deque[int] = deque()
        self._slot_owners: list[int] = []  # optimizer nodes visited in this pass of _drain
        # In-place reads queued by one pass of _drain and done in one read_many_into call:
        # payloads are then read in file order with few system calls (50k small tensors).
        self._reads: list[tuple[str, Any]] = []
        # (node, key, tensor) of plain host tensors bound in one pass of _drain, and per
        # optimizer node its slots ready in it, checked against their entries together
        # and queued as reads (_land_batched); then the checks of slot values
        # (SlotTargets.land, the positions read, their keys), run after the reads
        self._leaves: list[tuple[int, str, torch.Tensor]] = []
        self._slots: dict[int, list[SlotRef]] = {}
        self._checks: list[tuple[SlotCheck, list[int], list[str]]] = []
        self._in_place = InPlaceReads(reader)  # reads of entries located in _land_batched

    @classmethod
    def open(cls, root: Any, prefix: str, *, device: torch.device,
             registry: AdapterRegistry = default_registry,
             storage_options: StorageOptions | None = None,
             staging: StagingBuffers | None = None) -> "RestoreSession":
        """Read the object graph of the bundle at ``prefix`` (a path, or a URL read
        through fsspec with ``storage_options``: ``format/remote_reader.py``).

        Raises:
            UnsupportedFormatError: no object graph (a TF1 name-based checkpoint).
            CorruptCheckpointError: an unreadable index or object graph.
        """
        reader = open_bundle(prefix, storage_options=storage_options)
        try:
            if OBJECT_GRAPH_PROTO_KEY not in reader:
                raise UnsupportedFormatError(
                    reader.index_path, "no object graph: not an object-based checkpoint (a TF1 "
                    "name-based Saver writes these); read its tensors with "
                    "torchckpt.load_checkpoint", key=OBJECT_GRAPH_PROTO_KEY)
            raw = BundleValue(reader, OBJECT_GRAPH_PROTO_KEY, device)
            if raw.dtype != DataType.DT_STRING or raw.shape != ():
                raise CorruptCheckpointError(reader.index_path, "object graph is not a scalar "
                                             "string", key=OBJECT_GRAPH_PROTO_KEY)
            data = reader.read_array(OBJECT_GRAPH_PROTO_KEY).item()
            graph = ObjectGraph.from_bytes(data, path=reader.index_path, full_names=False)
            gc_freeze_new()  # kept to the end of the restore: not scanned again (_io.py)
        except BaseException:
            reader.close()
            raise
        return cls(root, reader, graph, device=device, registry=registry, staging=staging)

    # --- binding -------------------------------------------------------------------------

    def start(self) -> None:
        self._bind(0, self.root)
        self._drain()

    def _bind(self, node_id: int, obj: Any) -> None:
        if node_id in self.bound:
            return
        self.bound[node_id] = obj
        self._queue.append(node_id)

    def _queue_leaf(self, node_id: int, tensor: torch.Tensor, key: str) -> None:
        """A bound plain tensor's value: checked and read with the others of this pass
        (:meth:`_land_batched`); slots waiting for this variable become ready."""
        self._leaf_nodes.add(node_id)
        self._leaves.append((node_id, key, tensor))
        if node_id in self._slot_waiting:
            self._restore_ready_slots(node_id)

    def _visited(self, node_id: int) -> bool:
        return node_id in self._adapters or node_id in self._leaf_nodes

    def _adapter_of(self, node_id: int) -> Adapter:
        """The adapter of a visited node (a batched leaf's is made here, on need)."""
        adapter = self._adapters.get(node_id)
        if adapter is None:
            adapter = self._adapters[node_id] = self._registry.adapter(self.bound[node_id])
        return adapter

    @functools.cached_property
    def _leaf_keys(self) -> list[str | None]:
        """Per saved node, the key of its value where it is a plain leaf (one
        ``VARIABLE_VALUE`` and nothing else: a tensor's); else ``None``."""
        return [n.attributes[0].checkpoint_key if _is_plain_leaf(n) else None
                for n in self.graph.nodes]

    @functools.cached_property
    def _plain_leaf_types(self) -> frozenset[type]:
        return plain_tensor_types(self._registry)

    def _drain(self) -> None:
        try:
            while self._queue:
                self._visit(self._queue.popleft())
            # slots are booked once the pass has visited the variables it reaches: a
            # variable visited after its optimizer is then ready, not waiting
            owners, self._slot_owners = self._slot_owners, []
            for opt_id in owners:
                self._take_slots(opt_id, self.graph.nodes[opt_id].slot_variables)
            gc_freeze_new()  # the books of this pass, which live until its reads are done
            self._land_batched()
            gc_freeze_new()
        finally:
            reads, self._reads = self._reads, []
            checks, self._checks = self._checks, []
            self._leaves.clear()
            self._slots.clear()
        if reads or self._in_place:  # queued with the reader open
            reader = self._open_reader()
            self._in_place.run(reader, reads)
            for land, read, keys in checks:
                refused = land(read)
                if refused:
                    position, exc = refused[0]
                    raise exc.located(reader.index_path, keys[position]) from exc.__cause__
        if not self.pending:
            self._release()

    def _visit(self, node_id: int) -> None:
        obj = self.bound[node_id]
        adapter = self._adapters[node_id] = self._registry.adapter(obj)
        node = self.graph.nodes[node_id]
        key = self._leaf_keys[node_id]
        if type(adapter) is TensorAdapter and obj.is_cpu and key is not None:
            self._queue_leaf(node_id, obj, key)
            return
        per_rank = adapter if isinstance(adapter, PerRankAdapter) else None
        if node.attributes and per_rank is not None and per_rank.per_rank:
            self.unplaced.append(node_id)  # saved by one process: no rank of this world owns it
        else:
            self._apply_values(node_id, adapter, node)
        bound, leaf_keys, plain = self.bound, self._leaf_keys, self._plain_leaf_types
        # a module's parameters are looked up in its own table, the most common case first:
        # ModuleAdapter.child finds a non-None parameter there before anything else
        params = obj._parameters if type(adapter) is ModuleAdapter \
            and not isinstance(obj, LazyModuleMixin) else None
        leaf_nodes, leaves, slot_waiting = self._leaf_nodes, self._leaves, self._slot_waiting
        for child_id, name in node.children:
            live = params.get(name) if params is not None else None
            key = leaf_keys[child_id]
            if live is not None and type(live) in plain and key is not None \
                    and child_id not in bound and live.is_cpu:
                # _bind, _visit and _queue_leaf in one step, for most nodes of a model
                bound[child_id] = live
                leaf_nodes.add(child_id)
                leaves.append((child_id, key, live))
                if child_id in slot_waiting:
                    self._queue_waiting_slots(child_id)
                continue
            if per_rank is not None and self._placed_elsewhere(per_rank, name, child_id):
                continue
            live = adapter.child(name)
            if live is None or not adapter.child_ready(name, live):
                if child_id not in bound and self.graph.has_values(child_id):
                    self._defer(node_id, name, child_id, adapter)
            elif type(live) in plain and child_id not in bound and live.is_cpu \
                    and leaf_keys[child_id] is not None:
                bound[child_id] = live
                self._queue_leaf(child_id, live, leaf_keys[child_id])  # type: ignore[arg-type]
            else:
                self._bind(child_id, live)
        if node.slot_variables:
            self._slot_owners.append(node_id)
        if node_id in self._slot_waiting:
            self._restore_ready_slots(node_id)

    def _take_slots(self, opt_id: int, refs: Sequence[SlotRef]) -> None:
        """Book an optimizer's slots: those whose variable is visited and holds real data
        are ready now (:meth:`_restore_ready_slots`, without a round trip through the
        waiting lists), the others wait for their variable."""
        waiting, pending, bound = self._slot_waiting, self.pending_slots, self.bound
        queued = self._slots.setdefault(opt_id, [])
        ready: dict[int, bool] = {}  # variable node -> ready (asked once per variable)
        late: list[int] = []  # ready variables that already had slots waiting
        for slot in refs:
            var_id = slot.original_variable_node_id
            now = ready.get(var_id)
            if now is None:
                now = ready[var_id] = self._visited(var_id) and holds_data(bound[var_id])
                if now and var_id in waiting:
                    late.append(var_id)
            if now and var_id not in waiting:
                queued.append(slot)  # read with the others of this pass
            else:
                pending[slot.slot_variable_node_id] = var_id
                waiting.setdefault(var_id, []).append((opt_id, slot))
        for var_id in late:
            self._restore_ready_slots(var_id)

    def _apply_values(self, node_id: int, adapter: Adapter, node: GraphNode) -> None:
        """Hand a node's saved values to its adapter. Values no torch object can take (a
        tf.data iterator's DT_VARIANT state, whose key TF does not even store under the
        graph's name) stay unused in the report."""
        if node.attributes and all(self._decodable(a.checkpoint_key) for a in node.attributes):
            adapter.restore({a.name: self._value(a.checkpoint_key) for a in node.attributes})
            self.applied.add(node_id)

    def _land_batched(self) -> None:
        """Queue the reads of the plain tensors and optimizer slots met in this pass whose
        entries hold a plain payload of their dtype and shape, all entries checked in
        one call (:meth:`BundleReader.payload_locations`); the others take their
        adapter's path, which reads sliced or converted values and reports mismatches.
        Slot values that need a check after the read queue it in ``self._checks``."""
        leaves, self._leaves = self._leaves, []
        slots, self._slots = self._slots, {}
        if not leaves and not any(slots.values()):
            return
        reader = self._open_reader()
        keys = [key for _, key, _ in leaves]
        slot_keys = {opt_id: self._slot_keys(queued) for opt_id, queued in slots.items()}
        for _, queued_keys in slot_keys.values():
            keys += queued_keys
        locations = reader.payload_locations(keys, checksums=False) \
            if reader.header.endianness == ENDIAN_LITTLE else [None] * len(keys)
        missed = self._in_place.add_many(keys[:len(leaves)], [tensor for *_, tensor in leaves],
                                         locations[:len(leaves)])
        skip = {leaves[i][0] for i in missed}
        self.applied.update(node_id for node_id, _, _ in leaves if node_id not in skip)
        for i in missed:  # through the adapter, which converts or reports
            node_id = leaves[i][0]
            self._apply_values(node_id, self._adapter_of(node_id), self.graph.nodes[node_id])
        at = len(leaves)
        for opt_id, (queued, queued_keys) in slot_keys.items():
            self._land_slots(opt_id, queued, queued_keys, locations[at:at + len(queued)])
            at += len(queued)

    def _slot_keys(self, queued: list[SlotRef]) -> tuple[list[SlotRef], list[str]]:
        """The ready slots that hold a value, and the key of each (the slot node's first
        attribute; a slot node without one has nothing to restore and waits no more)."""
        leaf_keys = self._leaf_keys
        keys = [leaf_keys[slot.slot_variable_node_id] for slot in queued]
        if None not in keys:  # the usual case: every slot node a plain leaf
            return queued, keys  # type: ignore[return-value]
        kept: list[SlotRef] = []
        kept_keys: list[str] = []
        for slot, key in zip(queued, keys):
            if key is None:
                attributes = self.graph.nodes[slot.slot_variable_node_id].attributes
                if not attributes:
                    self.pending_slots.pop(slot.slot_variable_node_id, None)
                    continue
                key = attributes[0].checkpoint_key
            kept.append(slot)
            kept_keys.append(key)
        return kept, kept_keys

    def _land_slots(self, opt_id: int, queued: list[SlotRef], keys: list[str],
                    locations: Sequence[PayloadLocation | None]) -> None:
        """Queue the reads of an optimizer's ready slots into the tensors its adapter names
        (:meth:`Adapter.slot_targets`); the others take :meth:`_restore_slot`."""
        bound = self.bound
        targets = self._adapters[opt_id].slot_targets(
            [bound[slot.original_variable_node_id] for slot in queued],
            [slot.slot_name for slot in queued], locations)
        tensors = targets.tensors if targets is not None else [None] * len(queued)
        chosen: Sequence[int] = [i for i, t in enumerate(tensors) if t is not None]
        if len(chosen) < len(queued):
            missed = self._in_place.add_many([keys[i] for i in chosen],
                                             [tensors[i] for i in chosen],  # type: ignore[misc]
                                             [locations[i] for i in chosen])
        else:  # the usual case, without a pass per index
            chosen = range(len(queued))
            missed = self._in_place.add_many(keys, tensors, locations)  # type: ignore[arg-type]
        if missed:
            skip = set(missed)
            read = [i for k, i in enumerate(chosen) if k not in skip]
        else:
            read = list(chosen)
        pending = self.pending_slots
        done = [queued[i].slot_variable_node_id for i in read]
        self.applied.update(done)  # what _slot_done's callback does
        if pending:  # slots that waited for their variable
            for node_id in done:
                pending.pop(node_id, None)
        if len(read) < len(queued):
            taken = set(read)
            for i, (slot, key) in enumerate(zip(queued, keys)):
                if i not in taken:
                    self._restore_slot(opt_id, slot.original_variable_node_id, slot, key)
        if targets is not None and targets.land is not None and read:
            self._checks.append((targets.land, read, keys))

    def _placed_elsewhere(self, adapter: PerRankAdapter, name: str, child: int) -> bool:
        """Book a per-rank child that this rank does not restore; False for its own."""
        where = adapter.placement(name)
        if where is Placement.OTHER_RANK:
            self.other_ranks.append(child)
        elif where is Placement.UNPLACED:
            self.unplaced.append(child)
        return where in (Placement.OTHER_RANK, Placement.UNPLACED)

    def _defer(self, parent: int, name: str, child: int, adapter: Adapter) -> None:
        """Wait for ``parent.<name>``. A parent that cannot announce new children
        returns no handle: its value can never land and counts as unused."""
        key = (parent, name)
        if key in self.pending:
            return

        def arrived(obj: Any) -> None:
            self.pending.pop(key, None)
            self._bind(child, obj)
            self._drain()

        self.pending[key] = None  # placeholder: a watch may call back at once
        handle = adapter.watch(name, arrived)
        if handle is None:
            self.pending.pop(key, None)
        elif key in self.pending:
            self.pending[key] = handle

    def _restore_ready_slots(self, var_id: int) -> None:
        """Restore the slots waiting for variable ``var_id`` once it is visited and holds
        real data (a meta parameter without a saved value never does), those of visited
        optimizers."""
        if var_id in self._slot_waiting and self._visited(var_id) \
                and holds_data(self.bound[var_id]):
            self._queue_waiting_slots(var_id)

    def _queue_waiting_slots(self, var_id: int) -> None:
        """Queue the slots waiting for variable ``var_id``, which is visited and holds real
        data, those of visited optimizers, to be read with the others of this pass
        (:meth:`_land_batched`)."""
        waiting = self._slot_waiting[var_id]
        adapters = self._adapters
        if all(opt_id in adapters for opt_id, _ in waiting):  # the usual case: one optimizer
            ready = waiting
            del self._slot_waiting[var_id]
        else:  # one pass, not one list.remove per slot
            ready = [w for w in waiting if w[0] in adapters]
            self._slot_waiting[var_id] = [w for w in waiting if w[0] not in adapters]
        slots = self._slots
        for opt_id, slot in ready:
            slots.setdefault(opt_id, []).append(slot)

    def _restore_slot(self, opt_id: int, var_id: int, slot: SlotRef, key: str) -> None:
        """A slot through its optimizer's adapter: checks, converts, reports."""
        self._adapters[opt_id].restore_slot(self.bound[var_id], slot.slot_name,
                                            self._value(key),
                                            self._slot_done(slot.slot_variable_node_id))

    def _slot_done(self, slot_node: int) -> Any:
        def done() -> None:
            self.pending_slots.pop(slot_node, None)
            self.applied.add(slot_node)
        return done

    def _decodable(self, key: str) -> bool:
        """Whether ``key`` is in the bundle with a dtype that decodes to a value."""
        reader = self._open_reader()
        return key in reader and has_array_form(reader.entry(key).dtype)

    def _value(self, key: str) -> BundleValue:
        return BundleValue(self._open_reader(), key, self._device, self._reads, self._staging)

    def _open_reader(self) -> BundleReader:
        if self.reader is None:  # cannot happen: the reader is released only when idle
            raise RuntimeError("restore session already closed")
        return self.reader

    # --- bookkeeping -----------------------------------------------------------------------

    @functools.cached_property
    def paths(self) -> FirstPaths:
        """The saved graph's first paths, for reports (made on first use)."""
        return self.graph.paths()

    def describe(self, node_id: int) -> str:
        return self.graph.describe(node_id, self.paths)

    def report(self) -> MatchReport:
        waiting = self._waiting_nodes()
        unplaced = self._unbound_below(self.unplaced) | set(self.unplaced)
        elsewhere = self._unbound_below(self.other_ranks) | unplaced
        matched = sorted(self.describe(i) for i in self.applied)
        pending = sorted(self.describe(i) for i in waiting
                         if _has_own_values(self.graph.nodes[i]))
        unused = sorted(self.describe(i) for i, n in enumerate(self.graph.nodes)
                        if _has_own_values(n) and i not in self.applied and i not in waiting
                        and i not in elsewhere)
        unplaced_values = sorted(self.describe(i) for i in unplaced
                                 if _has_own_values(self.graph.nodes[i]))
        return MatchReport(matched, unused, self._unmatched_live(), pending, unplaced_values)

    def _waiting_nodes(self) -> set[int]:
        """Nodes whose values can still land: everything under a watched edge, and
        slots whose variable is bound or itself under a watched edge."""
        waiting = self._unbound_below(self._watched_nodes())
        for slot_node, var_node in self.pending_slots.items():
            if var_node in waiting or (var_node in self.bound
                                       and holds_data(self.bound[var_node])):
                waiting.add(slot_node)
        return waiting

    def _watched_nodes(self) -> list[int]:
        """The node each watched ``(parent, local name)`` edge leads to (its first
        child of that name), each parent's children listed once."""
        first_child: dict[int, dict[str, int]] = {}
        for parent, _ in self.pending:
            if parent not in first_child:
                named: dict[str, int] = {}
                for c in self.graph.nodes[parent].children:
                    named.setdefault(c.local_name, c.node_id)
                first_child[parent] = named
        return [first_child[parent][name] for parent, name in self.pending]

    def _unbound_below(self, starts: list[int]) -> set[int]:
        """Every unbound node reachable from ``starts`` without passing a bound node,
        through children and slot links: one walk for all starts, O(nodes + edges)."""
        seen: set[int] = set()
        stack = list(starts)
        while stack:
            i = stack.pop()
            if i in seen or i in self.bound:
                continue
            seen.add(i)
            node = self.graph.nodes[i]
            stack.extend(c.node_id for c in node.children)
            stack.extend(s.slot_variable_node_id for s in node.slot_variables)
        return seen

    def _unmatched_live(self) -> list[str]:
        """Live objects holding values that no checkpoint value reached or is waiting
        for (a lazy parameter whose value waits for its first forward is not one)."""
        walk, adapters = walk_live(self.root, self._registry)
        bound_ids: dict[Hashable, int] = {}  # each live object's first bound node
        for node_id, obj in self.bound.items():
            bound_ids.setdefault(identity(obj), node_id)
        waiting_live = set()
        for parent, name in self.pending:
            adapter = self._adapters.get(parent)
            live = adapter.child(name) if adapter is not None else None
            if live is not None:
                waiting_live.add(identity(live))
        out = []
        restored = self._restored_slots()
        for obj, path, maybe in zip(walk.objects, walk.paths, adapters):
            adapter = leaf_adapter(maybe, obj)
            found = bound_ids.get(identity(obj))
            if adapter.holds_values and identity(obj) not in waiting_live:
                if found is None or found not in self.applied:
                    out.append(readable_path(path))
            for variable, slot_name, _ in adapter.slot_variables():
                var_node = bound_ids.get(identity(variable))
                if (found, var_node, slot_name) not in restored:
                    var_path = walk.paths[walk.ids[identity(variable)]] \
                        if identity(variable) in walk.ids else ("<unreachable>",)
                    out.append(f"{readable_path(path)} state '{slot_name}' of "
                               f"{readable_path(var_path)}")
        return sorted(out)

    def _restored_slots(self) -> set[tuple[int, int, str]]:
        """``(optimizer node, variable node, slot name)`` of every applied slot, for
        lookups in constant time (an optimizer node may list very many slots)."""
        return {(opt_node, s.original_variable_node_id, s.slot_name)
                for opt_node in self._adapters
                for s in self.graph.nodes[opt_node].slot_variables
                if s.slot_variable_node_id in self.applied}

    def _release(self) -> None:
        """Close the files once no value can arrive any more (nothing is watched)."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def close(self) -> None:
        """Stop waiting: remove every hook and close the files."""
        for handle in self.pending.values():
            if handle is not None:
                handle.remove()
        self.pending.clear()
        self._release()


def _is_plain_leaf(node: GraphNode) -> bool:
    """A node of one ``VARIABLE_VALUE`` and nothing else: a tensor's, read in a batch
    when bound to a host tensor (:meth:`RestoreSession._land_batched` decides)."""
    return (len(node.attributes) == 1 and not node.children and not node.slot_variables
            and node.attributes[0].name == VARIABLE_VALUE_KEY)


def _has_own_values(node: GraphNode) -> bool:
    return bool(node.attributes)
