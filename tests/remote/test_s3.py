"""Checkpoints on a real S3 server (moto in server mode, see conftest.py)."""

from __future__ import annotations

import os

import pytest
import s3fs
import torch

import torchckpt
from torchckpt.format import storage
from torchckpt.format.naming import data_path, index_path


class Killed(RuntimeError):
    """Stands for the process dying at that point (an exception, so the fsspec loop lives)."""


def model_and_optimizer(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
    return model, opt


def same_state(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a) and list(a) == list(b)


def test_save_and_restore_model_and_optimizer_bit_for_bit(s3) -> None:
    model, opt = model_and_optimizer(0)
    ckpt = torchckpt.Checkpoint(model=model, optimizer=opt, step=5)
    path = ckpt.save(f"{s3}/run/ckpt")
    assert path == f"{s3}/run/ckpt-1"
    assert torchckpt.latest_checkpoint(f"{s3}/run") == path
    fs = s3fs.S3FileSystem()
    state = fs.cat_file(f"{s3}/run/checkpoint").decode()
    assert state.startswith('model_checkpoint_path: "ckpt-1"')  # relative, as TF writes it

    fresh, fresh_opt = model_and_optimizer(1)
    restored = torchckpt.Checkpoint(model=fresh, optimizer=fresh_opt, step=0)
    restored.restore(f"{s3}/run").assert_consumed()
    assert same_state(model.state_dict(), fresh.state_dict())
    for p, q in zip(model.parameters(), fresh.parameters()):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][name], fresh_opt.state[q][name])
    assert restored.step == 5


def test_reader_api_and_ranged_reads(s3, s3_server) -> None:
    tensors = {f"t{i}": torch.full((256, 256), float(i)) for i in range(4)}  # 256 KiB each
    torchckpt.save_state_dict(tensors, f"{s3}/sd")
    s3_server.clear()
    with torchckpt.load_checkpoint(f"{s3}/sd") as reader:
        key = "t2/.ATTRIBUTES/VARIABLE_VALUE"
        opened = [(r.path, r.nbytes) for r in s3_server.reads(s3[5:])]
        value = reader.get_tensor(key)
    assert torch.equal(torch.as_tensor(value), tensors["t2"])
    index_bytes = s3fs.S3FileSystem().size(index_path(f"{s3}/sd"))
    bucket = s3[5:]
    assert opened == [(f"/{bucket}/sd.index", index_bytes)]
    reads = s3_server.reads(bucket)
    data = [r for r in reads if r.path == f"/{bucket}/sd.data-00000-of-00001"]
    assert [r.nbytes for r in data] == [256 * 256 * 4]  # exactly that tensor's range
    assert sum(r.nbytes for r in reads) == index_bytes + 256 * 256 * 4
    assert dict(torchckpt.list_variables(f"{s3}/sd"))[key] == [256, 256]
    assert torch.equal(torch.as_tensor(torchckpt.load_variable(f"{s3}/sd", key)), tensors["t2"])


def test_whole_restore_streams_each_data_file_once(s3, s3_server) -> None:
    tensors = {f"t{i}": torch.randn(300, 100) for i in range(20)}
    torchckpt.save_state_dict(tensors, f"{s3}/sd")
    s3_server.clear()
    out = torchckpt.load_state_dict(f"{s3}/sd")
    assert all(torch.equal(out[k], v) for k, v in tensors.items())
    bucket = s3[5:]
    data = [r for r in s3_server.reads(bucket) if ".data-" in r.path]
    size = s3fs.S3FileSystem().size(data_path(f"{s3}/sd", 0, 1))
    spans = sorted(tuple(map(int, r.range.removeprefix("bytes=").split("-"))) for r in data)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # no byte fetched twice
    assert sum(r.nbytes for r in data) <= size  # one tensor span + the structure string
    assert len(data) <= 2


