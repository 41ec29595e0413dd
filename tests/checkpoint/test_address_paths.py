"""Saving host tensors by address writes what saving them as buffer views writes.

Where the C accelerator is loaded, ``Checkpoint.write`` hands the format layer
each plain host tensor's memory address (``BundleWriter.add_many_at``);
elsewhere, numpy views of the tensors (``add_many``). Tensors that are not
plain (non-contiguous, bfloat16, requiring grad, empty) take either path; the
files must be the same bytes.
"""

from __future__ import annotations

import os

import pytest
import torch

import torchckpt
from torchckpt.format import _io

needs_native = pytest.mark.skipif(_io.accelerator() is None,
                                  reason="the C accelerator is not built for this machine")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 3))
    model.register_buffer("transposed", torch.randn(7, 5).t())
    model.register_buffer("brain_float", torch.randn(9).to(torch.bfloat16))
    model.register_buffer("empty", torch.zeros(0, 3))
    model.register_buffer("large", torch.randn(300_000))  # written directly, not gathered
    model.register_buffer("flags", torch.rand(11) > 0.5)
    return model


@needs_native
def test_checkpoint_files_are_the_same_bytes_by_address_and_by_buffer(tmp_path, monkeypatch
                                                                       ) -> None:
    model = _model()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 300)).sum().backward()
    opt.step()
    ckpt = torchckpt.Checkpoint(model=model, optimizer=opt)
    by_address = ckpt.write(str(tmp_path / "address" / "c"))
    monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
    by_buffer = ckpt.write(str(tmp_path / "buffer" / "c"))
    for suffix in (".index", ".data-00000-of-00001"):
        with open(by_address + suffix, "rb") as a, open(by_buffer + suffix, "rb") as b:
            assert a.read() == b.read(), suffix
    assert os.path.getsize(by_address + ".data-00000-of-00001") > 1_200_000
