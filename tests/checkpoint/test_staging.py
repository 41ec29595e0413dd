"""Device tensors go to and from the files through two small staging buffers.

The staged path is device-agnostic: here it runs on CPU tensors (the save
and restore paths' staging decisions are forced) with buffers of a few dozen bytes, so
every tensor crosses many pieces and both buffers. The files must be the
same bytes as the direct path writes, restores must give the same values,
and a damaged payload must still fail its checksum. The CUDA test at the end
runs where a GPU is present (``benchmarks/gpu.py`` measures the speed).
"""

from __future__ import annotations

import os

import pytest
import torch

import torchckpt
from torchckpt import restoring
from torchckpt.errors import ChecksumMismatchError
from torchckpt.format import BundleReader, BundleWriter
from torchckpt.format.dtypes import DataType
from torchckpt.transfer import host, staging, values

TENSORS = {
    "f32": torch.randn(7, 5),
    "bf16": torch.randn(33).to(torch.bfloat16),
    "bool": torch.rand(50) > 0.5,
    "c64": torch.randn(9, dtype=torch.complex64),
    "i64": torch.arange(-20, 20),
    "scalar": torch.tensor(3.5),
    "empty": torch.zeros(0, 4),
    "exact": torch.arange(12, dtype=torch.int32),  # 48 bytes: exactly one buffer
}


@pytest.fixture
def tiny_staging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "STAGING_BYTES", 48)


