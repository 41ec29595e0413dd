"""Quick start: checkpoint a torch training run in TensorFlow's format and resume it exactly.

Trains a small model for a few steps, saves model + optimizer + LR scheduler +
step counter with ``torchckpt.Checkpoint``, keeps training (the reference run),
then restores the checkpoint into freshly built objects and replays the same
steps: the parameters must come out bitwise equal. Finally it lists what the
checkpoint holds, as ``tf.train.list_variables`` would.

Run: ``python examples/quickstart.py`` (about 5 seconds on a laptop CPU).
"""

from __future__ import annotations

import tempfile

import torch

import torchckpt


def build(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.BatchNorm1d(32), torch.nn.Linear(32, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    return model, optimizer, scheduler


def train(model, optimizer, scheduler, steps: int, start: int) -> None:
    for step in range(start, start + steps):
        g = torch.Generator().manual_seed(step)  # the batch depends only on the step number
        x, y = torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        scheduler.step()


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="torchckpt-quickstart-")
    model, optimizer, scheduler = build()
    train(model, optimizer, scheduler, steps=5, start=0)
    ckpt = torchckpt.Checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, step=5)
    path = ckpt.save(f"{workdir}/ckpt")
    print(f"saved {path}")
    train(model, optimizer, scheduler, steps=5, start=5)  # the uninterrupted reference

    # A new process would do exactly this: build fresh objects, restore, continue.
    model2, optimizer2, scheduler2 = build(seed=123)
    resumed = torchckpt.Checkpoint(model=model2, optimizer=optimizer2, scheduler=scheduler2,
                                   step=0)
    resumed.restore(torchckpt.latest_checkpoint(workdir)).assert_consumed()
    print(f"restored step={resumed.step}, save_counter={resumed.save_counter}")
    train(model2, optimizer2, scheduler2, steps=5, start=resumed.step)

    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  model2.state_dict().values()))
    print(f"resumed run matches the uninterrupted run bitwise: {same}")
    print("checkpoint contents (key, shape):")
    for key, shape in torchckpt.list_variables(path):
        print(f"  {key} {shape}")
    if not same:
        raise SystemExit("resume mismatch")


if __name__ == "__main__":
    main()