def test_manager_keeps_max_to_keep_and_deletes_every_file(s3) -> None:
    model, opt = model_and_optimizer(0)
    ckpt = torchckpt.Checkpoint(model=model, optimizer=opt)
    manager = torchckpt.CheckpointManager(ckpt, f"{s3}/run", max_to_keep=2)
    paths = [manager.save() for _ in range(4)]
    assert paths == [f"{s3}/run/ckpt-{i}" for i in range(1, 5)]
    assert manager.checkpoints == paths[2:]
    assert manager.latest_checkpoint == paths[-1]
    names = storage.list_names(f"{s3}/run")
    assert names == sorted(["checkpoint"] + [f"ckpt-{i}{s}" for i in (3, 4)
                                             for s in (".index", ".data-00000-of-00001")])
    again = torchckpt.CheckpointManager(torchckpt.Checkpoint(model=model, optimizer=opt),
                                        f"{s3}/run", max_to_keep=2)
    assert again.checkpoints == paths[2:] and again.restore_or_initialize() == paths[-1]


def test_killed_save_leaves_the_previous_checkpoint_latest(s3, monkeypatch) -> None:
    model, opt = model_and_optimizer(0)
    ckpt = torchckpt.Checkpoint(model=model, optimizer=opt)
    manager = torchckpt.CheckpointManager(ckpt, f"{s3}/run", max_to_keep=3)
    first = manager.save()
    real_put = s3fs.S3FileSystem._put_file

    async def killed(self, lpath, rpath, *args, **kwargs):  # the save dies before the index
        if rpath.endswith(".index"):
            raise Killed("killed")
        return await real_put(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", killed)
    s3fs.S3FileSystem.clear_instance_cache()  # instances bind their methods when made
    with pytest.raises(Killed):
        manager.save()
    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", real_put)
    s3fs.S3FileSystem.clear_instance_cache()
    assert torchckpt.latest_checkpoint(f"{s3}/run") == first
    assert "ckpt-2.data-00000-of-00001" in storage.list_names(f"{s3}/run")  # orphan data
    fresh, fresh_opt = model_and_optimizer(1)
    torchckpt.Checkpoint(model=fresh, optimizer=fresh_opt).restore(f"{s3}/run").assert_consumed()
    assert same_state(model.state_dict(), fresh.state_dict())
    later = torchckpt.CheckpointManager(torchckpt.Checkpoint(model=model, optimizer=opt),
                                        f"{s3}/run", max_to_keep=3)
    assert later.restore_or_initialize() == first
    assert later.save() == f"{s3}/run/ckpt-2"  # the orphan's number, written afresh
    assert later.checkpoints == [first, f"{s3}/run/ckpt-2"]
    torchckpt.Checkpoint(model=fresh, optimizer=fresh_opt).restore(f"{s3}/run").assert_consumed()


def test_state_file_copy_opens_locally(s3, tmp_path) -> None:
    ckpt = torchckpt.Checkpoint(w=torch.arange(5.0))
    ckpt.save(f"{s3}/run/ckpt")
    s3fs.S3FileSystem().get(f"{s3}/run/", str(tmp_path), recursive=True)
    local = torchckpt.latest_checkpoint(str(tmp_path))
    assert os.path.basename(local) == "ckpt-1"
    value = torchckpt.load_variable(local, "w/.ATTRIBUTES/VARIABLE_VALUE")
    assert torch.equal(torch.as_tensor(value), torch.arange(5.0))


def test_memory_and_file_urls(tmp_path) -> None:
    sd = {"w": torch.ones(3), "n": 2}
    for url in ["memory://torchckpt-test/sd", f"file://{tmp_path}/sd"]:
        assert torchckpt.save_state_dict(sd, url) == url
        out = torchckpt.load_state_dict(url)
        assert out["n"] == 2 and torch.equal(out["w"], sd["w"])
    assert os.path.isfile(tmp_path / "sd.index")
