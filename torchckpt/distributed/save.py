"""The sharded save protocol: handshake, plan, agree, write shards, gather entries, commit.

Every rank of the group calls :func:`write` with the same prefix and the same
objects. The steps (each "exchange" is one collective on small tensors)::

    0. handshake every rank waits, at most ``timeout`` seconds, for every other
                 rank to call write() (comm.py); a rank that does not come makes
                 the others raise CollectiveTimeoutError instead of waiting
    1. plan      each rank: plan_save(root) -> items (planning.py); this rank's
                 per-rank values set apart as its fragment (fragments.py)
    2. exchange  [failed?, bytes to write, token, fragment size, sha256(plan)]
                 -> all ranks stop on any failure or any disagreement (prefix,
                 keys, shapes, meshes of the shared values); rank 0's token names
                 every temporary file of the save
    2b. gather   the fragments to rank 0, which merges them into the object graph
    3. write     rank r: its items and its per-rank values -> prefix.data-r-of-N
                 under its temporary name, fsynced (not yet renamed)
    4. exchange  [failed?, size of r's encoded entries] -> stop on any failure
                 (each rank then removes its own temporary file)
    5. gather    the entries (wire.py bytes in a uint8 tensor) to rank 0
    6. commit    rank 0: merge (merge.py), write prefix.index under its
                 temporary name, rename every rank's data file and then the
                 index into place (``format/commit.py``: crash-safe over an
                 existing prefix too), then ``after(prefix)`` (the state file)
    7. broadcast rank 0's outcome; every rank returns or raises together

Step 0 also orders the save after whatever rank 0 did before calling write()
(``CheckpointManager`` removes leftovers there): no rank writes a byte before
every rank has arrived.

The index is the commit marker and is renamed into place only after step 4
proved every shard durable, and the state file only after the index: a crash
anywhere leaves the previous version of the prefix (or none) or the complete
new one, and ``latest`` still names the previous checkpoint until step 6 ends.
Temporary files of a save whose rank 0 died stay behind (never read by
anyone); ``CheckpointManager`` removes those of its numbered prefixes.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UntrackableError
from ..format.commit import discard_temps
from ..format.naming import data_path, index_path, new_token, temp_path
from ..format.storage import StorageOptions, basename, dirname, filesystem, is_remote
from ..graph.keys import OBJECT_GRAPH_PROTO_KEY
from ..graph.object_graph import ObjectGraph
from ..saving import SavePlan, plan_save
from .comm import CollectiveError, Comm, is_active
from .errors import CollectiveTimeoutError, DistributedCheckpointError
from .fragments import merge_fragments, split_per_rank
from .merge import MergeError, merge_entries
from .per_rank import process_rank
from .planning import Item, Kind, assign_owners, chunk_bytes, plan_digest, plan_items
from .shard_writer import GRAPH_WRITER, write_shard
from .wire import decode_entries, encode_entries

__all__ = ["DEFAULT_TIMEOUT_S", "is_active", "write"]

_DIGEST_WORDS = 4  # sha256 as four int64s

# How long a rank waits for the others to join a save (step 0). Ranks of a data-parallel
# job reach a save within a step of each other; this leaves minutes for rank-0-only work
# (logging, a short evaluation) before it, and still ends a subset call in bounded time.
DEFAULT_TIMEOUT_S = 300.0


@dataclass
class _Plan:
    """This rank's part of the save: shared items, per-rank items, graphs."""

    items: list[Item] = field(default_factory=list)
    own: list[Item] = field(default_factory=list)
    graph: ObjectGraph | None = None
    graph_bytes: bytes = b""
    fragment: bytes = b""


