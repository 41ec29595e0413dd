"""A save killed (SIGKILL) or refused by a full disk at any step of the commit leaves the
latest checkpoint complete and restorable: for a new prefix, and for re-writing the
latest one (a manager re-using a checkpoint number, ``write()`` to a fixed prefix).

The killing happens in child processes (crash_child.py forks one save per case), each
wrapping the ``os`` function its step goes through; the test checks the leftovers the
step must have produced (so a fault that fired in the wrong place fails the test), then
recovers.
The full-disk faults run in this process: the ``os`` call of each step raises ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import sys

import pytest
import torch

import torchckpt
from processes import run_isolated
from torchckpt.errors import CheckpointWriteError
from torchckpt.format import latest_checkpoint, read_state
from torchckpt.format.naming import TEMP_INFIX

sys.path.insert(0, os.path.dirname(__file__))
from crash_child import make_checkpoint

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLED = -9


def _temps(f, kind):
    return any(kind in n and TEMP_INFIX in n for n in f)


# stage -> what the directory must hold right after the kill
LEFTOVERS = {
    "data_write": lambda f, p: _temps(f, ".data-"),
    "data_fsync": lambda f, p: _temps(f, ".data-"),
    "index_write": lambda f, p: _temps(f, ".index"),
    "record_write": lambda f, p: _temps(f, ".commit"),
    "after_record": lambda f, p: f"{p}.commit" in f and _temps(f, ".data-"),
    "before_index": lambda f, p: f"{p}.data-00000-of-00001" in f and _temps(f, ".index"),
    "before_unrecord": lambda f, p: f"{p}.commit" in f and not _temps(f, "."),
    "before_state": lambda f, p: f"{p}.index" in f and any(n.startswith("checkpoint.tmp")
                                                           for n in f),
    "during_sweep": lambda f, p: "ckpt-1.index" not in f and "ckpt-1.data-00000-of-00001" in f,
}
# (mode, stage) -> (the prefix latest names after recovery, the value it holds)
NEW = {stage: ("ckpt-2", 2.0) for stage in ["data_write", "data_fsync", "index_write",
                                            "before_index", "before_state"]}
NEW["during_sweep"] = ("ckpt-3", 3.0)
REWRITE = {stage: ("ckpt-2", 2.0) for stage in ["data_write", "data_fsync", "index_write",
                                                "record_write"]}
REWRITE.update({stage: ("ckpt-2", 3.0) for stage in ["after_record", "before_index",
                                                     "before_unrecord"]})
CASES = ([("new", s, *r) for s, r in NEW.items()]
         + [("renumber", s, *r) for s, r in REWRITE.items()]
         + [("renumber", "before_state", "ckpt-2", 3.0)]
         + [("rewrite", s, *r) for s, r in REWRITE.items()])


def _bundle(name):
    return [f"{name}.data-00000-of-00001", f"{name}.index"]


def _two_checkpoints(directory):
    ckpt = make_checkpoint()
    with torchckpt.CheckpointManager(ckpt, directory, max_to_keep=2) as manager:
        for value in (1.0, 2.0):
            ckpt.w.fill_(value)
            manager.save()


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Every case's directory right after its save was killed: two checkpoints made here,
    then one child (``crash_child.py``) forks a save per case and kills it at the stage.
    Returns ``{case id: (directory, exit status of the save)}`` and the child's output."""
    root = tmp_path_factory.mktemp("killed")
    directories = {}
    for mode, stage, *_ in CASES:
        directories[f"{mode}-{stage}"] = directory = str(root / f"{mode}-{stage}" / "run")
        _two_checkpoints(directory)
    results = root / "results.json"
    args = [a for i, (m, s, *_) in enumerate(CASES) for a in (directories[f"{m}-{s}"], m, s)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [TESTS, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = run_isolated([sys.executable, CHILD, str(results), "3", *args], timeout=300, env=env)
    assert proc.returncode == 0 and results.exists(), proc.output[-4000:]
    codes = json.loads(results.read_text())
    return {case: (directory, code) for (case, directory), code
            in zip(directories.items(), codes)}, proc.output


@pytest.mark.parametrize("mode,stage,latest_name,value", CASES,
                         ids=[f"{m}-{s}" for m, s, *_ in CASES])
def test_save_killed_at_each_step_keeps_the_latest_checkpoint(killed, mode, stage,
                                                              latest_name, value):
    results, output = killed
    directory, code = results[f"{mode}-{stage}"]
    written = "ckpt-3" if mode == "new" else "ckpt-2"
    assert code == KILLED, output[-4000:]
    assert LEFTOVERS[stage](set(os.listdir(directory)), written), sorted(os.listdir(directory))

    # A reader that opens the directory first sees a complete latest checkpoint.
    expected = os.path.join(directory, latest_name)
    assert torchckpt.latest_checkpoint(directory) == expected
    reader_side = make_checkpoint()
    reader_side.restore(directory).assert_consumed()
    assert torch.equal(reader_side.w, torch.full((4096,), value))
    named = read_state(directory)
    assert all(os.path.isfile(p + ".index") for p in named.all_model_checkpoint_paths), named

    fresh = make_checkpoint()
    with torchckpt.CheckpointManager(fresh, directory, max_to_keep=2) as recovered:
        assert recovered.latest_checkpoint == expected
        fresh.restore(recovered.latest_checkpoint).assert_consumed()
        assert torch.equal(fresh.w, torch.full((4096,), value))
        fresh.w.fill_(9.0)
        newest = f"ckpt-{fresh.save_counter + 1}"  # the restored counter goes on
        path = recovered.save()
        assert path == os.path.join(directory, newest)
        assert sorted(os.listdir(directory)) == sorted(
            ["checkpoint", *_bundle(latest_name), *_bundle(newest)])
    check = make_checkpoint()
    check.restore(latest_checkpoint(directory)).assert_consumed()
    assert torch.equal(check.w, torch.full((4096,), 9.0))


def _fail_with_enospc(monkeypatch, name, when):
    real = getattr(os, name)

    def failing(*args, **kwargs):
        if when(*args):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, failing)


def _fd_has(part):
    return lambda fd, *rest: part in os.readlink(f"/proc/self/fd/{fd}")


def _dst_has(part):
    return lambda src, dst, *rest: part in os.path.basename(os.fspath(dst))


DISK_FULL = {
    "data_write": ("writev", lambda *a: True),
    "data_fsync": ("fsync", _fd_has(".data-")),
    "index_fsync": ("fsync", _fd_has(".index" + TEMP_INFIX)),
    "record_fsync": ("fsync", _fd_has(".commit" + TEMP_INFIX)),
    "data_rename": ("replace", _dst_has(".data-")),
    "state_rename": ("replace", _dst_has("checkpoint")),
}


@pytest.mark.parametrize("renumber", [False, True], ids=["new", "renumber"])
@pytest.mark.parametrize("step", list(DISK_FULL))
def test_full_disk_at_each_step_keeps_the_latest_checkpoint_and_names_the_file(
        tmp_path, monkeypatch, step, renumber):
    directory = str(tmp_path / "run")
    _two_checkpoints(directory)
    ckpt = make_checkpoint()
    with torchckpt.CheckpointManager(ckpt, directory, max_to_keep=2) as manager:
        ckpt.restore(manager.latest_checkpoint).assert_consumed()
        before = (manager.latest_checkpoint, manager.checkpoints)
        ckpt.w.fill_(3.0)
        name, when = DISK_FULL[step]
        with monkeypatch.context() as patch:
            _fail_with_enospc(patch, name, when)
            try:
                manager.save(checkpoint_number=2 if renumber else None)
                failed = None
            except OSError as exc:
                failed = exc
        committed = renumber and step == "data_rename"  # the commit record was durable
        if step == "record_fsync" and not renumber:
            assert failed is None  # a new prefix needs no record
        else:
            assert isinstance(failed, CheckpointWriteError), failed
            assert failed.errno == errno.ENOSPC
            assert failed.filename and os.path.dirname(failed.filename) == directory
            assert directory in str(failed)
            # the manager's view equals the state file, which still names the last save
            assert (manager.latest_checkpoint, manager.checkpoints) == before
            state = read_state(directory)
            assert state.model_checkpoint_path == manager.latest_checkpoint
            assert state.all_model_checkpoint_paths == manager.checkpoints
    check = make_checkpoint()
    check.restore(directory).assert_consumed()
    expected = 3.0 if committed or failed is None or (renumber and step == "state_rename") else 2.0
    assert torch.equal(check.w, torch.full((4096,), expected))
    leftovers = [n for n in os.listdir(directory) if TEMP_INFIX in n or n.endswith(".commit")]
    assert leftovers == []
