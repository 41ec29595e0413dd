"""Sharded saves restored bit-exactly on other world sizes and meshes.

4 ranks save DDP + Adam, FSDP2 (``fully_shard`` on CPU/gloo) + Adam and
DTensors on a 2x2 mesh; 2 ranks restore them (4 -> 2), save again, and 4
ranks restore that (2 -> 4); this process alone consolidates the 4-rank
checkpoints into plain modules (4 -> 1). Values compare by checkpoint key,
bit for bit, with the saving ranks' own (gathered) values.
"""

from __future__ import annotations

import os

import pytest
import torch
from compare import assert_same_values
from dist_harness import dt_module, full_values, load_dump, mlp

from torchckpt import Checkpoint
from torchckpt.format import BundleReader


def _same(run, saved: str, restored: str) -> None:
    want, want_strings = load_dump(run.workdir, saved)
    got, got_strings = load_dump(run.workdir, restored)
    assert_same_values(want, got, f"{restored} vs {saved}")
    assert got_strings == want_strings


def test_ddp_4_to_2_to_4(dist_run) -> None:
    dist_run.check("save4", "on2", "on4")
    _same(dist_run, "ddp4", "ddp4_on2")
    _same(dist_run, "ddp2", "ddp2_on4")
    # 2 -> 4 restored the state after one more step, not the 4-rank one
    key = "model/0/weight/.ATTRIBUTES/VARIABLE_VALUE"
    after_step = load_dump(dist_run.workdir, "ddp2")[0][key]
    assert after_step.tobytes() != load_dump(dist_run.workdir, "ddp4")[0][key].tobytes()


def test_fsdp2_4_to_2_to_4(dist_run) -> None:
    dist_run.check("save4", "on2", "on4")
    _same(dist_run, "fsdp4", "fsdp4_on2")  # into a fresh optimizer: state made as DTensors
    _same(dist_run, "fsdp2", "fsdp2_on4")  # into existing DTensor state, in place


def test_dtensor_2d_mesh_to_1d_mesh(dist_run) -> None:
    dist_run.check("save4", "on2")
    _same(dist_run, "dt4", "dt4_on2")


def test_across_parallelisms(dist_run) -> None:
    dist_run.check("save4", "on2")
    _same(dist_run, "ddp4", "ddp4_as_fsdp_on2")
    _same(dist_run, "fsdp4", "fsdp4_as_ddp_on2")


@pytest.mark.parametrize("name", ["ddp4", "fsdp4", "dt4"])
def test_consolidate_4_to_1(dist_run, name: str) -> None:
    """One process, no process group, plain modules: reads the full tensors."""
    dist_run.check("save4")
    if name == "dt4":
        ckpt = Checkpoint(model=dt_module(seed=99, mesh_shape=None))
    else:
        model = mlp(seed=99)
        ckpt = Checkpoint(model=model, optimizer=torch.optim.Adam(model.parameters()))
    ckpt.restore(os.path.join(dist_run.workdir, name, "ckpt-1")).assert_consumed()
    want, _ = load_dump(dist_run.workdir, name)
    assert_same_values(want, full_values(ckpt), f"{name} on 1 process")


def test_sharded_layout(dist_run) -> None:
    """DTensors are TF slices of one logical tensor; replicated values plain, once."""
    dist_run.check("save4")
    with BundleReader(os.path.join(dist_run.workdir, "fsdp4", "ckpt-1")) as r:
        assert r.header.num_shards == 4
        w = r.entry("model/0/weight/.ATTRIBUTES/VARIABLE_VALUE")
        assert w.shape == (10, 6)
        assert [(s.extents[0].start, s.extents[0].length) for s in w.slices] == \
            [(0, 3), (3, 3), (6, 3), (9, 1)]  # torch.chunk's split of 10 rows over 4 ranks
        assert not r.entry("save_counter/.ATTRIBUTES/VARIABLE_VALUE").slices
    with BundleReader(os.path.join(dist_run.workdir, "ddp4", "ckpt-1")) as r:
        assert not any(r.entry(k).slices for k in r.keys())
        assert len({r.entry(k).shard_id for k in r.keys()}) == 4  # replicated writes spread
    with BundleReader(os.path.join(dist_run.workdir, "dt4", "ckpt-1")) as r:
        assert len(r.entry("model/w1/.ATTRIBUTES/VARIABLE_VALUE").slices) == 4  # 2x2 blocks
        assert len(r.entry("model/w2/.ATTRIBUTES/VARIABLE_VALUE").slices) == 2  # bfloat16
        assert not r.entry("model/w3/.ATTRIBUTES/VARIABLE_VALUE").slices  # float16: gathered
        assert len(r.entry("model/w5/.ATTRIBUTES/VARIABLE_VALUE").slices) == 2  # 2 empty chunks
        w6 = r.entry("model/w6/.ATTRIBUTES/VARIABLE_VALUE")  # rank 0's chunk is all of it
        assert not w6.slices and w6.shard_id == 0
