"""Each rank writes only its own data file, and each value exactly once.

``dist_harness.measure_shard_writes`` records, per rank and save, the bytes
its ``write_shard`` passed to write syscalls (``wchar`` in /proc/self/io); it
must equal the size of that rank's data file and nothing else. The merged
index must account for every byte of every data file, and hold each value's
bytes exactly once (a replicated tensor is not written by several ranks).
"""

from __future__ import annotations

import os

from dist_harness import load_dump

from torchckpt.format import BundleReader, data_path
from torchckpt.format.slices import encode_slice_key


def _stored_bytes(r: BundleReader, key: str) -> int:
    e = r.entry(key)
    if not e.slices:
        return e.size
    return sum(r.entry(encode_slice_key(key.encode(), s)).size for s in e.slices)


def test_each_rank_writes_only_its_shard(dist_run) -> None:
    dist_run.check("save4")
    measured = {}
    for rank in range(4):
        for rec in dist_run.json(f"writes-save4-{rank}.json"):
            assert rec["rank"] == rank and rec["world"] == 4
            measured[(os.path.basename(os.path.dirname(rec["prefix"])), rank)] = rec["wchar"]
    for name in ("ddp4", "fsdp4"):
        prefix = os.path.join(dist_run.workdir, name, "ckpt-1")
        sizes = [os.path.getsize(data_path(prefix, r, 4)) for r in range(4)]
        assert [measured[(name, r)] for r in range(4)] == sizes, name
        assert all(s > 0 for s in sizes), f"{name}: some rank wrote nothing: {sizes}"
        with BundleReader(prefix) as r:
            per_shard = [0] * 4
            for k in r.keys():
                e = r.entry(k)
                if not e.slices:
                    per_shard[e.shard_id] += e.size
            assert per_shard == sizes, f"{name}: data files hold bytes no entry names"
            values, _ = load_dump(dist_run.workdir, name)
            for key, value in values.items():
                assert _stored_bytes(r, key) == value.nbytes, f"{name}: {key} not stored once"


def test_fsdp_ranks_write_their_own_chunks(dist_run) -> None:
    """Rank r's data file holds exactly rank r's rows of every FSDP2-sharded value."""
    dist_run.check("save4")
    with BundleReader(os.path.join(dist_run.workdir, "fsdp4", "ckpt-1")) as r:
        for k in r.keys():
            e = r.entry(k)
            for s in e.slices:
                part = r.entry(encode_slice_key(k, s))
                start, length = s.extents[0].start, s.extents[0].length
                rows = e.shape[0]
                chunk = -(-rows // 4)
                assert start == part.shard_id * chunk and length == min(chunk, rows - start), k
