"""Acceptance c: a save SIGKILLed at any stage of the commit protocol leaves
``latest_checkpoint`` on the last complete checkpoint, which restores; the next save
succeeds and leaves no trace of the killed one.

The killing happens in a child process (crash_child.py), which wraps the ``os``
function each stage goes through; the parent checks the leftovers the stage must have
produced (so a fault that fired in the wrong place fails the test), then recovers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

import torchckpt
from torchckpt.format import latest_checkpoint, read_state

sys.path.insert(0, os.path.dirname(__file__))
from crash_child import make_checkpoint

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")

# stage -> (the prefix the state file names after the crash, files the crash must leave)
STAGES = {
    "data_write": ("ckpt-2", lambda f: any(n.startswith("ckpt-3.data-") and ".tempstate" in n
                                           for n in f) and "ckpt-3.index" not in f),
    "before_index": ("ckpt-2", lambda f: "ckpt-3.data-00000-of-00001" in f
                     and "ckpt-3.index" not in f),
    "index_write": ("ckpt-2", lambda f: any(n.startswith("ckpt-3.index.tempstate") for n in f)
                    and "ckpt-3.index" not in f),
    "before_state": ("ckpt-2", lambda f: "ckpt-3.index" in f
                     and any(n.startswith("checkpoint.tmp") for n in f)),
    "during_sweep": ("ckpt-3", lambda f: "ckpt-1.index" not in f
                     and "ckpt-1.data-00000-of-00001" in f),
}


def _bundle(name):
    return [f"{name}.data-00000-of-00001", f"{name}.index"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_save_killed_at_each_stage_keeps_the_previous_checkpoint(tmp_path, stage):
    directory = str(tmp_path / "run")
    ckpt = make_checkpoint()
    manager = torchckpt.CheckpointManager(ckpt, directory, max_to_keep=2)
    for value in (1.0, 2.0):
        ckpt.w.fill_(value)
        manager.save()

    proc = subprocess.run([sys.executable, CHILD, directory, stage, "3"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    latest_name, left_over = STAGES[stage]
    assert left_over(set(os.listdir(directory))), sorted(os.listdir(directory))

    named = read_state(directory)
    assert all(os.path.isfile(p + ".index") for p in named.all_model_checkpoint_paths), named
    expected = os.path.join(directory, latest_name)
    assert latest_checkpoint(directory) == expected
    assert torchckpt.latest_checkpoint(directory) == expected
    fresh = make_checkpoint()
    recovered = torchckpt.CheckpointManager(fresh, directory, max_to_keep=2)
    assert recovered.latest_checkpoint == expected
    fresh.restore(recovered.latest_checkpoint).assert_consumed()
    saved_value = float(latest_name.rsplit("-", 1)[1])
    assert torch.equal(fresh.w, torch.full((4096,), saved_value))

    fresh.w.fill_(9.0)
    path = recovered.save()
    newest = int(latest_name.rsplit("-", 1)[1]) + 1
    assert path == os.path.join(directory, f"ckpt-{newest}")
    assert sorted(os.listdir(directory)) == sorted(
        ["checkpoint", *_bundle(f"ckpt-{newest - 1}"), *_bundle(f"ckpt-{newest}")])
    check = make_checkpoint()
    check.restore(latest_checkpoint(directory)).assert_consumed()
    assert torch.equal(check.w, torch.full((4096,), 9.0))
