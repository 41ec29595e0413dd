"""Child process of test_crash_safety.py: saves, each SIGKILLed at a step of the commit.

    python crash_child.py RESULTS_JSON VALUE DIRECTORY MODE STAGE [DIRECTORY MODE STAGE ...]

For each (DIRECTORY, MODE, STAGE), a process forked from this one (``forked.py``:
torch is imported once) restores DIRECTORY's latest checkpoint, sets the tensor
to VALUE, arms the fault for STAGE by wrapping the ``os`` function that step goes
through, and saves. The fault kills that process with SIGKILL, so nothing (no
``finally``, no ``atexit``) cleans up after it; exit status 3 means the fault
never fired. RESULTS_JSON gets the exit status of each save, in order.

Modes (what is saved):
  new      ``CheckpointManager.save()``: a new number, ``ckpt-3``
  renumber ``CheckpointManager.save(checkpoint_number=2)``: re-writes the latest, ``ckpt-2``
  rewrite  ``Checkpoint.write(DIRECTORY/ckpt-2)``: re-writes the latest without the manager

Stages, in the order of the commit protocol (``torchckpt/format/commit.py``):
  data_write      the first ``os.writev`` of a data shard writes half its bytes, then dies
  data_fsync      dies at the fsync of the data shard's temporary file
  index_write     the index temp file is written; dies at its fsync, after cutting it in half
  record_write    (re-writes) dies at the fsync of the commit record's temporary file
  after_record    (re-writes) the record is in place; dies at the first rename of a data file
  before_index    the data shard is renamed into place; dies renaming the index
  before_unrecord (re-writes) the bundle is renamed; dies removing the commit record
  before_state    the bundle is complete; dies renaming the new ``checkpoint`` state file
  during_sweep    the state file names the new prefix; dies after the sweep's first deletion
"""

from __future__ import annotations

import json
import os
import signal
import sys

import torch

import torchckpt
from forked import import_ahead, run_forked
from torchckpt.format.commit import COMMIT_RECORD_SUFFIX
from torchckpt.format.naming import TEMP_INFIX


def make_checkpoint() -> torchckpt.Checkpoint:
    return torchckpt.Checkpoint(w=torch.zeros(4096), model=torch.nn.Linear(8, 4))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _fd_name(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def arm(stage: str) -> None:
    real_replace, real_fsync, real_remove, real_unlink = os.replace, os.fsync, os.remove, os.unlink

    def writev(fd, buffers):
        first = memoryview(buffers[0]).cast("B")
        os.write(fd, first[: max(1, first.nbytes // 2)])
        _die()

    def replace(src, dst, *args, **kwargs):
        name = os.path.basename(os.fspath(dst))
        if ((stage == "before_index" and name.endswith(".index"))
                or (stage == "before_state" and name == "checkpoint")
                or (stage == "after_record" and ".data-" in name)):
            _die()
        return real_replace(src, dst, *args, **kwargs)

    def fsync(fd):
        name = _fd_name(fd)
        if stage == "index_write" and (".index" + TEMP_INFIX) in name:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            _die()
        if ((stage == "data_fsync" and ".data-" in name and TEMP_INFIX in name)
                or (stage == "record_write" and (COMMIT_RECORD_SUFFIX + TEMP_INFIX) in name)):
            _die()
        return real_fsync(fd)

    def remove(path, *args, **kwargs):
        real_remove(path, *args, **kwargs)
        _die()

    def unlink(path, *args, **kwargs):
        if os.fspath(path).endswith(COMMIT_RECORD_SUFFIX):
            _die()
        return real_unlink(path, *args, **kwargs)

    if stage == "data_write":
        os.writev = writev
    elif stage in ("before_index", "before_state", "after_record"):
        os.replace = replace
    elif stage in ("index_write", "data_fsync", "record_write"):
        os.fsync = fsync
    elif stage == "during_sweep":
        os.remove = remove
    elif stage == "before_unrecord":
        os.unlink = unlink
    else:
        raise SystemExit(f"unknown stage {stage!r}")


def save_and_die(directory: str, mode: str, stage: str, value: float) -> None:
    ckpt = make_checkpoint()
    with torchckpt.CheckpointManager(ckpt, directory, max_to_keep=2) as manager:
        ckpt.restore(manager.latest_checkpoint).assert_consumed()
        ckpt.w.fill_(value)
        arm(stage)
        if mode == "new":
            manager.save()
        elif mode == "renumber":
            manager.save(checkpoint_number=2)
        elif mode == "rewrite":
            ckpt.write(os.path.join(directory, "ckpt-2"))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    sys.exit(3)


def main() -> None:
    results, value, rest = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    cases = [(save_and_die, (*rest[i:i + 3], value)) for i in range(0, len(rest), 3)]
    import_ahead()
    codes = run_forked(cases, timeout=60, at_once=2)
    with open(results, "w") as f:
        json.dump(codes, f)


if __name__ == "__main__":
    main()
