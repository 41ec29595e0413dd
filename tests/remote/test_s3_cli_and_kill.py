"""The command line on S3 URLs, a save SIGKILLed while uploading, and a URL without the
remote extra: against the S3 server of conftest.py."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import torch

import torchckpt
from processes import run_isolated
from torchckpt.cli import main as cli
from torchckpt.errors import RemoteStorageUnavailableError
from torchckpt.format import storage

CHILD = textwrap.dedent("""
    import os, signal, sys, s3fs, torch, torchckpt
    url, stage = sys.argv[1], sys.argv[2]
    armed = False
    # patched before any filesystem instance exists (instances bind these when made)
    real_put, real_pipe = s3fs.S3FileSystem._put_file, s3fs.S3FileSystem._pipe_file
    async def dying_put(self, lpath, rpath, *args, **kwargs):
        if armed and ((stage == "data" and ".data-" in rpath)
                      or (stage == "index" and rpath.endswith(".index"))):
            os.kill(os.getpid(), signal.SIGKILL)
        return await real_put(self, lpath, rpath, *args, **kwargs)
    async def dying_pipe(self, path, *args, **kwargs):
        if armed and stage == "state" and path.endswith("/checkpoint"):
            os.kill(os.getpid(), signal.SIGKILL)
        return await real_pipe(self, path, *args, **kwargs)
    s3fs.S3FileSystem._put_file, s3fs.S3FileSystem._pipe_file = dying_put, dying_pipe
    ckpt = torchckpt.Checkpoint(w=torch.full((4096,), 2.0), model=torch.nn.Linear(8, 4))
    manager = torchckpt.CheckpointManager(ckpt, url, max_to_keep=3)
    manager.restore_or_initialize()
    ckpt.w.fill_(3.0)
    armed = True
    manager.save()
    sys.exit(3)
""")


def _ckpt(value: float) -> torchckpt.Checkpoint:
    return torchckpt.Checkpoint(w=torch.full((4096,), value), model=torch.nn.Linear(8, 4))


@pytest.mark.parametrize("stage", ["data", "index", "state"])
def test_save_killed_while_uploading_leaves_the_previous_checkpoint_latest(s3, tmp_path,
                                                                           stage) -> None:
    url = f"{s3}/run"
    with torchckpt.CheckpointManager(_ckpt(2.0), url, max_to_keep=3) as manager:
        first = manager.save()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = run_isolated([sys.executable, str(script), url, stage], timeout=180,
                        env=dict(os.environ))
    assert done.returncode == -9, done.output
    assert torchckpt.latest_checkpoint(url) == first
    fresh = _ckpt(0.0)
    fresh.restore(url).assert_consumed()
    assert torch.equal(fresh.w, torch.full((4096,), 2.0))
    with torchckpt.CheckpointManager(fresh, url, max_to_keep=3) as again:
        assert again.latest_checkpoint == first
        fresh.w.fill_(4.0)
        second = again.save()
    check = _ckpt(0.0)
    check.restore(url).assert_consumed()
    assert torchckpt.latest_checkpoint(url) == second and torch.equal(check.w, fresh.w)


def test_command_line_takes_s3_urls(s3, capsys) -> None:
    url = f"{s3}/run"
    ckpt = _ckpt(1.0)
    a = ckpt.save(f"{url}/ckpt")
    ckpt.w.fill_(2.0)
    b = ckpt.save(f"{url}/ckpt")
    assert cli(["inspect", url]) == 0
    assert "w/.ATTRIBUTES/VARIABLE_VALUE" in capsys.readouterr().out
    assert cli(["graph", a]) == 0 and "model" in capsys.readouterr().out
    assert cli(["verify", url]) == 0
    assert f"OK {b}" in capsys.readouterr().out
    assert cli(["diff", a, b]) == 1
    assert "w/.ATTRIBUTES/VARIABLE_VALUE" in capsys.readouterr().out


def test_a_url_without_the_remote_extra_names_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if fsspec were not installed
    with pytest.raises(RemoteStorageUnavailableError, match=r"torchckpt\[remote\]"):
        torchckpt.Checkpoint(w=torch.ones(2)).save("s3://bucket/run/ckpt")
    with pytest.raises(RemoteStorageUnavailableError, match=r"torchckpt\[remote\]"):
        torchckpt.load_checkpoint("s3://bucket/run")
    assert storage.is_remote("s3://bucket/run") and not storage.is_remote("/local/run")


def test_converter_reads_a_keras_checkpoint_from_s3(s3) -> None:
    """load_tf_weights takes a URL like any path: the Keras fixture, uploaded, converts into
    the torch model with Keras' outputs."""
    import s3fs
    from torch import nn

    from torchckpt.convert import load_tf_weights

    fixture = os.path.join(os.path.dirname(__file__), "..", "data", "tf", "keras2_adam")
    fs = s3fs.S3FileSystem()
    for name in ("checkpoint", "ckpt-1.index", "ckpt-1.data-00000-of-00001"):
        fs.put_file(os.path.join(fixture, name), f"{s3}/keras/{name}")
    net = nn.Sequential(nn.Linear(6, 7), nn.Sigmoid(), nn.LayerNorm(7, eps=1e-5),
                        nn.Linear(7, 3))
    report = load_tf_weights(net, f"{s3}/keras")
    assert report.ok and report.transforms["0.weight"] == "transpose(1, 0)"
    import numpy as np
    with np.load(os.path.join(fixture, "ckpt-1.expected.npz"), allow_pickle=False) as ref:
        x, y = ref["__input__"], ref["__output__"]
    with torch.no_grad():
        assert torch.allclose(net(torch.from_numpy(x)), torch.from_numpy(y), atol=1e-5)
