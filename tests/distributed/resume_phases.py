"""Data-parallel training killed and resumed, and saves called on some ranks only.

Run by ``conftest.py`` (fixture ``resume_run``) as ``python resume_phases.py WORKDIR``:
torch is imported once and each phase forks a fresh process group of gloo
ranks on CPU (``dist_harness.run_group``); results are files in WORKDIR.

Training (:func:`train`): a small MLP with Dropout, each rank seeded on its own
(``1000 + rank``), a shuffled ``DistributedSampler`` in a ``ResumableLoader``,
``RNGState``, a step counter and a ``CheckpointManager`` saving every
``SAVE_EVERY`` steps. Each rank appends ``step loss.hex()`` to its own log as it
goes, so a killed rank's log survives it.

Phases:

* ``ddp_full`` / ``fsdp_full``: ``STEPS`` steps, uninterrupted (DDP with momentum
  SGD; FSDP2 ``fully_shard`` with Adam).
* ``ddp_killed`` / ``fsdp_killed``: the same, in another directory; rank 1 is
  SIGKILLed right after step ``KILL_AFTER`` (the last save was at ``RESUME_FROM``),
  and rank 0 dies at its next collective.
* ``ddp_resumed`` / ``fsdp_resumed``: fresh ranks restore the killed run's latest
  checkpoint (``assert_consumed``) and train to ``STEPS``.
* ``one_rank_save``: rank 0 alone saves with ``collective=False`` (works, no
  collective); then an FSDP2 model, which rank 0 alone may not save.
* ``rank0_only`` / ``rank1_only``: one rank calls ``save()`` with the default
  ``collective=None`` and a short ``collective_timeout``; it must raise
  ``CollectiveTimeoutError`` in about that time while the other rank is in
  its next training step.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from dist_harness import run_group, write_json
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import torchckpt
from torchckpt import Checkpoint, CheckpointManager, CheckpointOptions
from torchckpt.data import ResumableLoader

STEPS, SAVE_EVERY, KILL_AFTER, RESUME_FROM = 12, 4, 9, 8
SAMPLES, BATCH = 40, 4  # 2 ranks: 5 batches per rank and epoch; step 8 is mid-epoch 1
SUBSET_TIMEOUT_S = 3.0


# --- training ------------------------------------------------------------------------------

def _dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(SAMPLES, 6, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True).sin())


def _model(parallel: str) -> tuple[nn.Module, nn.Module]:
    """(the module to run, the module to checkpoint); the same initial values on every rank."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model), model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, model


def _optimizer(parallel: str, model: nn.Module) -> torch.optim.Optimizer:
    if parallel == "ddp":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=0.01)


