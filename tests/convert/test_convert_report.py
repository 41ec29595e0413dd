"""The report names every unmatched name on both sides and every transform;
``strict=True`` raises, listing them, and leaves the module untouched. No TensorFlow needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from convert_helpers import FIXTURES, rand, write_name_based, write_object_based
from test_convert_fixtures import Classifier, SmallNet
from torch import nn

from torchckpt.convert import load_tf_weights
from torchckpt.errors import AssignmentMapError, ConversionError, TorchckptError, UnmatchedError
from torchckpt.reader import load_checkpoint

KERAS2 = FIXTURES / "keras2_adam"
TF1 = FIXTURES / "tf1_name_based"


def all_keys(path) -> set[str]:
    with load_checkpoint(path) as reader:
        return set(reader.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}


def accounted(report) -> list[str]:
    used = [k for m in [*report.matched, *report.optimizer_matched] for k in m.sources]
    return sorted(set(used)) + [*report.unmatched_checkpoint, *report.skipped]


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_every_checkpoint_key_and_module_name_is_accounted_for(with_optimizer: bool) -> None:
    model = SmallNet()
    opt = torch.optim.Adam(model.parameters()) if with_optimizer else None
    report = load_tf_weights(model, KERAS2, optimizer=opt)
    keys = accounted(report)
    assert sorted(keys) == sorted(all_keys(KERAS2))
    assert len(keys) == len(set(keys))  # each key in exactly one place
    assert set(report.transforms) >= set(model.state_dict())
    assert any("learning_rate is 0.01, torch optimizer uses 0.001" in n
               for n in report.notes) == with_optimizer


class Wider(nn.Module):
    """SmallNet plus one extra Linear the checkpoint does not have."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.norm, self.head = nn.Linear(6, 7), nn.LayerNorm(7), nn.Linear(7, 3)
        self.extra = nn.Linear(3, 2)


def test_strict_raises_listing_unmatched_and_leaves_module_untouched() -> None:
    model = Wider()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConversionError) as info:
        load_tf_weights(model, KERAS2)
    err = info.value
    assert isinstance(err, UnmatchedError) and isinstance(err, TorchckptError)
    assert err.unmatched_live == ["extra.weight", "extra.bias"]
    assert "extra.weight" in str(err) and "extra.bias" in str(err)
    assert "strict=False" in str(err)
    assert err.report.unmatched_module["extra.weight"].startswith("no checkpoint layer left")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_non_strict_loads_what_matches_and_reports_the_rest() -> None:
    model = Wider()
    report = load_tf_weights(model, KERAS2, strict=False)
    assert not report.ok
    assert set(report.unmatched_module) == {"extra.weight", "extra.bias"}
    assert len(report.matched) == 6
    text = str(report)
    assert "problems:" in text and "extra.weight" in text and "[transpose(1, 0)]" in text
    assert json.loads(json.dumps(report.to_dict()))["unmatched_module"] == report.unmatched_module


