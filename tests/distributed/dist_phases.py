"""The multi-process scenarios of ``tests/distributed``; run by its conftest.

Run as ``python dist_phases.py WORKDIR [PHASE...]``: torch is imported once,
each phase forks a fresh process group (``dist_harness.run_group``) and leaves
its results in WORKDIR, where the tests read them.

Phases (each a fresh process group):

* ``save4``: 4 ranks save a DDP model + Adam (``ddp4``), an FSDP2 model + Adam
  (``fsdp4``) and DTensors on a 2x2 mesh built directly (``dt4``).
* ``on2``: 2 ranks restore all three (DDP into DDP, FSDP2 into FSDP2 with a
  fresh optimizer, ``dt4`` onto a 1-D mesh with other placements, and DDP <->
  FSDP2 across), dump what they restored, and save ``ddp2`` / ``fsdp2``.
* ``on4``: 4 ranks restore ``ddp2`` / ``fsdp2``.
* ``disagree`` / ``write_error``: saves that must fail on every rank, at once.
* ``crash``: 2 ranks save ``crash/ckpt-1``; then a save of ``ckpt-2`` in which
  rank 1 is SIGKILLed while writing its data file; then one in which rank 0 is
  SIGKILLed after every data file is durable and before the index; then a fresh
  group restores the latest and saves ``ckpt-2`` again.
* ``manager``: 2 ranks, each with a ``CheckpointManager(max_to_keep=2)`` on
  ``manager/``, save three times, recording after each save what each rank's
  manager lists and which rank wrote the state file or deleted anything; then
  a save of ``ckpt-4`` in which rank 1 is SIGKILLed while writing its data
  file; then a fresh group resumes the latest and saves ``ckpt-4``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Callable

import torch
from dist_harness import (
    ddp_model,
    dt_module,
    dump,
    fsdp_model,
    measure_shard_writes,
    run_group,
    train,
    write_json,
)
from torch import nn

import torchckpt
from torchckpt import Checkpoint, CheckpointManager


def _save4(rank: int, world: int, workdir: str) -> None:
    undo = measure_shard_writes(workdir, "save4", rank)
    ddp, inner = ddp_model(seed=1)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.01)
    train(ddp, opt, rank)
    ckpt = Checkpoint(model=inner, optimizer=opt)
    ckpt.save(os.path.join(workdir, "ddp4", "ckpt"))
    dump(ckpt, workdir, "ddp4", rank)

    model = fsdp_model(seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, opt, rank)
    ckpt = Checkpoint(model=model, optimizer=opt)
    ckpt.save(os.path.join(workdir, "fsdp4", "ckpt"))
    dump(ckpt, workdir, "fsdp4", rank)
    undo()

    ckpt = Checkpoint(model=dt_module(seed=3, mesh_shape=(2, 2)))
    ckpt.save(os.path.join(workdir, "dt4", "ckpt"))
    dump(ckpt, workdir, "dt4", rank)


def _restore(ckpt: Checkpoint, path: str) -> None:
    ckpt.restore(path).assert_consumed()


def _on2(rank: int, world: int, workdir: str) -> None:
    ddp, inner = ddp_model(seed=11)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.01)
    ckpt = Checkpoint(model=inner, optimizer=opt)
    _restore(ckpt, os.path.join(workdir, "ddp4", "ckpt-1"))
    dump(ckpt, workdir, "ddp4_on2", rank)
    train(ddp, opt, rank, steps=1)
    ckpt.save(os.path.join(workdir, "ddp2", "ckpt"))
    dump(ckpt, workdir, "ddp2", rank)

    model = fsdp_model(seed=12)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)  # no state yet: restored as DTensors
    ckpt = Checkpoint(model=model, optimizer=opt)
    _restore(ckpt, os.path.join(workdir, "fsdp4", "ckpt-1"))
    dump(ckpt, workdir, "fsdp4_on2", rank)
    train(model, opt, rank, steps=1)  # the restored state must be usable by FSDP2's step
    ckpt.save(os.path.join(workdir, "fsdp2", "ckpt"))
    dump(ckpt, workdir, "fsdp2", rank)

    ckpt = Checkpoint(model=dt_module(seed=13, mesh_shape=(2,)))
    _restore(ckpt, os.path.join(workdir, "dt4", "ckpt-1"))
    dump(ckpt, workdir, "dt4_on2", rank)

    # across parallelisms: DDP's checkpoint into FSDP2, FSDP2's into DDP
    model = fsdp_model(seed=14)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    ckpt = Checkpoint(model=model, optimizer=opt)
    _restore(ckpt, os.path.join(workdir, "ddp4", "ckpt-1"))
    dump(ckpt, workdir, "ddp4_as_fsdp_on2", rank)
    ddp, inner = ddp_model(seed=15)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.01)
    ckpt = Checkpoint(model=inner, optimizer=opt)
    _restore(ckpt, os.path.join(workdir, "fsdp4", "ckpt-1"))
    dump(ckpt, workdir, "fsdp4_as_ddp_on2", rank)


def _on4(rank: int, world: int, workdir: str) -> None:
    ddp, inner = ddp_model(seed=21)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.01)
    ckpt = Checkpoint(model=inner, optimizer=opt)
    _restore(ckpt, os.path.join(workdir, "ddp2", "ckpt-2"))
    dump(ckpt, workdir, "ddp2_on4", rank)

    model = fsdp_model(seed=22)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, opt, rank, steps=1)  # state exists: restored in place into the DTensors
    ckpt = Checkpoint(model=model, optimizer=opt)
    _restore(ckpt, os.path.join(workdir, "fsdp2", "ckpt-2"))
    dump(ckpt, workdir, "fsdp2_on4", rank)


# crash phases: one checkpoint directory, several groups in turn

def _crash_model(rank: int) -> tuple[Checkpoint, nn.Module, torch.optim.Optimizer]:
    ddp, inner = ddp_model(seed=31)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.01)
    train(ddp, opt, rank)
    return Checkpoint(model=inner, optimizer=opt), ddp, opt


def _crash_first(rank: int, world: int, workdir: str) -> None:
    ckpt, ddp, opt = _crash_model(rank)
    ckpt.save(os.path.join(workdir, "crash", "ckpt"))
    dump(ckpt, workdir, "crash1", rank)


def _attempt(rank: int, workdir: str, name: str, arm: Callable[[], None]) -> None:
    """Restore ckpt-1, train, arm the fault, save; record how this rank's save ended."""
    ckpt, ddp, opt = _crash_model(rank)
    ckpt.restore(os.path.join(workdir, "crash", "ckpt-1")).assert_consumed()
    train(ddp, opt, rank, steps=1)
    arm()
    start = time.monotonic()
    try:
        ckpt.save(os.path.join(workdir, "crash", "ckpt"))
        outcome = {"raised": None}
    except Exception as exc:  # noqa: BLE001 - the point of the phase
        outcome = {"raised": type(exc).__name__, "message": str(exc)[:500]}
    outcome["seconds"] = time.monotonic() - start
    write_json(workdir, f"{name}-{rank}.json", outcome)
    os._exit(0)  # the group is broken: skip the final barrier


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm_kill_in_add() -> None:
    """Make this rank die after the first tensor of its data file went to disk."""
    from torchckpt.format import BundleWriter

    original = BundleWriter.add

    def add(self: BundleWriter, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        for f in list(getattr(self, "_files", {}).values()):  # some bytes reach the file
            f.flush()
        _kill_self()
        return out
    BundleWriter.add = add  # type: ignore[method-assign]


def _crash_writer(rank: int, world: int, workdir: str) -> None:
    """Rank 1 dies after the first tensor of its data file went to disk."""
    def arm() -> None:
        if rank == 1:
            _arm_kill_in_add()
    _attempt(rank, workdir, "crash_writer", arm)


def _crash_committer(rank: int, world: int, workdir: str) -> None:
    """Rank 0 dies after every data file is durable, before the index is written."""
    def arm() -> None:
        if rank != 0:
            return
        import torchckpt.format

        def write_index(*args: Any, **kwargs: Any) -> None:
            _kill_self()
        torchckpt.format.write_index = write_index  # type: ignore[assignment]
    _attempt(rank, workdir, "crash_committer", arm)


def _crash_recover(rank: int, world: int, workdir: str) -> None:
    ddp, inner = ddp_model(seed=32)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.01)
    ckpt = Checkpoint(model=inner, optimizer=opt)
    ckpt.restore(os.path.join(workdir, "crash")).assert_consumed()  # the directory's latest
    dump(ckpt, workdir, "crash_recovered", rank)
    train(ddp, opt, rank, steps=1)
    path = ckpt.save(os.path.join(workdir, "crash", "ckpt"))
    dump(ckpt, workdir, "crash2", rank)
    if rank == 0:
        write_json(workdir, "crash_recover.json", {"saved": path})