def train(rank: int, parallel: str, directory: str, log: str, *, kill_after: int = 0,
          resume: bool = False) -> None:
    """Train to ``STEPS``, saving every ``SAVE_EVERY`` steps into ``directory``."""
    run, inner = _model(parallel)
    opt = _optimizer(parallel, run)
    torch.manual_seed(1000 + rank)  # each rank its own dropout stream
    data = _dataset()
    sampler = DistributedSampler(data, shuffle=True, seed=7)
    loader = ResumableLoader(DataLoader(data, batch_size=BATCH, sampler=sampler))
    ckpt = Checkpoint(model=inner, optimizer=opt, data=loader, rng=torchckpt.RNGState(), step=0)
    manager = CheckpointManager(ckpt, directory, max_to_keep=2)
    if resume:
        ckpt.restore(manager.latest_checkpoint).assert_consumed()
    step = ckpt.step
    with open(log, "a", encoding="utf-8") as out:
        while step < STEPS:
            sampler.set_epoch(loader.epoch)
            for x, y in loader:
                loss = F.mse_loss(run(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                ckpt.step = step
                out.write(f"{step} {loss.item().hex()}\n")
                out.flush()
                if step % SAVE_EVERY == 0:
                    manager.save()
                if step == kill_after and rank == 1:
                    os.kill(os.getpid(), signal.SIGKILL)
                if step == STEPS:
                    break
    workdir, name = os.path.split(log)
    write_json(workdir, f"{name}.json", {"params": _digest(inner), "full": _full_params(inner),
                                         "latest": manager.latest_checkpoint,
                                         "checkpoints": manager.checkpoints})
    dump_own_values(ckpt, workdir, f"{name}.values", rank)


def _full_params(model: nn.Module) -> dict[str, str]:
    """Each parameter's whole value (gathered under FSDP2: a collective), as float32 hex."""
    out = {}
    for name, p in model.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = full.detach().contiguous().numpy().tobytes().hex()
    return out


def _digest(model: nn.Module) -> str:
    """sha256 of this rank's parameter bytes (its shards, under FSDP2)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        h.update(name.encode())
        h.update(local.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def dump_own_values(ckpt: Checkpoint, workdir: str, name: str, rank: int) -> None:
    """This rank's per-rank tensors by checkpoint key (``<name>.npz`` + ``.json``), for the
    TensorFlow check."""
    from torchckpt.saving import plan_save

    tensors = {k: t for k, t in plan_save(ckpt).tensors if f"/rank_{rank}_of_" in k}
    keys = sorted(tensors)
    np.savez(os.path.join(workdir, f"{name}.npz"), *[tensors[k].numpy() for k in keys])
    write_json(workdir, f"{name}.json", {"keys": keys, "strings": {}})


def _phase_train(parallel: str, kind: str) -> Callable[..., None]:
    def target(rank: int, world: int, workdir: str) -> None:
        run_dir = "killed" if kind in ("killed", "resumed") else "full"
        directory = os.path.join(workdir, f"{parallel}_{run_dir}")
        log = os.path.join(workdir, f"{parallel}_{kind}-{rank}.log")
        train(rank, parallel, directory, log, kill_after=KILL_AFTER if kind == "killed" else 0,
              resume=kind == "resumed")
    return target


# --- saves on a subset of the ranks --------------------------------------------------------

def _one_rank_save(rank: int, world: int, workdir: str) -> None:
    run, inner = _model("ddp")
    opt = _optimizer("ddp", run)
    torch.manual_seed(1000 + rank)
    x = torch.randn(4, 6)
    F.mse_loss(run(x), x[:, :1]).backward()
    opt.step()
    ckpt = Checkpoint(model=inner, optimizer=opt, rng=torchckpt.RNGState())
    if rank == 0:
        start = time.monotonic()
        path = ckpt.save(os.path.join(workdir, "one_rank", "ckpt"),
                         CheckpointOptions(collective=False))
        write_json(workdir, "one_rank.json", {"path": path, "seconds": time.monotonic() - start,
                                              "params": {n: p.detach().tolist() for n, p in
                                                         inner.named_parameters()}})
    opt.zero_grad()
    F.mse_loss(run(x), x[:, :1]).backward()  # the ranks still agree on their collectives
    opt.step()
    model, _ = _model("fsdp")
    sharded = Checkpoint(model=model)
    if rank == 0:
        try:
            sharded.save(os.path.join(workdir, "one_rank_fsdp", "ckpt"),
                         CheckpointOptions(collective=False))
            outcome: dict[str, Any] = {"raised": None}
        except torchckpt.TorchckptError as exc:
            outcome = {"raised": type(exc).__name__, "message": str(exc)}
        write_json(workdir, "one_rank_fsdp.json", outcome)


def _subset_save(saver: int) -> Callable[..., None]:
    """Rank ``saver`` alone calls save() (collective by default); the other rank goes on
    with a DDP step, so it waits in that step's all-reduce."""
    def target(rank: int, world: int, workdir: str) -> None:
        run, inner = _model("ddp")
        ckpt = Checkpoint(model=inner)
        start = time.monotonic()
        try:
            if rank == saver:
                ckpt.save(os.path.join(workdir, f"subset{saver}", "ckpt"),
                          CheckpointOptions(collective_timeout=SUBSET_TIMEOUT_S))
            else:
                run(torch.randn(2, 6)).sum().backward()
            outcome: dict[str, Any] = {"raised": None}
        except Exception as exc:  # noqa: BLE001 - the point of the phase
            outcome = {"raised": type(exc).__name__, "message": str(exc),
                       "is_torchckpt": isinstance(exc, torchckpt.TorchckptError),
                       "ranks": getattr(exc, "ranks", None)}
        outcome["seconds"] = time.monotonic() - start
        write_json(workdir, f"subset{saver}-{rank}.json", outcome)
        os._exit(0)  # the group is unusable now: skip the harness's final barrier
    return target


# name -> (world, target, run_group timeout: a hang fails the phase, it does not stall the suite)
PHASES: dict[str, tuple[int, Callable[..., None], float]] = {
    "ddp_full": (2, _phase_train("ddp", "full"), 90),
    "ddp_killed": (2, _phase_train("ddp", "killed"), 90),
    "ddp_resumed": (2, _phase_train("ddp", "resumed"), 90),
    "fsdp_full": (2, _phase_train("fsdp", "full"), 90),
    "fsdp_killed": (2, _phase_train("fsdp", "killed"), 90),
    "fsdp_resumed": (2, _phase_train("fsdp", "resumed"), 90),
    "one_rank_save": (2, _one_rank_save, 60),
    "rank0_only": (2, _subset_save(0), 30),
    "rank1_only": (2, _subset_save(1), 30),
}


def main(argv: list[str]) -> int:
    workdir = argv[1]
    names = argv[2:] or list(PHASES)
    codes = {}
    for name in names:
        world, target, timeout = PHASES[name]
        start = time.monotonic()
        codes[name] = {"exit": run_group(world, target, (workdir,), workdir, timeout=timeout),
                       "seconds": round(time.monotonic() - start, 2)}
        write_json(workdir, "phases.json", codes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
