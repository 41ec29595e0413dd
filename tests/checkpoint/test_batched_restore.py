"""Restoring many tensors in one batch gives what restoring them one by one gives.

Plain host tensors and the optimizer slots that have live state are checked
against their entries together and read in one pass; everything else goes
through its adapter. These tests prove the batch lands exact values, refuses
what the adapter would refuse (before anything lands where the adapter would
refuse first) and hands unusual values to the adapter.
"""

from __future__ import annotations

import pytest
import torch

import torchckpt
from torchckpt.errors import InvalidValueError, MismatchError


def _model(n: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Module()
    model.params = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(8)) for _ in range(n)])
    model.register_buffer("counts", torch.arange(5))
    return model


def _adam(model: torch.nn.Module) -> torch.optim.Adam:
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sum(p.sum() for p in model.parameters()).backward()
    opt.step()
    return opt


def test_many_parameters_and_adam_state_restore_exactly(tmp_path) -> None:
    model = _model(300, seed=0)
    opt = _adam(model)
    prefix = torchckpt.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "c"))

    fresh = _model(300, seed=1)
    fresh_opt = _adam(fresh)  # live state exists: the slots are read in the batch
    fresh_opt.step()
    torchckpt.Checkpoint(model=fresh, optimizer=fresh_opt).read(prefix).assert_consumed()

    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(model.counts, fresh.counts)
    for p, q in zip(model.parameters(), fresh.parameters()):
        for slot, value in opt.state[p].items():
            assert torch.equal(value, fresh_opt.state[q][slot]), slot


def test_state_created_at_restore_matches_state_read_in_place(tmp_path) -> None:
    """An optimizer without state gets new state tensors (the adapter's path); one with
    state gets it read in place (the batch): the values agree."""
    model = _model(20, seed=0)
    opt = _adam(model)
    prefix = torchckpt.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "c"))
    empty_model = _model(20, seed=2)
    empty = torch.optim.Adam(empty_model.parameters(), lr=0.1)
    torchckpt.Checkpoint(model=empty_model, optimizer=empty).read(prefix).assert_consumed()
    full_model = _model(20, seed=3)
    full = _adam(full_model)
    torchckpt.Checkpoint(model=full_model, optimizer=full).read(prefix).assert_consumed()
    for p, q in zip(empty_model.parameters(), full_model.parameters()):
        for slot, value in empty.state[p].items():
            assert torch.equal(value, full.state[q][slot])


def test_a_dtype_mismatch_in_the_batch_names_the_key(tmp_path) -> None:
    model = _model(50, seed=0)
    prefix = torchckpt.Checkpoint(model=model).write(str(tmp_path / "c"))
    live = _model(50, seed=1)
    live.params[7].data = live.params[7].data.double()
    with pytest.raises(MismatchError, match=r"model/params/7/\.ATTRIBUTES") as info:
        torchckpt.Checkpoint(model=live).read(prefix)
    assert "dtype" in str(info.value)


def test_a_shape_mismatch_in_the_batch_names_the_key(tmp_path) -> None:
    model = _model(50, seed=0)
    prefix = torchckpt.Checkpoint(model=model).write(str(tmp_path / "c"))
    live = _model(50, seed=1)
    live.params[3] = torch.nn.Parameter(torch.zeros(9))
    with pytest.raises(MismatchError, match=r"model/params/3/\.ATTRIBUTES"):
        torchckpt.Checkpoint(model=live).read(prefix)


@pytest.mark.parametrize("step", [-1.0, float("inf"), float("nan")])
def test_a_forged_step_read_in_the_batch_is_refused_and_never_lands(tmp_path, step) -> None:
    model = _model(10, seed=0)
    opt = _adam(model)
    first = next(iter(model.parameters()))
    opt.state[first]["step"] = torch.tensor(step)
    prefix = torchckpt.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "c"))

    live_model = _model(10, seed=1)
    live = _adam(live_model)
    before = live.state[next(iter(live_model.parameters()))]["step"].clone()
    with pytest.raises(InvalidValueError, match="step") as info:
        torchckpt.Checkpoint(model=live_model, optimizer=live).read(prefix)
    assert info.value.key and "OPTIMIZER_SLOT" in str(info.value.key)
    assert torch.equal(live.state[next(iter(live_model.parameters()))]["step"], before)


def test_non_contiguous_and_bfloat16_tensors_take_the_adapter_path(tmp_path) -> None:
    """Values the batch cannot read in place (a transposed view, bfloat16) still land."""
    model = torch.nn.Module()
    model.t = torch.nn.Parameter(torch.randn(3, 4).t(), requires_grad=False)
    model.b = torch.nn.Parameter(torch.randn(6).to(torch.bfloat16), requires_grad=False)
    prefix = torchckpt.Checkpoint(model=model).write(str(tmp_path / "c"))
    live = torch.nn.Module()
    live.t = torch.nn.Parameter(torch.zeros(3, 4).t(), requires_grad=False)
    live.b = torch.nn.Parameter(torch.zeros(6, dtype=torch.bfloat16), requires_grad=False)
    torchckpt.Checkpoint(model=live).read(prefix).assert_consumed()
    assert torch.equal(live.t, model.t) and torch.equal(live.b, model.b)
