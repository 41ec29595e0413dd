"""RNGState: torch CPU, CUDA, numpy and Python ``random`` saved as tensors + JSON and
restored so that the same random numbers come out again."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch
from resume_helpers import seed_everything, through_checkpoint_encoding

import torchckpt
from processes import run_isolated
from torchckpt.errors import TorchckptError


def _draws():
    # The normal draws leave cached second values in numpy's and random's state.
    return (torch.rand(4).tolist(), torch.randn(3).tolist(), np.random.rand(3).tolist(),
            np.random.standard_normal(3).tolist(), random.random(), random.gauss(0, 1),
            random.getrandbits(70))


def test_round_trip_repeats_every_stream():
    seed_everything(11)
    _draws()  # leave caches (has_gauss, gauss_next) in a non-initial state
    np.random.standard_normal()
    random.gauss(0, 1)
    state = through_checkpoint_encoding(torchckpt.RNGState().state_dict())
    first = _draws()
    seed_everything(99)
    torchckpt.RNGState().load_state_dict(state)
    assert _draws() == first


def test_layout():
    sd = torchckpt.RNGState().state_dict()
    assert set(sd) == {"torch", "cuda", "numpy", "python"}
    assert sd["torch"].dtype == torch.uint8 and sd["torch"].numel() == 5056
    assert sd["numpy"]["key"].dtype == torch.int64 and sd["numpy"]["key"].shape == (624,)
    internal = sd["python"]["internal"]
    assert internal.dtype == torch.int64 and internal.shape == (625,)
    assert sd["cuda"] == ([] if not torch.cuda.is_available() else sd["cuda"])


def test_through_a_checkpoint(tmp_path):
    seed_everything(3)
    rng = torchckpt.RNGState()
    path = torchckpt.Checkpoint(rng=rng).save(str(tmp_path / "c"))
    first = _draws()
    seed_everything(4)
    torchckpt.Checkpoint(rng=torchckpt.RNGState()).restore(path).assert_consumed()
    assert _draws() == first
    names = [name for name, _ in torchckpt.list_variables(path)]
    assert any(name.startswith("rng/") for name in names)


def test_malformed_state_is_a_torchckpt_error():
    sd = torchckpt.RNGState().state_dict()
    bad = dict(sd, numpy=dict(sd["numpy"], key=torch.zeros(5, dtype=torch.int64)))
    with pytest.raises(TorchckptError, match="624"):
        torchckpt.RNGState().load_state_dict(bad)
    with pytest.raises(TorchckptError, match="uint8 tensor"):
        torchckpt.RNGState().load_state_dict(dict(sd, torch=[1, 2, 3]))


_CUDA_CHILD = """
import torch, torchckpt
assert torch.cuda.is_available()
rng = torchckpt.RNGState()
sd = rng.state_dict()
assert len(sd["cuda"]) == torch.cuda.device_count() and sd["cuda"][0].dtype == torch.uint8
a = torch.rand(5, device="cuda").tolist()
torch.cuda.manual_seed_all(123)
rng.load_state_dict(sd)
assert torch.rand(5, device="cuda").tolist() == a
print("ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_generators_round_trip():
    proc = run_isolated([sys.executable, "-c", _CUDA_CHILD], timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
