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


def test_every_forged_step_is_put_back_not_only_the_first_refused(tmp_path) -> None:
    model = _model(10, seed=0)
    opt = _adam(model)
    params = list(model.parameters())
    for i in (2, 5, 9):
        opt.state[params[i]]["step"] = torch.tensor(-float(i))
    prefix = torchckpt.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "c"))

    live_model = _model(10, seed=1)
    live = _adam(live_model)
    live.step()
    before = {i: live.state[p]["step"].clone() for i, p in enumerate(live_model.parameters())}
    with pytest.raises(InvalidValueError, match="step") as info:
        torchckpt.Checkpoint(model=live_model, optimizer=live).read(prefix)
    assert "params/2/" in str(info.value.key)  # the first refused, in the graph's order
    for i, p in enumerate(live_model.parameters()):
        expected = before[i] if i in (2, 5, 9) else opt.state[params[i]]["step"]
        assert torch.equal(live.state[p]["step"], expected), i


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


def _mixed_dtypes(fill: float) -> torch.nn.Module:
    model = torch.nn.Module()
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
              torch.int8, torch.bool, torch.complex64]
    model.params = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.full((3, 2), fill).to(dt), requires_grad=False)
         for dt in dtypes])
    model.register_buffer("scalar", torch.tensor(fill))
    model.register_buffer("empty", torch.zeros(0, 4))
    model.register_buffer("view", torch.arange(12.0).reshape(3, 4)[1:])  # a contiguous view
    return model


@pytest.mark.parametrize("native", [True, False])
def test_every_dtype_lands_exactly_by_address_and_through_buffers(tmp_path, monkeypatch,
                                                                  native: bool) -> None:
    """A restore copies plain host tensors to their memory by address where the C
    accelerator is loaded, and reads them into numpy views (or through the adapter, for
    the dtypes numpy lacks) where it is not: the values are the same."""
    if not native:
        monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
    saved = _mixed_dtypes(1.5)
    saved.view.mul_(-1)
    prefix = torchckpt.Checkpoint(model=saved).write(str(tmp_path / "c"))
    live = _mixed_dtypes(0.0)
    view_base = live.view._base.view(3, 4)  # the whole arange the buffer is a view of
    torchckpt.Checkpoint(model=live).read(prefix).assert_consumed()
    for (name, got), want in zip(live.state_dict().items(), saved.state_dict().values()):
        assert got.dtype == want.dtype and torch.equal(got, want), name
    assert torch.equal(view_base[1:], saved.view)
    assert torch.equal(view_base[0], torch.arange(4.0))  # nothing written outside the view
