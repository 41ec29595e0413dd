"""An asynchronous save's error is never lost, even when the program ends right after it.

Each case runs a small training script in a fresh process (its own session, output
to a file; see tests/processes.py) and checks its exit status, its stderr and the
directory it leaves.
"""

from __future__ import annotations

import os
import sys
import textwrap

import torch

import torchckpt
from processes import run_isolated

SCRIPT = textwrap.dedent("""
    import os, sys, torch, torchckpt
    directory, how = sys.argv[1], sys.argv[2]
    ckpt = torchckpt.Checkpoint(w=torch.full((1024,), 1.0))
    manager = torchckpt.CheckpointManager(ckpt, directory, max_to_keep=3)
    manager.save()                                   # ckpt-1, synchronous
    ckpt.w.fill_(2.0)
    if how != "succeeds":                            # the background write will fail
        real_open = os.open
        def failing_open(path, *args, **kwargs):
            if ".data-" in os.fspath(path):
                raise OSError(28, "No space left on device")
            return real_open(path, *args, **kwargs)
        os.open = failing_open
    manager.save(options=torchckpt.CheckpointOptions(enable_async=True))
    if how == "synced":
        try:
            manager.sync()
        except OSError as exc:
            print("handled:", exc)
    print("training script finished")
""")


def _run(tmp_path, how):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    directory = str(tmp_path / "run")
    return run_isolated([sys.executable, str(script), directory, how], timeout=120), directory


def _restored(directory):
    ckpt = torchckpt.Checkpoint(w=torch.zeros(1024))
    ckpt.restore(directory).assert_consumed()
    return float(ckpt.w[0])


def test_a_failed_last_async_save_is_reported_on_stderr_with_a_failing_exit_status(tmp_path):
    done, directory = _run(tmp_path, "fails")
    assert done.returncode == 1, done.output
    assert "training script finished" in done.output
    assert "asynchronous checkpoint save failed" in done.output
    assert "No space left on device" in done.output and "ckpt-2.data-00000-of-00001" in done.output
    assert torchckpt.latest_checkpoint(directory) == os.path.join(directory, "ckpt-1")
    assert _restored(directory) == 1.0


def test_an_error_the_program_handled_is_not_reported_again(tmp_path):
    done, directory = _run(tmp_path, "synced")
    assert done.returncode == 0, done.output
    assert "handled:" in done.output and "asynchronous checkpoint save failed" not in done.output


def test_a_last_async_save_in_flight_at_exit_is_completed(tmp_path):
    done, directory = _run(tmp_path, "succeeds")
    assert done.returncode == 0, done.output
    assert done.output.strip().endswith("training script finished")
    assert torchckpt.latest_checkpoint(directory) == os.path.join(directory, "ckpt-2")
    assert _restored(directory) == 2.0
