"""Child process of test_crash_safety.py: one CheckpointManager save, SIGKILLed at a stage.

    python crash_child.py DIRECTORY STAGE VALUE

Restores DIRECTORY's latest checkpoint (so numbering continues), sets the tensor to
VALUE, arms the fault for STAGE by wrapping the ``os`` function that stage goes
through, and saves. The fault kills the process with SIGKILL, so nothing (no
``finally``, no ``atexit``) cleans up after it. Exit status 3 means the fault never fired.

Stages, in the order of the commit protocol:
  data_write    the first ``os.writev`` of a data shard writes half its bytes, then dies
  before_index  the data shard is renamed into place; dies renaming the index
  index_write   the index temp file is written; dies at its fsync, after cutting it in half
  before_state  the bundle is complete; dies renaming the new ``checkpoint`` state file
  during_sweep  the state file names the new prefix; dies after the sweep's first deletion
"""

from __future__ import annotations

import os
import signal
import sys

import torch

import torchckpt
from torchckpt.format.naming import TEMP_INFIX


def make_checkpoint() -> torchckpt.Checkpoint:
    return torchckpt.Checkpoint(w=torch.zeros(4096), model=torch.nn.Linear(8, 4))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(stage: str) -> None:
    real_replace, real_fsync, real_remove = os.replace, os.fsync, os.remove

    def writev(fd, buffers):
        first = memoryview(buffers[0]).cast("B")
        os.write(fd, first[: max(1, first.nbytes // 2)])
        _die()

    def replace(src, dst, *args, **kwargs):
        name = os.path.basename(os.fspath(dst))
        if (stage == "before_index" and name.endswith(".index")) or (
                stage == "before_state" and name == "checkpoint"):
            _die()
        return real_replace(src, dst, *args, **kwargs)

    def fsync(fd):
        if (".index" + TEMP_INFIX) in os.readlink(f"/proc/self/fd/{fd}"):
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            _die()
        return real_fsync(fd)

    def remove(path, *args, **kwargs):
        real_remove(path, *args, **kwargs)
        _die()

    if stage == "data_write":
        os.writev = writev
    elif stage in ("before_index", "before_state"):
        os.replace = replace
    elif stage == "index_write":
        os.fsync = fsync
    elif stage == "during_sweep":
        os.remove = remove
    else:
        raise SystemExit(f"unknown stage {stage!r}")


def main() -> None:
    directory, stage, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ckpt = make_checkpoint()
    manager = torchckpt.CheckpointManager(ckpt, directory, max_to_keep=2)
    ckpt.restore(manager.latest_checkpoint).assert_consumed()
    ckpt.w.fill_(value)
    arm(stage)
    manager.save()
    sys.exit(3)


if __name__ == "__main__":
    main()
