"""CheckpointManager against TensorFlow's own (acceptance d) and the two sharing one
directory (acceptance e): the same sequence of saves, with the same injected clock, must
keep the same checkpoints and write the same ``checkpoint`` state file; each side's
``latest_checkpoint`` reads the other's state file.

TF's manager reads the time through its module's ``time``; the tests swap that module
reference for the fake clock, touching nothing else in TF.
"""

from __future__ import annotations

import importlib
import os
import types

import pytest
import torch

import torchckpt
from torchckpt import CheckpointManager

pytestmark = pytest.mark.tf

T0 = 1_700_000_000.25


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class _Side:
    """One implementation driven through the scenario: a checkpoint, a step counter, a manager."""

    def __init__(self, tf, directory, clock, monkeypatch, ours: bool) -> None:
        self.tf, self.dir, self.clock, self.ours = tf, str(directory), clock, ours
        if ours:
            self.step = torch.zeros((), dtype=torch.int64)
            self.ckpt = torchckpt.Checkpoint(w=torch.zeros(3))
        else:
            self.step = tf.Variable(0, dtype=tf.int64)
            self.ckpt = tf.train.Checkpoint(w=tf.Variable(tf.zeros(3)))
            module = importlib.import_module(
                "tensorflow.python.checkpoint.checkpoint_management")
            monkeypatch.setattr(module, "time", types.SimpleNamespace(time=clock))
        self.manager = None

    def new_manager(self, **kw):
        if kw.get("checkpoint_interval") is not None:
            kw["step_counter"] = self.step
        if self.ours:
            if self.manager is not None:  # a restart: the old manager lets go of the directory
                self.manager.close()
            self.manager = CheckpointManager(self.ckpt, self.dir, clock=self.clock, **kw)
        else:
            self.manager = self.tf.train.CheckpointManager(self.ckpt, self.dir, **kw)

    def set_step(self, n):
        if self.ours:
            self.step.fill_(n)
        else:
            self.step.assign(n)

    def observe(self, result):
        m = self.manager
        with open(os.path.join(self.dir, "checkpoint"), encoding="utf-8") as f:
            state = f.read()
        return {"result": None if result is None else os.path.relpath(result, self.dir),
                "latest": m.latest_checkpoint and os.path.relpath(m.latest_checkpoint, self.dir),
                "checkpoints": [os.path.relpath(p, self.dir) for p in m.checkpoints],
                "files": sorted(os.listdir(self.dir)), "state": state,
                "save_counter": int(self.ckpt.save_counter)}


def _play(tf, tmp_path, monkeypatch, script):
    clock = Clock()
    sides = [_Side(tf, tmp_path / "tf", clock, monkeypatch, ours=False),
             _Side(tf, tmp_path / "ours", clock, monkeypatch, ours=True)]
    for i, (op, arg) in enumerate(script):
        if op == "clock":
            clock.now += arg
            continue
        seen = []
        for side in sides:
            result = None
            if op == "manager":
                side.new_manager(**arg)
            elif op == "step":
                side.set_step(arg)
            elif op == "save":
                kw = dict(arg)
                number = kw.get("checkpoint_number")
                if isinstance(number, torch.Tensor) and not side.ours:  # a tensor on each side
                    kw["checkpoint_number"] = tf.Variable(int(number), dtype=tf.int64)
                result = side.manager.save(**kw)
            elif op == "restore":
                result = side.manager.restore_or_initialize()
            if os.path.exists(os.path.join(side.dir, "checkpoint")):
                seen.append(side.observe(result))
        if len(seen) == 2:
            assert seen[1] == seen[0], f"step {i}: {op} {arg}"


def _saves(n, every=0.0, **kw):
    out = []
    for _ in range(n):
        if every:
            out.append(("clock", every))
        out.append(("save", kw))
    return out


