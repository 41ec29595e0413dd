"""Data-parallel (DDP) training that survives a killed rank and resumes bit for bit.

Run on CPU with two processes. The first run stops when rank 1 is killed
(SIGKILL, as a preempted or crashed worker would be) after step 10; the same
command without ``--fail-at-step`` then resumes both ranks from the checkpoint
of step 8 and finishes::

    torchrun --standalone --nproc-per-node 2 examples/ddp_resume.py --dir /tmp/ddp_run \
        --fail-at-step 10
    torchrun --standalone --nproc-per-node 2 examples/ddp_resume.py --dir /tmp/ddp_run

The loop is the usual one, with four torchckpt pieces:

* ``Checkpoint(model=ddp.module, optimizer=..., data=ResumableLoader(...),
  rng=RNGState(), step=0)``: the replicated state (model, optimizer, step) and
  the per-rank state (each rank's RNG stream and data position);
* ``CheckpointManager(...).save()`` on **every** rank: a collective save, each
  rank writes its part of one TensorFlow-format checkpoint, rank 0 commits it
  and owns the directory;
* ``manager.restore_or_initialize()`` on every rank: each rank gets the
  replicated values and its own per-rank state back;
* at the end, rank 0 alone exports the weights with
  ``CheckpointOptions(collective=False)``: no other rank takes part.

Each rank appends ``start step loss`` lines to ``<dir>/losses-rank<r>.txt``
(``start``: the step the run started from); the steps the resumed run repeats
(9 and 10) have, on each rank, the very losses of the first run.
"""

from __future__ import annotations

import argparse
import os
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import torchckpt
from torchckpt.data import ResumableLoader


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="checkpoint directory, shared by the ranks")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--save-every", type=int, default=4)
    p.add_argument("--fail-at-step", type=int, default=0,
                   help="rank 1 kills itself after this step (a crash, to resume from)")
    return p.parse_args()


def build_model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank (DDP checks it)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(32, 1))


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True).tanh())


def main() -> None:
    args = parse_args()
    dist.init_process_group("gloo")  # torchrun's environment gives rank and world size
    rank = dist.get_rank()

    model = build_model()
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(1000 + rank)  # each rank its own dropout stream
    data = dataset()
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = ResumableLoader(DataLoader(data, batch_size=4, sampler=sampler))

    ckpt = torchckpt.Checkpoint(model=model, optimizer=optimizer, data=loader,
                                rng=torchckpt.RNGState(), step=0)
    manager = torchckpt.CheckpointManager(ckpt, args.dir, max_to_keep=2)
    resumed = manager.restore_or_initialize()  # every rank; None on a fresh start
    start = step = ckpt.step
    print(f"[rank {rank}] {'resumed from ' + resumed if resumed else 'fresh start'} at step "
          f"{start}", flush=True)

    with open(os.path.join(args.dir, f"losses-rank{rank}.txt"), "a", encoding="utf-8") as log:
        while step < args.steps:
            sampler.set_epoch(loader.epoch)  # the restored epoch, after a resume
            for x, y in loader:  # mid-epoch after a resume: the remaining batches
                loss = F.mse_loss(ddp(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                ckpt.step = step
                log.write(f"{start} {step} {loss.item().hex()}\n")
                log.flush()
                if step % args.save_every == 0:
                    manager.save()  # on every rank: collective
                if rank == 1 and step == args.fail_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)  # a crash: run again to resume
                if step == args.steps:
                    break

    if rank == 0:  # an export by one rank: collective=False, so no other rank takes part
        export = torchckpt.Checkpoint(model=model)
        export.write(os.path.join(args.dir, "final-weights"),
                     torchckpt.CheckpointOptions(collective=False))
        print(f"[rank 0] done at step {step}; weights in {args.dir}/final-weights", flush=True)
    manager.close()
    dist.barrier()  # every rank done, rank 0's export included, before the group goes away
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
