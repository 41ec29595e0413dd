"""One ``CheckpointManager`` per directory: a second one is refused instead of racing."""

from __future__ import annotations

import gc
import sys
import textwrap

import pytest
import torch

import torchckpt
from processes import run_isolated
from torchckpt.errors import CheckpointLockedError


def _manager(directory, **kwargs):
    return torchckpt.CheckpointManager(torchckpt.Checkpoint(w=torch.zeros(2)), directory,
                                       max_to_keep=2, **kwargs)


def test_a_second_manager_in_the_same_process_is_refused_until_the_first_is_closed(tmp_path):
    first = _manager(tmp_path)
    first.save()
    with pytest.raises(CheckpointLockedError, match="another CheckpointManager manages"):
        _manager(tmp_path)
    first.close()
    first.close()  # idempotent
    with _manager(tmp_path) as second:
        assert second.latest_checkpoint == first.latest_checkpoint
        second.save()


def test_a_garbage_collected_manager_releases_the_directory(tmp_path):
    first = _manager(tmp_path)
    del first
    gc.collect()
    _manager(tmp_path).close()


def test_a_manager_in_another_process_is_refused(tmp_path):
    holder = tmp_path / "hold.py"
    holder.write_text(textwrap.dedent("""
        import sys, torch, torchckpt
        try:
            torchckpt.CheckpointManager(torchckpt.Checkpoint(w=torch.zeros(2)), sys.argv[1], 2)
        except torchckpt.CheckpointLockedError as exc:
            print("refused:", exc)
            sys.exit(7)
    """))
    with _manager(tmp_path / "run") as manager:
        manager.save()
        done = run_isolated([sys.executable, str(holder), str(tmp_path / "run")], timeout=120)
        assert done.returncode == 7, done.output
        assert "another CheckpointManager manages" in done.output
    done = run_isolated([sys.executable, str(holder), str(tmp_path / "run")], timeout=120)
    assert done.returncode == 0, done.output


def test_separate_directories_do_not_conflict(tmp_path):
    with _manager(tmp_path / "a") as a, _manager(tmp_path / "b") as b:
        a.save()
        b.save()


def test_a_forked_child_does_not_keep_the_directory_locked(tmp_path):
    """A process forked while a manager holds the lock (a DataLoader worker) drops its
    copy: once the manager is gone, the directory is free though the child lives on."""
    script = tmp_path / "fork_then_close.py"
    script.write_text(textwrap.dedent("""
        import fcntl, os, sys, time, torch, torchckpt
        directory = sys.argv[1]
        manager = torchckpt.CheckpointManager(torchckpt.Checkpoint(w=torch.zeros(2)),
                                              directory, 2)
        manager.save()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: reports whether it still holds a descriptor, then idles
            os.write(write_end, b"none" if manager._lock_fd is None else b"held")
            time.sleep(60)
            os._exit(0)
        print("child:", os.read(read_end, 4).decode())
        manager.close()
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("free while the child lives")
        except OSError:
            print("still locked")
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    """))
    done = run_isolated([sys.executable, str(script), str(tmp_path / "run")], timeout=120)
    assert done.returncode == 0, done.output
    assert "child: none" in done.output
    assert "free while the child lives" in done.output