def write(root: Any, prefix: str, *, sync: bool = True, group: Any = None,
          after: Callable[[str], None] | None = None,
          timeout: float = DEFAULT_TIMEOUT_S,
          storage_options: StorageOptions | None = None) -> str:
    """Write ``root``'s checkpoint to ``prefix`` from every rank of ``group`` (a collective).

    Args:
        root: the object to save (a ``Checkpoint``), the same structure on every rank
            (per-rank objects excepted: each rank saves its own).
        prefix: checkpoint prefix, the same on every rank, on a file system all ranks share.
        sync: fsync files before renaming them (crash safety).
        group: the process group (None: the default group).
        after: called with ``prefix`` on rank 0 once the index is durable and before
            any rank returns (``Checkpoint.save`` writes the state file here).
        timeout: seconds to wait for every rank to call ``write`` (step 0).
        storage_options: for an object-store URL ``prefix`` (fsspec's options).

    Returns:
        ``prefix``, on every rank, once the checkpoint is committed.

    Raises:
        CollectiveTimeoutError: on the ranks that called, if some rank did not call
            within ``timeout`` seconds.
        DistributedCheckpointError: on every rank, if any rank failed or the ranks
            disagree on what to save.
    """
    comm = Comm(group)
    joined = comm.handshake(timeout)
    if joined.absent:
        raise CollectiveTimeoutError(prefix, ranks=[comm.global_rank(r) for r in joined.absent],
                                     world=comm.size, timeout=timeout, detail=joined.detail)
    try:
        if not is_remote(prefix):
            return _write(root, prefix, comm, sync, after, _Files(prefix))
        with tempfile.TemporaryDirectory(prefix="torchckpt-upload-") as tmp:
            files = _Files(os.path.join(tmp, basename(prefix)),
                           remote=prefix, fs=filesystem(prefix, storage_options))
            return _write(root, prefix, comm, sync, after, files)
    except CollectiveError as exc:
        raise DistributedCheckpointError(
            prefix, f"lost contact with the other ranks ({exc}); the checkpoint exists only if "
            "its .index does (rank 0 writes it once every data file is durable, and the state "
            "file after it)") from exc


class _Files:
    """Where the ranks write the bundle: ``prefix`` itself on a shared file system; for an
    object-store URL, a local staging prefix per rank whose sealed data file each rank
    uploads to its final name, rank 0 uploading the index last (no rename on such
    stores: the index is the commit marker, as in ``format/storage.py``)."""

    def __init__(self, local: str, *, remote: str | None = None, fs: Any = None) -> None:
        self.local, self.remote, self.fs = local, remote, fs

    def retire_old_index(self) -> None:
        """Rank 0, before any rank replaces a data file: an older version of the remote
        prefix stops existing first, so no reader ever sees its index over new data."""
        if self.remote is not None and self.fs.exists(index_path(self.remote)):
            self.fs.rm_file(index_path(self.remote))
            self.fs.invalidate_cache(dirname(self.remote))

    def publish_data(self, rank: int, world: int, token: str) -> None:
        if self.remote is not None:
            sealed = temp_path(data_path(self.local, rank, world), token)
            self.fs.put_file(sealed, data_path(self.remote, rank, world))

    def publish_index(self) -> None:
        if self.remote is not None:
            self.fs.put_file(index_path(self.local), index_path(self.remote))
            self.fs.invalidate_cache(dirname(self.remote))


def _write(root: Any, prefix: str, comm: Comm, sync: bool,
           after: Callable[[str], None] | None, files: _Files) -> str:
    if comm.rank == 0:
        files.retire_old_index()
    plan, failed = _plan(root, comm)
    rows = _agree(prefix, comm, plan, failed)
    token = str(rows[0][2])
    sizes = [row[3] for row in rows]
    fragments = comm.gather_bytes(plan.fragment, sizes)  # no collective when all are empty
    graph_bytes, expected, failed = plan.graph_bytes, set[bytes](), None
    if comm.rank == 0:
        graph_bytes, expected, failed = _merged_graph(prefix, plan, fragments, comm.size)
    loads = [row[1] for row in rows]
    loads[GRAPH_WRITER] += len(plan.graph_bytes) + sum(sizes)
    owners = assign_owners(plan.items, loads) + [comm.rank] * len(plan.own)
    payload = b""
    try:
        payload = encode_entries(write_shard(files.local, comm.rank, comm.size,
                                             plan.items + plan.own, owners, graph_bytes,
                                             sync=sync, token=token))
        files.publish_data(comm.rank, comm.size, token)
    except Exception as exc:
        failed = failed or exc
    rows = comm.all_gather_ints([failed is not None, len(payload)])
    if comm.rank == 0 and any(row[0] for row in rows):
        discard_temps(files.local, token)
    _check(prefix, rows, "could not write its data file (see that rank's error)", failed)
    parts = comm.gather_bytes(payload, [row[1] for row in rows])
    failed = None
    if comm.rank == 0:
        try:
            _commit(prefix, comm.size, parts, expected, sync, after, token, files)
        except Exception as exc:
            failed = exc
            discard_temps(files.local, token)  # keeps those of a commit already recorded
    if comm.broadcast_int(failed is not None):
        detail = f": {failed}" if failed is not None else " (see rank 0's error)"
        raise DistributedCheckpointError(prefix, f"rank 0 could not merge, write the index or "
                                         f"run the commit callback{detail}", ranks=[0]) from failed
    return prefix


