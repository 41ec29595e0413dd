"""Data-parallel resume, exactly; per-rank state; saves on a subset of the ranks.

The runs are ``resume_phases.py``'s (fresh gloo process groups on CPU): a
2-rank DDP run and a 2-rank FSDP2 run, each uninterrupted, then killed with
SIGKILL after step ``KILL_AFTER`` and resumed by fresh processes from the
checkpoint of step ``RESUME_FROM``. Losses are compared as ``float.hex``
strings, parameters as bytes: bit for bit.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from resume_phases import KILL_AFTER, RESUME_FROM, STEPS, SUBSET_TIMEOUT_S, _dataset, _digest
from torch import nn
from torch.utils.data import DataLoader

import torchckpt
from torchckpt.data import ResumableLoader
from torchckpt.errors import UnmatchedError
from torchckpt.format import BundleReader


def _losses(run, name: str, rank: int) -> list[tuple[int, str]]:
    text = (run.workdir / f"{name}-{rank}.log").read_text()
    return [(int(step), loss) for step, loss in (line.split() for line in text.splitlines())]


def _check_exact_resume(run, parallel: str) -> None:
    run.check(f"{parallel}_full", f"{parallel}_killed", f"{parallel}_resumed")
    full_by_rank = []
    for rank in range(2):
        full = _losses(run, f"{parallel}_full", rank)
        assert [s for s, _ in full] == list(range(1, STEPS + 1))
        killed = _losses(run, f"{parallel}_killed", rank)
        assert killed == full[:KILL_AFTER], f"rank {rank}: the killed run before the kill"
        resumed = _losses(run, f"{parallel}_resumed", rank)
        assert resumed == full[RESUME_FROM:], f"rank {rank}: the resumed run differs"
        done_full = run.json(f"{parallel}_full-{rank}.log.json")
        done_resumed = run.json(f"{parallel}_resumed-{rank}.log.json")
        assert done_resumed["params"] == done_full["params"], f"rank {rank}: final parameters"
        assert done_resumed["full"] == done_full["full"]
        full_by_rank.append([loss for _, loss in full])
    # the ranks really run different streams (data and dropout): a rank restored with the
    # other's state would differ
    assert all(a != b for a, b in zip(*full_by_rank))


def test_ddp_killed_and_resumed_equals_uninterrupted(resume_run) -> None:
    _check_exact_resume(resume_run, "ddp")


def test_fsdp2_killed_and_resumed_equals_uninterrupted(resume_run) -> None:
    _check_exact_resume(resume_run, "fsdp")


def test_per_rank_values_are_stored_once_per_rank(resume_run) -> None:
    resume_run.check("ddp_full")
    prefix = resume_run.json("ddp_full-0.log.json")["latest"]
    keys = [k for k, _ in torchckpt.list_variables(prefix)]
    for name in ("rng", "data"):
        for rank in range(2):
            assert f"{name}/rank_{rank}_of_2/.ATTRIBUTES/py_state" in keys
        assert not any(k.startswith(f"{name}/.ATTRIBUTES/") for k in keys)
    with BundleReader(prefix) as reader:  # each rank wrote its own per-rank values
        for rank in range(2):
            entry = reader.entry(f"rng/rank_{rank}_of_2/.ATTRIBUTES/tensor_0")
            assert entry.shard_id == rank
        a = reader.read_array("rng/rank_0_of_2/.ATTRIBUTES/tensor_0")
        b = reader.read_array("rng/rank_1_of_2/.ATTRIBUTES/tensor_0")
        assert not np.array_equal(a, b)


def _plain_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


@pytest.mark.parametrize("parallel, optimizer", [("ddp", "sgd"), ("fsdp", "adam")])
def test_another_world_size_restores_shared_values_and_reports_per_rank(
        resume_run, parallel: str, optimizer: str) -> None:
    """One process restoring a 2-rank checkpoint: model and optimizer state land (FSDP2's
    shards reassembled), the per-rank values have no rank to go to and are reported."""
    resume_run.check(f"{parallel}_full")
    done = resume_run.json(f"{parallel}_full-0.log.json")
    model = _plain_model()
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    loader = ResumableLoader(DataLoader(_dataset(), batch_size=4, shuffle=True))
    ckpt = torchckpt.Checkpoint(model=model, optimizer=opt, data=loader,
                                rng=torchckpt.RNGState(), step=0)
    status = ckpt.restore(done["latest"])
    for name, p in model.named_parameters():
        assert p.detach().numpy().tobytes().hex() == done["full"][name], name
    if parallel == "ddp":
        assert _digest(model) == done["params"]
    assert ckpt.step == STEPS and loader.batches_consumed == 0
    report = status.report()
    per_rank = [f"{n}.rank_{r}_of_2" for n in ("data", "rng") for r in range(2)]
    assert report.unplaced_per_rank == per_rank
    assert report.unmatched_live == ["data", "rng"]
    assert report.unused_in_checkpoint == [] and report.pending == []
    assert all(opt.state[p] for p in model.parameters())  # optimizer state landed
    with pytest.raises(UnmatchedError, match="rng.rank_1_of_2"):
        status.assert_consumed()


def test_one_rank_saves_alone_with_collective_false(resume_run, tmp_path) -> None:
    resume_run.check("one_rank_save")
    done = resume_run.json("one_rank.json")
    directory = os.path.dirname(done["path"])
    assert sorted(os.listdir(directory)) == ["checkpoint", "ckpt-1.data-00000-of-00001",
                                             "ckpt-1.index"]
    assert torchckpt.latest_checkpoint(directory) == done["path"]
    keys = [k for k, _ in torchckpt.list_variables(done["path"])]
    assert "rng/rank_0_of_2/.ATTRIBUTES/py_state" in keys  # the saving rank's own state
    assert not any("rank_1_of_2" in k for k in keys)
    model = _plain_model()
    ckpt = torchckpt.Checkpoint(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1))
    ckpt.restore(done["path"]).expect_partial()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), torch.tensor(done["params"][name])), name


def test_one_rank_save_refuses_sharded_values(resume_run) -> None:
    resume_run.check("one_rank_save")
    outcome = resume_run.json("one_rank_fsdp.json")
    assert outcome["raised"] == "DistributedCheckpointError", outcome
    assert "model/0/weight/.ATTRIBUTES/VARIABLE_VALUE" in outcome["message"]
    assert "call save() on every rank" in outcome["message"]
    assert not os.path.exists(resume_run.workdir / "one_rank_fsdp")


@pytest.mark.parametrize("saver", [0, 1])
def test_save_on_one_rank_raises_within_the_timeout(resume_run, saver: int) -> None:
    """``if rank == saver: ckpt.save(...)`` with the default options: the saver raises a
    CollectiveTimeoutError stating the rule within the timeout; nothing hangs."""
    resume_run.check(f"rank{saver}_only")
    outcome = resume_run.json(f"subset{saver}-{saver}.json")
    assert outcome["raised"] == "CollectiveTimeoutError" and outcome["is_torchckpt"], outcome
    assert outcome["ranks"] == [1 - saver]
    message = outcome["message"]
    assert "is collective: every rank must call it" in message
    assert "CheckpointOptions(collective=False)" in message
    assert SUBSET_TIMEOUT_S - 0.5 < outcome["seconds"] < SUBSET_TIMEOUT_S + 5, outcome
    assert not os.path.exists(resume_run.workdir / f"subset{saver}")  # nothing written
    other = resume_run.json(f"subset{saver}-{1 - saver}.json")
    assert other["raised"] is not None and other["seconds"] < SUBSET_TIMEOUT_S + 10, other
    assert resume_run.phases[f"rank{saver}_only"]["seconds"] < 20