def _counted(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Replace ``module.name`` with a wrapper that counts its calls; returns the counter."""
    calls = [0]
    real = getattr(module, name)

    def counting(*args, **kwargs):  # noqa: ANN202 - whatever the real function returns
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def _stage_saves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Saves send every tensor through the staging buffers, as for tensors on a GPU.

    ``host._on_device`` is the save path's decision: it asks ``needs_staging`` only for
    a tensor outside host memory, so forcing ``needs_staging`` alone would leave these
    CPU tensors on the direct path. Returns the count of ``device_chunks`` calls, which
    proves the staged path ran."""
    monkeypatch.setattr(host, "_on_device", lambda item: True)
    return _counted(monkeypatch, host, "device_chunks")


def _stage_restores(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Restores read every value through the staging buffers, as onto a GPU.

    A restore reads a plain host tensor's value in one batch with the others
    (``restoring._is_plain_leaf`` admits it) and hands every other value to its adapter
    through ``values.BundleValue``, which asks ``needs_staging``: both are forced.
    Returns the count of ``read_to_device`` calls, which proves the staged path ran."""
    monkeypatch.setattr(restoring, "_is_plain_leaf", lambda node: False)
    monkeypatch.setattr(values, "needs_staging", lambda device: True)
    return _counted(monkeypatch, values, "read_to_device")


@pytest.mark.parametrize("name", list(TENSORS))
def test_device_chunks_yield_the_tensor_bytes_in_pieces(tiny_staging, name: str) -> None:
    t = TENSORS[name]
    with staging.staging_buffers() as buffers:
        pieces = [bytes(p) for p in staging.device_chunks(t, buffers)]
    assert all(len(p) <= 48 for p in pieces)
    assert b"".join(pieces) == t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def test_device_chunks_resolve_views_conjugates_and_negatives(tiny_staging) -> None:
    base = torch.randn(6, 8)
    c = torch.randn(10, dtype=torch.complex64)
    for t, want in [(base.t(), base.t().contiguous()), (c.conj(), c.conj().resolve_conj()),
                    (torch._neg_view(base), -base)]:
        with staging.staging_buffers() as buffers:
            got = b"".join(bytes(p) for p in staging.device_chunks(t, buffers))
        assert got == want.reshape(-1).view(torch.uint8).numpy().tobytes()


def test_add_chunks_writes_what_add_writes(tmp_path) -> None:
    data = torch.randn(1000).numpy()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    w = BundleWriter(a)
    w.add("x", data, DataType.DT_FLOAT, (1000,))
    w.finish()
    w = BundleWriter(b)
    w.add_chunks("x", [memoryview(data)[i:i + 77] for i in range(0, 1000, 77)],
                 DataType.DT_FLOAT, (1000,))
    w.finish()
    for suffix in (".index", ".data-00000-of-00001"):
        assert open(a + suffix, "rb").read() == open(b + suffix, "rb").read()
    w = BundleWriter(str(tmp_path / "c"))
    with pytest.raises(ValueError, match="bytes for shape"):
        w.add_chunks("x", [memoryview(data)[:10]], DataType.DT_FLOAT, (1000,))
    w.abort()


def test_read_chunks_reuses_the_buffers_and_verifies_the_whole_payload(tmp_path) -> None:
    data = torch.randn(1000).numpy()
    prefix = str(tmp_path / "ckpt")
    w = BundleWriter(prefix)
    w.add("x", data, DataType.DT_FLOAT, (1000,))
    w.finish()
    bufs = [memoryview(bytearray(300)), memoryview(bytearray(300))]
    with BundleReader(prefix) as r:
        got = bytearray()
        for i, (pos, part) in enumerate(r.read_chunks("x", bufs)):
            assert pos == len(got) and part.obj is bufs[i % 2].obj
            got += part
    assert bytes(got) == data.tobytes()
    path = prefix + ".data-00000-of-00001"
    blob = bytearray(open(path, "rb").read())
    blob[3999] ^= 1  # the very last byte: only the whole-payload check can see it
    open(path, "wb").write(blob)
    with BundleReader(prefix) as r, pytest.raises(ChecksumMismatchError, match="'x'"):
        for _ in r.read_chunks("x", bufs):
            pass


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5),
                               torch.nn.Linear(5, 3).to(torch.bfloat16))


def test_checkpoint_through_staging_writes_the_same_files(tmp_path, tiny_staging,
                                                          monkeypatch) -> None:
    model = _model()
    direct = torchckpt.Checkpoint(model=model).write(str(tmp_path / "direct"))
    with monkeypatch.context() as patch:
        staged_calls = _stage_saves(patch)
        staged = torchckpt.Checkpoint(model=model).write(str(tmp_path / "staged"))
    assert staged_calls[0] == len(model.state_dict())
    for suffix in (".index", ".data-00000-of-00001"):
        assert open(direct + suffix, "rb").read() == open(staged + suffix, "rb").read()


def test_restore_through_staging_and_its_checksum(tmp_path, tiny_staging, monkeypatch) -> None:
    model = _model()
    prefix = torchckpt.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    staged_calls = _stage_restores(monkeypatch)
    other = _model()
    for p in other.parameters():
        torch.nn.init.zeros_(p)
    torchckpt.Checkpoint(model=other).read(prefix).assert_consumed()
    assert staged_calls[0] == len(model.state_dict())
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name

    with BundleReader(prefix) as r:  # damage the last byte of the first Linear's weight
        key = next(k for k in r.keys() if k.startswith(b"model/0/weight"))
        e = r.entry(key)
    path = prefix + ".data-00000-of-00001"
    blob = bytearray(open(path, "rb").read())
    blob[e.offset + e.size - 1] ^= 0x40
    open(path, "wb").write(blob)
    with pytest.raises(ChecksumMismatchError, match="model/0/weight"):
        torchckpt.Checkpoint(model=_model()).read(prefix)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_state_saves_and_restores_through_pinned_buffers(tmp_path) -> None:
    model = _model().cuda()
    opt = torch.optim.Adam(model.parameters())
    model[0](torch.randn(4, 6, device="cuda")).sum().backward()
    opt.step()
    prefix = torchckpt.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "ckpt"))
    with staging.staging_buffers() as buffers:
        assert all(b.is_pinned() for b in buffers)
    other = _model().cuda()
    other_opt = torch.optim.Adam(other.parameters())
    torchckpt.Checkpoint(model=other, optimizer=other_opt).read(prefix)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert b.device.type == "cuda" and torch.equal(a, b)
    with BundleReader(prefix) as r:  # the files hold the values, read on the CPU
        key = next(k for k in r.keys() if k.startswith(b"model/0/weight"))
        assert torch.equal(torch.from_numpy(r.read_array(key)), model[0].weight.cpu())
    assert os.path.exists(prefix + ".index")


def test_staging_buffers_belong_to_their_checkpoint_and_close_frees_them(tiny_staging,
                                                                         monkeypatch,
                                                                         tmp_path) -> None:
    """No module-level buffers: a checkpoint keeps its own set between saves (pinning costs
    more than using), ``close()`` frees them, and the checkpoint stays usable."""
    staged_calls = _stage_saves(monkeypatch)  # as if on a GPU
    assert not any(isinstance(v, list) and v and isinstance(v[0], torch.Tensor)
                   for v in vars(staging).values())
    model = _model()
    ckpt = torchckpt.Checkpoint(model=model)
    ckpt.write(str(tmp_path / "a"))
    assert staged_calls[0] == len(model.state_dict())
    kept = ckpt._staging._buffers
    assert len(kept) == 2 and all(b.numel() == 48 for b in kept)
    ckpt.write(str(tmp_path / "b"))
    assert ckpt._staging._buffers is kept  # reused, not reallocated
    ckpt.close()
    assert ckpt._staging._buffers == []
    ckpt.write(str(tmp_path / "c"))  # still usable
    fresh = _model()
    torchckpt.Checkpoint(model=fresh).read(str(tmp_path / "c")).assert_consumed()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 fresh.state_dict().values()))