def _agree(prefix: str, comm: Comm, plan: _Plan, failed: Exception | None) -> list[list[int]]:
    """Step 2: every rank's ``[failed?, bytes to write, token, fragment size, *digest]``, once
    every rank planned and all agree on the shared part of the checkpoint.

    Raises:
        DistributedCheckpointError: a rank failed to plan, or the plans differ.
    """
    digest = plan_digest(prefix, comm.size, plan.items, plan.graph_bytes)
    load = chunk_bytes(plan.items) + sum(i.nbytes for i in plan.own)
    rows = comm.all_gather_ints([failed is not None, load, int(new_token()), len(plan.fragment),
                                 *_words(digest)])
    _check(prefix, rows, "could not plan the save (see that rank's error)", failed)
    if any(row[4:] != rows[0][4:] for row in rows):
        raise DistributedCheckpointError(
            prefix, "the ranks are not saving the same checkpoint: call save/write on every "
            "rank with the same prefix and the same objects (same model structure, "
            "shapes, dtypes and meshes)",
            ranks=[r for r, row in enumerate(rows) if row[4:] != rows[0][4:]])
    return rows


def _plan(root: Any, comm: Comm) -> tuple[_Plan, Exception | None]:
    try:
        rank, world = process_rank()
        split = split_per_rank(root, plan_save(root), rank, world)
        items = plan_items(split.shared, comm.group_rank)
        own = plan_items(SavePlan(split.shared.graph, split.own_tensors, split.own_strings),
                         comm.group_rank)
        sharded = [i.key for i in own if i.kind not in (Kind.TENSOR, Kind.STRING)
                   or i.holders is not None]
        if sharded:
            raise UntrackableError(f"per-rank values must be plain tensors, not DTensors: "
                                   f"{sharded[:5]}")
        graph = split.shared.graph
        return _Plan(items, own, graph, graph.to_bytes(), split.fragment), None
    except Exception as exc:  # reported to the peers before raising, so they do not wait
        return _Plan(), exc


def _merged_graph(prefix: str, plan: _Plan, fragments: list[bytes],
                  world: int) -> tuple[bytes, set[bytes], Exception | None]:
    """Rank 0: the object graph to write (with every rank's per-rank nodes) and the keys
    the merged index must hold; or the shared ones and the error."""
    graph = plan.graph
    try:
        if graph is not None and any(fragments):
            graph = merge_fragments(graph, fragments, world)
    except Exception as exc:
        return plan.graph_bytes, set(), DistributedCheckpointError(
            prefix, f"cannot merge the ranks' per-rank values: {exc}")
    if graph is None:
        return plan.graph_bytes, set(), None
    expected = {a.checkpoint_key.encode("utf-8") for n in graph.nodes for a in n.attributes}
    expected.add(OBJECT_GRAPH_PROTO_KEY.encode())
    return (graph.to_bytes() if graph is not plan.graph else plan.graph_bytes), expected, None


def _check(prefix: str, rows: list[list[int]], what: str, mine: Exception | None) -> None:
    bad = [r for r, row in enumerate(rows) if row[0]]
    if bad:
        raise DistributedCheckpointError(prefix, f"rank(s) {bad} {what}", ranks=bad) from mine


def _commit(prefix: str, world: int, parts: list[bytes], expected: set[bytes], sync: bool,
            after: Callable[[str], None] | None, token: str, files: _Files) -> None:
    from ..format import write_index

    try:
        merged = merge_entries([decode_entries(p) for p in parts])
    except (MergeError, ValueError) as exc:
        raise DistributedCheckpointError(prefix, f"cannot merge the ranks' index entries: "
                                         f"{exc}") from exc
    missing = sorted(expected - set(merged))
    if missing:
        raise DistributedCheckpointError(prefix, f"no rank wrote {missing[:5]}"
                                         f"{' ...' if len(missing) > 5 else ''}")
    write_index(files.local, world, merged, sync=sync, token=token)
    files.publish_index()
    if after is not None:
        after(prefix)


def _words(digest: bytes) -> list[int]:
    return list(struct.unpack(f"<{_DIGEST_WORDS}q", digest[:8 * _DIGEST_WORDS]))
