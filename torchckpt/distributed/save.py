"""The sharded save protocol: plan, agree, write shards, gather entries, merge, commit.

Every rank of the group calls :func:`write` with the same prefix and the same
objects. The steps (each "exchange" is one collective on small tensors)::

    1. plan      each rank: plan_save(root) -> items (planning.py); no I/O yet
    2. exchange  [failed?, chunk bytes, token, sha256(plan)]  -> all ranks stop
                 on any failure or any disagreement (prefix, keys, shapes,
                 meshes); rank 0's token names every temporary file of the save
    3. write     rank r: its items -> prefix.data-r-of-N under its temporary
                 name, fsynced (not yet renamed)
    4. exchange  [failed?, size of r's encoded entries] -> stop on any failure
                 (each rank then removes its own temporary file)
    5. gather    the entries (wire.py bytes in a uint8 tensor) to rank 0
    6. commit    rank 0: merge (merge.py), write prefix.index under its
                 temporary name, rename every rank's data file and then the
                 index into place (``format/commit.py``: crash-safe over an
                 existing prefix too), then ``after(prefix)`` (the state file)
    7. broadcast rank 0's outcome; every rank returns or raises together

The index is the commit marker and is renamed into place only after step 4
proved every shard durable, and the state file only after the index: a crash
anywhere leaves the previous version of the prefix (or none) or the complete
new one, and ``latest`` still names the previous checkpoint until step 6 ends.
Temporary files of a save whose rank 0 died stay behind (never read by
anyone); ``CheckpointManager`` removes those of its numbered prefixes.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from ..format.commit import discard_temps
from ..format.naming import new_token
from ..saving import plan_save
from .comm import CollectiveError, Comm, is_active
from .errors import DistributedCheckpointError
from .merge import MergeError, merge_entries
from .planning import Item, assign_owners, chunk_bytes, plan_digest, plan_items
from .shard_writer import GRAPH_WRITER, write_shard
from .wire import decode_entries, encode_entries

__all__ = ["is_active", "write"]

_DIGEST_WORDS = 4  # sha256 as four int64s


def write(root: Any, prefix: str, *, sync: bool = True, group: Any = None,
          after: Callable[[str], None] | None = None) -> str:
    """Write ``root``'s checkpoint to ``prefix`` from every rank of ``group`` (a collective).

    Args:
        root: the object to save (a ``Checkpoint``), the same structure on every rank.
        prefix: checkpoint prefix, the same on every rank, on a file system all ranks share.
        sync: fsync files before renaming them (crash safety).
        group: the process group (None: the default group).
        after: called with ``prefix`` on rank 0 once the index is durable and before
            any rank returns (``Checkpoint.save`` writes the state file here).

    Returns:
        ``prefix``, on every rank, once the checkpoint is committed.

    Raises:
        DistributedCheckpointError: on every rank, if any rank failed or the ranks
            disagree on what to save.
    """
    comm = Comm(group)
    try:
        return _write(root, prefix, comm, sync, after)
    except CollectiveError as exc:
        raise DistributedCheckpointError(
            prefix, f"lost contact with the other ranks ({exc}); the checkpoint exists only if "
            "its .index does (rank 0 writes it once every data file is durable, and the state "
            "file after it)") from exc


def _write(root: Any, prefix: str, comm: Comm, sync: bool,
           after: Callable[[str], None] | None) -> str:
    items, graph, failed = _plan(root, comm)
    digest = plan_digest(prefix, comm.size, items, graph)
    rows = comm.all_gather_ints([failed is not None, chunk_bytes(items), int(new_token()),
                                 *_words(digest)])
    _check(prefix, rows, "could not plan the save (see that rank's error)", failed)
    token = str(rows[0][2])
    if any(row[3:] != rows[0][3:] for row in rows):
        raise DistributedCheckpointError(
            prefix, "the ranks are not saving the same checkpoint: call save/write on every "
            "rank with the same prefix and the same objects (same model structure, "
            "shapes, dtypes and meshes)",
            ranks=[r for r, row in enumerate(rows) if row[2:] != rows[0][2:]])
    loads = [row[1] for row in rows]
    loads[GRAPH_WRITER] += len(graph)
    owners = assign_owners(items, loads)
    payload, failed = b"", None
    try:
        payload = encode_entries(write_shard(prefix, comm.rank, comm.size, items, owners,
                                             graph, sync=sync, token=token))
    except Exception as exc:
        failed = exc
    rows = comm.all_gather_ints([failed is not None, len(payload)])
    if comm.rank == 0 and any(row[0] for row in rows):
        discard_temps(prefix, token)
    _check(prefix, rows, "could not write its data file (see that rank's error)", failed)
    parts = comm.gather_bytes(payload, [row[1] for row in rows])
    failed = None
    if comm.rank == 0:
        try:
            _commit(prefix, comm.size, parts, items, sync, after, token)
        except Exception as exc:
            failed = exc
            discard_temps(prefix, token)  # keeps those of a commit already recorded
    if comm.broadcast_int(failed is not None):
        detail = f": {failed}" if failed is not None else " (see rank 0's error)"
        raise DistributedCheckpointError(prefix, f"rank 0 could not merge, write the index or "
                                         f"run the commit callback{detail}", ranks=[0]) from failed
    return prefix


def _plan(root: Any, comm: Comm) -> tuple[list[Item], bytes, Exception | None]:
    try:
        plan = plan_save(root)
        return plan_items(plan, comm.group_rank), plan.graph.to_bytes(), None
    except Exception as exc:  # reported to the peers before raising, so they do not wait
        return [], b"", exc


def _check(prefix: str, rows: list[list[int]], what: str, mine: Exception | None) -> None:
    bad = [r for r, row in enumerate(rows) if row[0]]
    if bad:
        raise DistributedCheckpointError(prefix, f"rank(s) {bad} {what}", ranks=bad) from mine


def _commit(prefix: str, world: int, parts: list[bytes], items: list[Item], sync: bool,
            after: Callable[[str], None] | None, token: str) -> None:
    from ..format import write_index
    from ..graph.keys import OBJECT_GRAPH_PROTO_KEY

    try:
        merged = merge_entries([decode_entries(p) for p in parts])
    except (MergeError, ValueError) as exc:
        raise DistributedCheckpointError(prefix, f"cannot merge the ranks' index entries: "
                                         f"{exc}") from exc
    expected = {i.key.encode("utf-8") for i in items} | {OBJECT_GRAPH_PROTO_KEY.encode()}
    missing = sorted(expected - set(merged))
    if missing:
        raise DistributedCheckpointError(prefix, f"no rank wrote {missing[:5]}"
                                         f"{' ...' if len(missing) > 5 else ''}")
    write_index(prefix, world, merged, sync=sync, token=token)
    if after is not None:
        after(prefix)


def _words(digest: bytes) -> list[int]:
    return list(struct.unpack(f"<{_DIGEST_WORDS}q", digest[:8 * _DIGEST_WORDS]))