# CheckpointManager with several ranks: agreement, ownership of the directory, a crash

def _manager(rank: int, workdir: str) -> tuple[Checkpoint, CheckpointManager, nn.Module,
                                                torch.optim.Optimizer]:
    ddp, inner = ddp_model(seed=51)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.01)
    ckpt = Checkpoint(model=inner, optimizer=opt, rng=torchckpt.RNGState())
    return ckpt, CheckpointManager(ckpt, os.path.join(workdir, "manager"), max_to_keep=2), ddp, opt


def _view(manager: CheckpointManager) -> dict[str, Any]:
    return {"latest": manager.latest_checkpoint and os.path.basename(manager.latest_checkpoint),
            "checkpoints": [os.path.basename(p) for p in manager.checkpoints]}


def _log_file_changes() -> list[list[str]]:
    """Record the state-file writes and checkpoint deletions this rank's managers make."""
    import torchckpt.manager as manager_module

    log: list[list[str]] = []
    write_state, delete = manager_module.write_state, manager_module._delete_checkpoint

    def logged_write_state(directory: str, path: str, *args: Any, **kwargs: Any) -> None:
        log.append(["write_state", os.path.basename(path)])
        write_state(directory, path, *args, **kwargs)

    def logged_delete(directory: str, prefix: str) -> None:
        log.append(["delete", os.path.basename(prefix)])
        delete(directory, prefix)
    manager_module.write_state = logged_write_state  # type: ignore[assignment]
    manager_module._delete_checkpoint = logged_delete  # type: ignore[assignment]
    return log