class WrongKinds(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv1d(6, 7, 1)  # checkpoint layer 0 is a Dense
        self.norm = nn.BatchNorm1d(7)  # checkpoint layer 1 is a LayerNormalization
        self.head = nn.Linear(3, 7)  # transposed shape


def test_mismatched_kinds_and_shapes_name_both_sides() -> None:
    report = load_tf_weights(WrongKinds(), KERAS2, strict=False)
    assert len(report.mismatched) == 3
    conv, norm, head = report.mismatched
    assert conv.targets == ("proj.weight", "proj.bias")
    assert "'proj.weight' [7, 6, 1] cannot come from" in conv.reason and "[6, 7]" in conv.reason
    assert "moving_mean" in norm.reason
    assert "'head.weight' [7, 3]" in head.reason and "gives [3, 7]" in head.reason
    weights = {k for k in all_keys(KERAS2) if "OPTIMIZER_SLOT" not in k and k.startswith("net/")}
    assert set(report.unmatched_checkpoint) == weights
    assert all("see mismatched" in why for why in report.unmatched_checkpoint.values())
    assert "norm.num_batches_tracked" not in report.unmatched_module
    with pytest.raises(ConversionError, match="mismatch: proj.weight, proj.bias <- "):
        load_tf_weights(WrongKinds(), KERAS2)


def test_fewer_torch_modules_leaves_checkpoint_layers_unmatched() -> None:
    model = nn.Sequential(nn.Linear(6, 7), nn.LayerNorm(7))
    report = load_tf_weights(model, KERAS2, strict=False)
    assert sorted(report.unmatched_checkpoint) == [
        "net/layer_with_weights-2/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "net/layer_with_weights-2/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    assert not report.unmatched_module


def test_optimizer_problems_are_unmatched() -> None:
    model = SmallNet()
    opt = torch.optim.Adagrad(model.parameters())
    report = load_tf_weights(model, KERAS2, optimizer=opt, strict=False)
    assert set(report.unmatched_optimizer) == {n for n, _ in model.named_parameters()}
    assert "Adagrad state cannot be converted" in report.unmatched_optimizer["proj.weight"]
    slots = [k for k in all_keys(KERAS2) if "OPTIMIZER_SLOT" in k]
    assert set(slots) <= set(report.unmatched_checkpoint)
    other = SmallNet()
    with pytest.raises(ConversionError, match="unmatched optimizer state: proj.weight"):
        load_tf_weights(other, KERAS2, optimizer=torch.optim.Adagrad(other.parameters()))
    report = load_tf_weights(other, KERAS2, strict=False,  # parameters of another module
                             optimizer=torch.optim.Adam(model.parameters()))
    assert report.unmatched_optimizer["parameter #0"] == ("no weight was converted into this "
                                                          "parameter")


def test_optimizer_state_needs_matching_slots() -> None:
    model = Classifier()  # TF1 fixture has Momentum slots, not Adam's
    opt = torch.optim.Adam(model.parameters())
    report = load_tf_weights(model, TF1, strict=False, optimizer=opt, assignment_map={
        "classifier/fc_0/": "hidden", "classifier/out/": "out"})
    assert "no m/momentums/Adam/adam_m slot for 'classifier/fc_0/weights'" in \
        report.unmatched_optimizer["hidden.weight.exp_avg"]
    assert opt.state_dict()["state"] == {}


def test_assignment_map_problems_are_reported() -> None:
    report = load_tf_weights(Classifier(), TF1, strict=False, assignment_map=[
        ("classifier/fc_0/weights", "hidden.weight"),
        ("classifier/fc_0/biases", "nowhere.bias"),
        ("classifier/out/", None)])
    assert report.transforms == {"hidden.weight": "transpose(1, 0)"}
    assert "neither a parameter/buffer nor a module" in \
        report.unmatched_checkpoint["classifier/fc_0/biases"]
    assert report.skipped["classifier/out/weights"].startswith("the assignment map skips it")
    assert report.unmatched_module["hidden.bias"] == ("no checkpoint key is mapped onto it "
                                                      "(closest unmatched keys: "
                                                      "'classifier/fc_0/biases')")
    assert report.unmatched_module["out.weight"].startswith("no checkpoint key is mapped onto it")


@pytest.mark.parametrize("bad", [{"(": "x"}, [("a", 3)], [("a",)], ["a/b"]])
def test_malformed_assignment_map_raises(bad) -> None:
    with pytest.raises(AssignmentMapError):
        load_tf_weights(Classifier(), TF1, assignment_map=bad)


def test_epsilon_and_dtype_notes(tmp_path) -> None:
    prefix = write_object_based(tmp_path / "ckpt", {"model": {"layer_with_weights-0": {
        "gamma": rand(4), "beta": rand(4), "moving_mean": rand(4),
        "moving_variance": np.abs(rand(4)) + 1}}})
    model = nn.Sequential(nn.BatchNorm1d(4)).double()
    report = load_tf_weights(model, prefix)
    assert report.ignored_module == {"0.num_batches_tracked": "torch-only counter, left as is"}
    assert any("eps=1e-05, Keras BatchNormalization defaults to 0.001" in n for n in report.notes)
    assert any("stored as torch.float32 and is cast" in n for n in report.notes)
    assert model[0].running_mean.dtype == torch.float64


def test_name_based_checkpoint_without_map_matches_scopes(tmp_path) -> None:
    prefix = write_name_based(tmp_path / "m.ckpt", {"enc/fc/kernel": rand(3, 2),
                                                    "enc/fc/bias": rand(2), "stray": rand(5),
                                                    "global_step": np.array(7)})
    model = nn.Module()
    model.enc = nn.Module()
    model.enc.fc = nn.Linear(3, 2)
    report = load_tf_weights(model, prefix, strict=False)
    assert report.transforms == {"enc.fc.weight": "transpose(1, 0)", "enc.fc.bias": "identity"}
    assert report.unmatched_checkpoint == {
        "stray": "pattern '/': '(root)' has no submodule or parameter for 'stray'"}
    assert "global_step" in report.skipped