SCENARIOS = {
    "max_to_keep": [("manager", dict(max_to_keep=3)), *_saves(6, 1.5),
                    ("manager", dict(max_to_keep=1)), *_saves(2, 1.5)],
    "keep_none_then_prune": [("manager", dict(max_to_keep=None)), *_saves(4, 2.0),
                             ("manager", dict(max_to_keep=2)), *_saves(1, 2.0)],
    "keep_every_n_hours": [("manager", dict(max_to_keep=2, keep_checkpoint_every_n_hours=1)),
                           *_saves(6, 25 * 60.0),
                           ("manager", dict(max_to_keep=2, keep_checkpoint_every_n_hours=0.5)),
                           *_saves(5, 20 * 60.0)],
    "clock_went_backwards": [("manager", dict(max_to_keep=2, keep_checkpoint_every_n_hours=1)),
                             *_saves(4, 40 * 60.0), ("clock", -3 * 3600.0),
                             ("manager", dict(max_to_keep=2, keep_checkpoint_every_n_hours=1)),
                             *_saves(4, 40 * 60.0)],
    "checkpoint_name_and_numbers": [
        ("manager", dict(max_to_keep=3, checkpoint_name="model")),
        ("save", dict(checkpoint_number=5)), ("clock", 1.0), ("save", dict(checkpoint_number=5)),
        ("clock", 1.0), ("save", dict(checkpoint_number=2)), ("clock", 1.0),
        ("save", dict(checkpoint_number=torch.tensor(5))), ("clock", 1.0), ("save", {}),
        ("clock", 1.0), ("save", dict(checkpoint_number=7)), ("clock", 1.0), ("save", {})],
    "checkpoint_interval": [
        ("manager", dict(max_to_keep=3, checkpoint_interval=3)),
        *[x for s in [0, 1, 2, 3, 3, 5, 6, 9] for x in (("step", s), ("clock", 1.0), ("save", {}))],
        ("step", 10), ("save", dict(check_interval=False)), ("save", dict(check_interval=False)),
        ("manager", dict(max_to_keep=3, checkpoint_interval=3)), ("step", 11), ("restore", None),
        *[x for s in [12, 13, 14, 17] for x in (("step", s), ("clock", 1.0), ("save", {}))]],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_saves_same_checkpoints_and_state_file_as_tensorflow(tf, tmp_path, monkeypatch,
                                                                   name):
    _play(tf, tmp_path, monkeypatch, SCENARIOS[name])


def test_tensorflow_and_torchckpt_take_turns_in_one_directory(tf, tmp_path):
    """Each reads the other's state file and checkpoints."""
    directory = str(tmp_path / "run")
    ours = torchckpt.Checkpoint(w=torch.zeros(3))
    mine = CheckpointManager(ours, directory, max_to_keep=3)
    for v in (1.0, 2.0):
        ours.w.fill_(v)
        mine.save()
    assert tf.train.latest_checkpoint(directory) == mine.latest_checkpoint
    mine.close()
    theirs = tf.train.Checkpoint(w=tf.Variable(tf.zeros(3)))
    tf_manager = tf.train.CheckpointManager(theirs, directory, max_to_keep=3)
    assert tf_manager.checkpoints == mine.checkpoints
    assert tf_manager.restore_or_initialize() == mine.latest_checkpoint
    assert theirs.w.numpy().tolist() == [2.0] * 3 and int(theirs.save_counter) == 2
    theirs.w.assign(tf.fill([3], 3.0))
    tf_manager.save()
    tf_manager.save()  # ckpt-4: the first of ours leaves the active set

    assert torchckpt.latest_checkpoint(directory) == tf_manager.latest_checkpoint
    again = CheckpointManager(torchckpt.Checkpoint(w=torch.zeros(3)), directory, max_to_keep=3)
    assert again.checkpoints == tf_manager.checkpoints
    assert again.restore_or_initialize() == os.path.join(directory, "ckpt-4")
    assert again.checkpoint.w.tolist() == [3.0] * 3 and again.checkpoint.save_counter == 4
    again.save()
    assert sorted(f.split(".")[0] for f in os.listdir(directory) if f.endswith(".index")) == [
        "ckpt-3", "ckpt-4", "ckpt-5"]
    assert tf.train.latest_checkpoint(directory) == os.path.join(directory, "ckpt-5")