def _manager_saves(rank: int, world: int, workdir: str) -> None:
    changes = _log_file_changes()
    ckpt, manager, ddp, opt = _manager(rank, workdir)
    views = []
    for _ in range(3):
        train(ddp, opt, rank, steps=1)
        manager.save()
        views.append(_view(manager))
    write_json(workdir, f"manager_saves-{rank}.json", {"views": views, "changes": changes})


def _manager_crash(rank: int, world: int, workdir: str) -> None:
    """Rank 1 dies after part of its data file of ``ckpt-4`` went to disk."""
    ckpt, manager, ddp, opt = _manager(rank, workdir)
    ckpt.restore(manager.latest_checkpoint).assert_consumed()
    train(ddp, opt, rank, steps=1)
    if rank == 1:
        _arm_kill_in_add()
    try:
        manager.save()
        outcome: dict[str, Any] = {"raised": None}
    except Exception as exc:  # noqa: BLE001 - the point of the phase
        outcome = {"raised": type(exc).__name__, "message": str(exc)[:500]}
    write_json(workdir, f"manager_crash-{rank}.json", {**outcome, **_view(manager)})
    os._exit(0)  # the group is broken: skip the final barrier


def _manager_recover(rank: int, world: int, workdir: str) -> None:
    ckpt, manager, ddp, opt = _manager(rank, workdir)
    restored = manager.restore_or_initialize()
    train(ddp, opt, rank, steps=1)
    path = manager.save()
    write_json(workdir, f"manager_recover-{rank}.json",
               {"restored": os.path.basename(restored or ""), "saved": os.path.basename(path),
                **_view(manager)})


def _failing_save(rank: int, workdir: str, name: str, prefix: str) -> None:
    ddp, inner = ddp_model(seed=41)
    ckpt = Checkpoint(model=inner)
    start = time.monotonic()
    try:
        ckpt.write(prefix)
        outcome: dict[str, Any] = {"raised": None}
    except Exception as exc:  # noqa: BLE001 - the point of the phase
        outcome = {"raised": type(exc).__name__, "message": str(exc)[:500],
                   "ranks": getattr(exc, "ranks", None)}
    outcome["seconds"] = time.monotonic() - start
    write_json(workdir, f"{name}-{rank}.json", outcome)


def _disagree(rank: int, world: int, workdir: str) -> None:
    """The ranks name different prefixes: all refuse before writing anything."""
    _failing_save(rank, workdir, "disagree", os.path.join(workdir, "disagree", f"r{rank}"))


def _write_error(rank: int, world: int, workdir: str) -> None:
    """Rank 1 cannot write (a full disk, say): every rank raises, nothing is committed."""
    if rank == 1:
        from torchckpt.format import BundleWriter

        def add(self: BundleWriter, *args: Any, **kwargs: Any) -> Any:
            raise OSError(28, "No space left on device")
        BundleWriter.add = add  # type: ignore[method-assign]
    _failing_save(rank, workdir, "write_error", os.path.join(workdir, "write_error", "ckpt"))


def _directory_state(workdir: str, name: str) -> dict[str, Any]:
    """What a reader of a checkpoint directory sees now (read by the launcher, not a rank)."""
    from torchckpt.format import latest_checkpoint

    directory = os.path.join(workdir, name)
    return {"latest": latest_checkpoint(directory), "files": sorted(os.listdir(directory))}


PHASES: dict[str, tuple[int, Callable[..., None]]] = {
    "save4": (4, _save4),
    "on2": (2, _on2),
    "on4": (4, _on4),
    "disagree": (2, _disagree),
    "write_error": (2, _write_error),
    "crash_first": (2, _crash_first),
    "crash_writer": (2, _crash_writer),
    "crash_committer": (2, _crash_committer),
    "crash_recover": (2, _crash_recover),
    "manager_saves": (2, _manager_saves),
    "manager_crash": (2, _manager_crash),
    "manager_recover": (2, _manager_recover),
}


def main(argv: list[str]) -> int:
    workdir = argv[1]
    names = argv[2:] or list(PHASES)
    codes = {}
    for name in names:
        world, target = PHASES[name]
        start = time.monotonic()
        codes[name] = {"exit": run_group(world, target, (workdir,), workdir),
                       "seconds": round(time.monotonic() - start, 2)}
        if name.startswith(("crash", "manager")):
            directory = "crash" if name.startswith("crash") else "manager"
            write_json(workdir, f"after-{name}.json", _directory_state(workdir, directory))
        write_json(workdir, "phases.json", codes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
