"""A tiny training run that checkpoints and can kill itself; driven by test_resume_training.py.

Run as a script in a fresh process::

    python train_script.py --dir D --log L --out O --steps 30 --save-every 4 \
        --workers 2 --loader resumable [--kill-at 13]

or, for many runs (with ``tests/`` on ``PYTHONPATH``),
``python train_script.py --rounds RUNS_JSON RESULTS_JSON``: RUNS_JSON
is a list of rounds, each a list of such argument lists. Every run is a process forked
from this one once it has imported everything (``forked.py``), so it starts from the
imported modules alone, exactly as a fresh interpreter would after its imports; the runs
of a round go two at a time, and a round starts when the one before it has ended.
RESULTS_JSON gets each run's exit status, by round.

Every run (the first, or one resumed from ``D``'s latest checkpoint) appends
``<step> <loss as float.hex()>`` to ``--log`` and, when it reaches ``--steps``,
writes the final parameters to ``--out`` (an ``.npz`` of plain arrays, no
pickle). ``--kill-at K`` sends SIGKILL to itself right after step K.

Randomness in every layer: a shuffled loader without a seeded generator (the
global RNG draws the permutation), per-sample augmentation that draws from
torch, numpy and ``random`` (in the workers, or in the main process with
``--workers 0``), dropout, Adam and a step LR schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import torchckpt
from forked import import_ahead, run_forked
from torchckpt.data import ResumableLoader

FEATURES = 6


class AugmentedDataset(Dataset):
    """Fixed points plus noise drawn at fetch time from torch, numpy and ``random``."""

    def __init__(self, n: int, augment: bool = True) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, FEATURES, generator=g)
        self.y = self.x.sum(dim=1, keepdim=True).sin()
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        if self.augment:
            scale = float(np.random.uniform(0.9, 1.1)) * random.uniform(0.9, 1.1)
            x = x * scale + 0.05 * torch.randn(FEATURES)
        return x, self.y[i]


def make_loader(kind: str, workers: int):
    # 43 samples, batches of 4: 11 batches per epoch, the last one short. torchdata's
    # workers restart from their seeds on resume, so they get no worker-side randomness.
    dataset = AugmentedDataset(43, augment=kind == "resumable" or workers == 0)
    if kind == "stateful":
        from torchdata.stateful_dataloader import StatefulDataLoader
        # Wrapped, so that the resumed iterator's extra base-seed draw is undone.
        return ResumableLoader(StatefulDataLoader(dataset, batch_size=4, shuffle=True,
                                                  num_workers=workers))
    return ResumableLoader(DataLoader(dataset, batch_size=4, shuffle=True, num_workers=workers))


def train(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--save-every", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--loader", choices=["resumable", "stateful"], default="resumable")
    p.add_argument("--kill-at", type=int, default=0)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)

    model = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.8)
    data = make_loader(args.loader, args.workers)
    step = torch.zeros((), dtype=torch.int64)
    ckpt = torchckpt.Checkpoint(model=model, optimizer=optimizer, scheduler=scheduler,
                                data=data, rng=torchckpt.RNGState(), step=step)
    manager = torchckpt.CheckpointManager(ckpt, args.dir, max_to_keep=2)
    if manager.latest_checkpoint is not None:
        ckpt.restore(manager.latest_checkpoint).assert_consumed()

    with open(args.log, "a", encoding="utf-8") as log:
        while int(step) < args.steps:
            for x, y in data:
                model.train()
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                log.write(f"{int(step)} {loss.item().hex()}\n")
                log.flush()
                if int(step) % args.save_every == 0:
                    manager.save()
                if int(step) == args.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if int(step) >= args.steps:
                    break
    np.savez(args.out, **{n: t.detach().numpy() for n, t in model.state_dict().items()})


def run_rounds(runs_path: str, results_path: str) -> None:
    import torch._inductor.config  # noqa: F401 - use_deterministic_algorithms imports it
    import torchdata.stateful_dataloader  # noqa: F401

    import_ahead()
    with open(runs_path, encoding="utf-8") as f:
        rounds = json.load(f)
    codes = [run_forked([(train, (argv,)) for argv in runs], timeout=300, at_once=2)
             for runs in rounds]
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump(codes, f)


if __name__ == "__main__":
    if sys.argv[1] == "--rounds":
        run_rounds(sys.argv[2], sys.argv[3])
    else:
        train(sys.argv[1:])
