"""Asynchronous saving (issue 7, Build 3): snapshot semantics and error surfacing."""

from __future__ import annotations

import os

import pytest
import torch

from torchckpt import Checkpoint, CheckpointOptions
from torchckpt.format import latest_checkpoint

ASYNC = CheckpointOptions(enable_async=True)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))


def test_async_save_writes_the_snapshot_taken_at_save_time(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = Checkpoint(model=model, optimizer=opt)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    path = ckpt.save(str(tmp_path / "ckpt"), ASYNC)
    # Training goes on while the write proceeds; the checkpoint must not see it.
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 64)).sum().backward()
        opt.step()
    ckpt.sync()
    assert latest_checkpoint(str(tmp_path)) == path
    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    Checkpoint(model=fresh).restore(path).expect_partial()
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_state_file_names_only_complete_async_saves(tmp_path):
    ckpt = Checkpoint(model=_model())
    first = ckpt.save(str(tmp_path / "ckpt"), ASYNC)
    second = ckpt.save(str(tmp_path / "ckpt"), ASYNC)  # waits for the first
    ckpt.sync()
    assert os.path.basename(first) == "ckpt-1" and os.path.basename(second) == "ckpt-2"
    assert latest_checkpoint(str(tmp_path)) == second


def test_background_error_surfaces_at_next_sync_and_save(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("x")
    ckpt = Checkpoint(model=_model())
    ckpt.save(str(blocker / "ckpt"), ASYNC)  # returns: the failure happens in the background
    with pytest.raises(OSError):
        ckpt.sync()
    ckpt.sync()  # the error was reported once; nothing is in flight now

    ckpt.save(str(blocker / "ckpt"), ASYNC)
    with pytest.raises(OSError):
        ckpt.save(str(tmp_path / "ok"), ASYNC)
    good = ckpt.save(str(tmp_path / "ok"), ASYNC)
    ckpt.sync()
    assert latest_checkpoint(str(tmp_path)) == good


def test_async_buffers_are_reused_between_saves(tmp_path):
    ckpt = Checkpoint(model=_model())
    ckpt.save(str(tmp_path / "ckpt"), ASYNC)
    ckpt.sync()
    first = {k: v.data_ptr() for k, v in ckpt._async._buffers.items()}
    ckpt.save(str(tmp_path / "ckpt"), ASYNC)
    ckpt.sync()
    assert {k: v.data_ptr() for k, v in ckpt._async._buffers.items()} == first
