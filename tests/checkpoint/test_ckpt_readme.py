"""The README's ``Checkpoint`` and lazy-restore examples, run as written (paths under tmp_path)."""

from __future__ import annotations

import torch

import torchckpt


def build_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_readme_checkpoint_example(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
    ckpt = torchckpt.Checkpoint(model=model, optimizer=opt, scheduler=sched,
                                scaler=torch.amp.GradScaler("cpu"), epoch=0)

    ckpt.epoch = 3
    path = ckpt.save("runs/exp1/ckpt")
    assert path == "runs/exp1/ckpt-1"
    # as TF writes it: relative to the directory, not to the working directory
    assert 'model_checkpoint_path: "ckpt-1"' in (tmp_path / "runs/exp1/checkpoint").read_text()

    status = ckpt.restore("runs/exp1")
    status.assert_consumed()

    model.zero_grad()
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    path = ckpt.save("runs/exp1/ckpt")

    ckpt = torchckpt.Checkpoint()
    status = ckpt.restore(path)
    ckpt.model = fresh = build_model()
    ckpt.optimizer = torch.optim.Adam(fresh.parameters())
    status.expect_partial()  # the scheduler, scaler and epoch were not attached this time
    assert status.report().pending == ["epoch", "scaler", "scheduler"]
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[a]["exp_avg"], ckpt.optimizer.state[b]["exp_avg"])
