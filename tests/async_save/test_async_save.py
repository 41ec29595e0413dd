"""Asynchronous saving: snapshot semantics and error surfacing."""

from __future__ import annotations

import os

import pytest
import torch

import torchckpt
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


def test_the_collector_stays_enabled_for_the_training_thread_during_an_async_write(tmp_path):
    """The background write never turns the garbage collector off for the process."""
    import gc
    import threading

    from torchckpt.format import bundle_writer

    model = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(64)) for _ in range(2000)])
    ckpt = torchckpt.Checkpoint(model=model)
    in_write, release = threading.Event(), threading.Event()
    real = {name: getattr(bundle_writer.BundleWriter, name)
            for name in ("add_many", "add_many_at")}  # by buffer, or by address

    def held_after_100(name):
        def add(self, items, **kwargs):
            def held():
                for i, item in enumerate(items):
                    if i == 100:  # the write is under way: let the training thread look
                        in_write.set()
                        release.wait(30)
                    yield item
            return real[name](self, held(), **kwargs)
        return add

    for name in real:
        setattr(bundle_writer.BundleWriter, name, held_after_100(name))
    try:
        ckpt.save(str(tmp_path / "ckpt"), torchckpt.CheckpointOptions(enable_async=True))
        assert in_write.wait(30)
        enabled_meanwhile = gc.isenabled()
        release.set()
        ckpt.sync()
    finally:
        for name, method in real.items():
            setattr(bundle_writer.BundleWriter, name, method)
        release.set()
    assert enabled_meanwhile
    assert gc.isenabled()
