"""A rank killed mid-save leaves the previous checkpoint latest and intact; with several
ranks, ``CheckpointManager`` is owned by rank 0 and every rank's view agrees.

Two crashes in the same directory, then recovery (see ``dist_phases``):

* rank 1 SIGKILLed after part of its data file is on disk;
* rank 0 SIGKILLed after every data file is durable, just before the index.

After each, ``latest`` still names ``ckpt-1`` and ``ckpt-2`` has no index; the
surviving rank raised within seconds (gloo notices the closed connection; the
process group's timeout bounds a hung peer). A new group then restores the
latest (bit-exactly ``ckpt-1``) and saves ``ckpt-2`` over the leftovers.

The same with ``CheckpointManager`` on every rank (``manager`` phases): rank 0
alone writes the state file and deletes, every rank lists the same
checkpoints after each save, a rank killed mid-save leaves the previous
checkpoint as the latest on disk and in the survivor's manager, and the next
group resumes from it and saves over the leftovers.
"""

from __future__ import annotations

import os

import torch
from compare import assert_same_values
from dist_harness import PG_TIMEOUT_S, full_values, load_dump, mlp

from torchckpt import Checkpoint
from torchckpt.format.naming import TEMP_INFIX


def _previous_is_latest(run, phase: str) -> None:
    state = run.json(f"after-{phase}.json")
    assert state["latest"] == os.path.join(run.workdir, "crash", "ckpt-1")
    assert "ckpt-2.index" not in state["files"]
    assert "ckpt-1.index" in state["files"]


def _survivor_raised(run, phase: str, rank: int) -> None:
    outcome = run.json(f"{phase}-{rank}.json")
    assert outcome["raised"] == "DistributedCheckpointError", outcome
    assert outcome["seconds"] < PG_TIMEOUT_S, outcome


def test_writer_killed_mid_write(dist_run) -> None:
    dist_run.check("crash_first", "crash_writer")
    _survivor_raised(dist_run, "crash_writer", rank=0)
    _previous_is_latest(dist_run, "crash_writer")


def test_committer_killed_before_index(dist_run) -> None:
    dist_run.check("crash_first", "crash_writer", "crash_committer")
    _survivor_raised(dist_run, "crash_committer", rank=1)
    _previous_is_latest(dist_run, "crash_committer")
    files = dist_run.json("after-crash_committer.json")["files"]
    # both data files are durable under the save's shared temporary token, not yet renamed
    # (the earlier crashed save left temporary files of its own token too)
    by_token: dict[str, list[str]] = {}
    for f in files:
        if f.startswith("ckpt-2.data-") and TEMP_INFIX in f:
            final, token = f.split(TEMP_INFIX)
            by_token.setdefault(token, []).append(final)
    assert ["ckpt-2.data-00000-of-00002", "ckpt-2.data-00001-of-00002"] in [
        sorted(v) for v in by_token.values()], files
    assert "ckpt-2.index" not in files and "ckpt-2.data-00000-of-00002" not in files


def test_next_save_succeeds(dist_run) -> None:
    dist_run.check("crash_first", "crash_writer", "crash_committer", "crash_recover")
    first, _ = load_dump(dist_run.workdir, "crash1")
    recovered, _ = load_dump(dist_run.workdir, "crash_recovered")
    assert_same_values(first, recovered, "ckpt-1 after two crashed saves")
    state = dist_run.json("after-crash_recover.json")
    second = os.path.join(dist_run.workdir, "crash", "ckpt-2")
    assert state["latest"] == second
    model = mlp(seed=0)
    ckpt = Checkpoint(model=model, optimizer=torch.optim.Adam(model.parameters()))
    ckpt.restore(second).assert_consumed()
    want, _ = load_dump(dist_run.workdir, "crash2")
    assert_same_values(want, full_values(ckpt), "ckpt-2 saved after the crashes")


def test_ranks_that_disagree_all_refuse(dist_run) -> None:
    """Different prefixes (or objects) on different ranks: every rank raises, nothing written."""
    dist_run.check("disagree")
    for rank in range(2):
        outcome = dist_run.json(f"disagree-{rank}.json")
        assert outcome["raised"] == "DistributedCheckpointError", outcome
        assert "same prefix" in outcome["message"]
    assert not os.path.exists(os.path.join(dist_run.workdir, "disagree"))


def test_a_failed_write_fails_every_rank(dist_run) -> None:
    dist_run.check("write_error")
    for rank in range(2):
        outcome = dist_run.json(f"write_error-{rank}.json")
        assert outcome["raised"] == "DistributedCheckpointError", outcome
        assert outcome["ranks"] == [1]
    files = os.listdir(os.path.join(dist_run.workdir, "write_error"))
    assert "ckpt.index" not in files
    assert not any(".tempstate" in f for f in files), files  # rank 1 removed its temporary


def test_manager_ranks_agree_and_rank0_owns_the_directory(dist_run) -> None:
    dist_run.check("manager_saves")
    ranks = [dist_run.json(f"manager_saves-{rank}.json") for rank in range(2)]
    assert ranks[0]["views"] == ranks[1]["views"] == [
        {"latest": "ckpt-1", "checkpoints": ["ckpt-1"]},
        {"latest": "ckpt-2", "checkpoints": ["ckpt-1", "ckpt-2"]},
        {"latest": "ckpt-3", "checkpoints": ["ckpt-2", "ckpt-3"]}]
    assert ranks[1]["changes"] == []  # rank 1 never touched the state file or deleted
    changes = ranks[0]["changes"]
    assert [c for c in changes if c[0] == "write_state"] == [
        ["write_state", "ckpt-1"], ["write_state", "ckpt-2"], ["write_state", "ckpt-3"]]
    assert changes[-2:] == [["write_state", "ckpt-3"], ["delete", "ckpt-1"]]  # after, not before
    state = dist_run.json("after-manager_saves.json")
    assert state["latest"] == os.path.join(dist_run.workdir, "manager", "ckpt-3")
    assert not any(f.startswith("ckpt-1.") for f in state["files"])


def test_manager_rank_killed_mid_save_keeps_the_previous_latest(dist_run) -> None:
    dist_run.check("manager_saves", "manager_crash")
    survivor = dist_run.json("manager_crash-0.json")
    assert survivor["raised"] == "DistributedCheckpointError", survivor
    assert survivor["latest"] == "ckpt-3" and survivor["checkpoints"] == ["ckpt-2", "ckpt-3"]
    state = dist_run.json("after-manager_crash.json")
    assert state["latest"] == os.path.join(dist_run.workdir, "manager", "ckpt-3")
    assert "ckpt-4.index" not in state["files"] and "ckpt-3.index" in state["files"]


def test_manager_resumes_after_the_crash_and_cleans_up(dist_run) -> None:
    dist_run.check("manager_saves", "manager_crash", "manager_recover")
    for rank in range(2):
        assert dist_run.json(f"manager_recover-{rank}.json") == {
            "restored": "ckpt-3", "saved": "ckpt-4", "latest": "ckpt-4",
            "checkpoints": ["ckpt-3", "ckpt-4"]}
    state = dist_run.json("after-manager_recover.json")
    assert state["files"] == ["checkpoint"] + [
        f"ckpt-{n}.{part}" for n in (3, 4)
        for part in ("data-00000-of-00002", "data-00001-of-00002", "index")]
