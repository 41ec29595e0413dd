"""``load_state_dict(prefix, into=...)``: saved values land in the given tensors, in place."""

from __future__ import annotations

import collections

import pytest
import torch

import torchckpt
from torchckpt.errors import MismatchError


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3),
                               torch.nn.Linear(3, 2))


def test_a_models_state_dict_lands_in_the_models_own_tensors(tmp_path) -> None:
    saved = _model(0)
    prefix = torchckpt.save_state_dict(saved.state_dict(), str(tmp_path / "sd"))
    live = _model(1)
    before = {k: v.data_ptr() for k, v in live.state_dict().items()}
    out = torchckpt.load_state_dict(prefix, into=live.state_dict())
    assert isinstance(out, collections.OrderedDict)
    for key, value in saved.state_dict().items():
        assert torch.equal(live.state_dict()[key], value), key
        assert live.state_dict()[key].data_ptr() == before[key]  # in place
        assert out[key] is live.state_dict()[key] or out[key].data_ptr() == before[key]


def test_parameters_and_nested_values_come_back(tmp_path) -> None:
    p = torch.nn.Parameter(torch.randn(3))
    state = {"model": {"w": p, "b": torch.arange(4)}, "step": 7, "hist": [torch.ones(2), 0.5]}
    prefix = torchckpt.save_state_dict(state, str(tmp_path / "sd"))
    live_p = torch.nn.Parameter(torch.zeros(3))
    live = {"model": {"w": live_p, "b": torch.zeros(4, dtype=torch.int64)}, "step": 0,
            "hist": [torch.zeros(2), 0.0]}
    out = torchckpt.load_state_dict(prefix, into=live)
    assert out["model"]["w"] is live_p and torch.equal(live_p, p)
    assert torch.equal(live["model"]["b"], torch.arange(4))
    assert torch.equal(live["hist"][0], torch.ones(2))
    assert out["step"] == 7 and out["hist"][1] == 0.5


def test_a_shape_mismatch_names_the_key_and_changes_nothing(tmp_path) -> None:
    prefix = torchckpt.save_state_dict({"a": torch.ones(3), "b": torch.ones(2)},
                                       str(tmp_path / "sd"))
    live = {"a": torch.zeros(3), "b": torch.zeros(5)}
    with pytest.raises(MismatchError, match=r"shape mismatch for 'b/\.ATTRIBUTES/VARIABLE_VALUE'"):
        torchckpt.load_state_dict(prefix, into=live)
    assert not live["a"].any() and not live["b"].any()


def test_a_dtype_mismatch_names_the_key(tmp_path) -> None:
    prefix = torchckpt.save_state_dict({"a": torch.ones(3)}, str(tmp_path / "sd"))
    with pytest.raises(MismatchError, match="dtype"):
        torchckpt.load_state_dict(prefix, into={"a": torch.zeros(3, dtype=torch.float64)})


def test_tensors_the_checkpoint_lacks_are_refused(tmp_path) -> None:
    prefix = torchckpt.save_state_dict({"a": torch.ones(3)}, str(tmp_path / "sd"))
    with pytest.raises(ValueError, match="no value for"):
        torchckpt.load_state_dict(prefix, into={"a": torch.zeros(3), "extra": torch.zeros(1)})


def test_non_contiguous_and_bfloat16_destinations_are_filled(tmp_path) -> None:
    state = {"t": torch.randn(3, 4).t().contiguous(), "h": torch.randn(5).bfloat16()}
    prefix = torchckpt.save_state_dict(state, str(tmp_path / "sd"))
    live = {"t": torch.zeros(3, 4).t(), "h": torch.zeros(5, dtype=torch.bfloat16)}
    torchckpt.load_state_dict(prefix, into=live)
    assert torch.equal(live["t"], state["t"]) and torch.equal(live["h"], state["h"])


def test_a_corrupted_payload_is_an_error_under_into(tmp_path) -> None:
    prefix = torchckpt.save_state_dict({"a": torch.arange(64.0)}, str(tmp_path / "sd"))
    data = tmp_path / "sd.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(torchckpt.errors.ChecksumMismatchError, match="VARIABLE_VALUE"):
        torchckpt.load_state_dict(prefix, into={"a": torch.zeros(64)})


def test_into_with_mmap_is_refused(tmp_path) -> None:
    prefix = torchckpt.save_state_dict({"a": torch.ones(3)}, str(tmp_path / "sd"))
    with pytest.raises(ValueError, match="into"):
        torchckpt.load_state_dict(prefix, mmap=True, into={"a": torch.zeros(3)})


def _nested(fill: float) -> dict:
    return {"model": collections.OrderedDict(w=torch.full((3,), fill), b=torch.full((2,), fill)),
            0: torch.full((1,), fill), "0": torch.full((1,), fill + 1),
            "pairs": (torch.full((2, 2), fill), [torch.full((4,), fill), None, 3]),
            "deep": [[{"x.y/z": torch.full((5,), fill)}]]}


def _tensors(state) -> list:
    if isinstance(state, dict):
        return [t for v in state.values() for t in _tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _tensors(v)]
    return [state] if isinstance(state, torch.Tensor) else []


def test_every_tensor_of_a_nested_structure_lands_in_its_own_place(tmp_path) -> None:
    saved = _nested(1.0)
    prefix = torchckpt.save_state_dict(saved, str(tmp_path / "sd"))
    live = _nested(0.0)
    out = torchckpt.load_state_dict(prefix, into=live)
    for want, got, returned in zip(_tensors(saved), _tensors(live), _tensors(out)):
        assert torch.equal(got, want) and returned is got


def test_a_tensor_shared_in_into_where_the_saved_ones_were_not_gets_the_first_value(
        tmp_path) -> None:
    prefix = torchckpt.save_state_dict({"a": torch.ones(2), "b": torch.full((2,), 2.0)},
                                       str(tmp_path / "sd"))
    shared = torch.zeros(2)
    out = torchckpt.load_state_dict(prefix, into={"a": shared, "b": shared})
    assert out["a"] is shared and torch.equal(shared, torch.ones(2))
    assert out["b"] is not shared and torch.equal(out["b"], torch.full((2,), 2.0))


def test_a_value_a_save_refuses_in_into_is_named(tmp_path) -> None:
    prefix = torchckpt.save_state_dict({"a": torch.ones(2)}, str(tmp_path / "sd"))
    with pytest.raises(ValueError, match=r"into\['extra'\].*cannot be saved"):
        torchckpt.load_state_dict(prefix, into={"a": torch.zeros(2), "extra": object()})
