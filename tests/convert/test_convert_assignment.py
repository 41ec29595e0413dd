"""Assignment maps: patterns, groups, scopes, ``layer_N`` -> ``layer.N``, first match wins."""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import rand, write_name_based, write_object_based
from torch import nn

from torchckpt.convert import load_tf_weights, parse_assignment_map, rename
from torchckpt.errors import AssignmentMapError, ConversionError


def test_rename_follows_init_from_checkpoint_rules() -> None:
    rules = parse_assignment_map([
        ("bert/encoder/layer_(\\d+)/attention/self/(query|key|value)/kernel",
         r"encoder.layer.\1.\2.weight"),
        ("bert/pooler/", "pooler/"),
        ("cls/", None),
        ("/", "rest."),
    ])
    assert rename(rules, "bert/encoder/layer_3/attention/self/key/kernel") == \
        "encoder.layer.3.key.weight"
    assert rename(rules, "bert/pooler/dense/bias") == "pooler.dense.bias"
    assert rename(rules, "cls/predictions/bias") is None
    assert rename(rules, "global_step") == "rest.global_step"
    assert rename(rules, "net/w/.ATTRIBUTES/VARIABLE_VALUE") == "rest.net.w"
    assert rename(parse_assignment_map({"a/": "b"}), "a") is None  # a scope needs a name below it


def test_patterns_must_match_whole_names() -> None:
    rules = parse_assignment_map({"enc/w": "x"})
    assert rename(rules, "enc/w") == "x"
    assert rename(rules, "enc/w2") is None and rename(rules, "x/enc/w") is None


def test_invalid_pattern_names_the_pattern() -> None:
    with pytest.raises(AssignmentMapError, match=r"'layer_\(' is not a valid regular expression"):
        parse_assignment_map({"layer_(": "x"})


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList(nn.ModuleDict({"dense": nn.Linear(3, 3)}) for _ in range(2))
        self.norm = nn.LayerNorm(3)


def test_scope_walks_modules_and_indexes_module_lists(tmp_path) -> None:
    values = {f"bert/encoder/layer_{i}/dense/{v}": rand(*shape, seed=i)
              for i in range(2) for v, shape in (("kernel", (3, 3)), ("bias", (3,)))}
    values |= {"bert/encoder/LayerNorm/gamma": rand(3), "bert/encoder/LayerNorm/beta": rand(3)}
    prefix = write_name_based(tmp_path / "m", values)
    model = Encoder()
    report = load_tf_weights(model, prefix, assignment_map=[
        ("bert/encoder/LayerNorm/", "norm"),  # first match wins over the broader scope below
        ("bert/encoder/", "")])
    assert report.ok
    np.testing.assert_array_equal(model.layer[1].dense.weight.detach().numpy(),
                                  values["bert/encoder/layer_1/dense/kernel"].T)
    assert report.transforms["norm.weight"] == "identity"


def test_parameter_targets_on_object_based_checkpoints(tmp_path) -> None:
    kernel = rand(3, 2)
    prefix = write_object_based(tmp_path / "m",
                                {"net": {"fc": {"kernel": kernel, "bias": rand(2)}}})
    model = nn.Sequential(nn.Linear(3, 2))
    report = load_tf_weights(model, prefix, assignment_map={
        r"net/fc/(kernel|bias)": r"0.\1"})  # names without /.ATTRIBUTES/VARIABLE_VALUE
    assert report.ok and report.mode == "assignment_map"
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), kernel.T)


def test_two_keys_for_one_role_are_reported(tmp_path) -> None:
    prefix = write_name_based(tmp_path / "m", {"a/kernel": rand(3, 2), "b/kernel": rand(3, 2)})
    report = load_tf_weights(nn.Linear(3, 2), prefix, strict=False,
                             assignment_map={"(a|b)/kernel": "weight"})
    assert report.unmatched_checkpoint == {
        "b/kernel": "pattern '(a|b)/kernel': 'a/kernel' already gives role 'kernel' of "
                    "'(root)' (Linear)"}


def test_patterns_match_printed_keys_and_short_names_alike(tmp_path) -> None:
    kernel, bias = rand(3, 2), rand(2)
    prefix = write_object_based(tmp_path / "m", {"net": {"fc": {"kernel": kernel, "bias": bias}}})
    for amap in ({"net/fc/kernel/.ATTRIBUTES/VARIABLE_VALUE": "0.weight",  # as list_variables
                  "net/fc/bias": "0.bias"},  # short name
                 {r"net/fc/(kernel|bias)/\.ATTRIBUTES/VARIABLE_VALUE": r"0.\1"},
                 {"net/fc/": "0"}):  # a scope matches the short name's prefix
        model = nn.Sequential(nn.Linear(3, 2))
        report = load_tf_weights(model, prefix, assignment_map=amap)
        assert report.ok and not report.warnings, amap
        np.testing.assert_array_equal(model[0].weight.detach().numpy(), kernel.T)
    rules = parse_assignment_map({"net/fc/kernel/.ATTRIBUTES/VARIABLE_VALUE": "w"})
    assert rename(rules, "net/fc/kernel/.ATTRIBUTES/VARIABLE_VALUE") == "w"


def test_map_matching_nothing_names_the_closest_keys(tmp_path) -> None:
    prefix = write_object_based(tmp_path / "m", {"net": {"fc": {"kernel": rand(3, 2)}}})
    with pytest.raises(AssignmentMapError) as info:
        load_tf_weights(nn.Linear(3, 2), prefix, strict=False,
                        assignment_map={"net/fc/kernel/VARIABLE_VALUE": "weight"})
    assert "matches no checkpoint key" in str(info.value)
    assert "closest keys 'net/fc/kernel/.ATTRIBUTES/VARIABLE_VALUE'" in str(info.value)


def test_dead_pattern_is_a_warning_and_unassigned_names_get_suggestions(tmp_path) -> None:
    prefix = write_name_based(tmp_path / "m", {"enc/fc/kernel": rand(3, 2),
                                               "enc/fc/bias": rand(2), "head/kernel": rand(2, 2)})
    model = nn.ModuleDict({"fc": nn.Linear(3, 2), "head": nn.Linear(2, 2)})
    with pytest.warns(UserWarning, match="pattern 'enc/nothing' matches no checkpoint key"):
        report = load_tf_weights(model, prefix, strict=False,
                                 assignment_map=[("enc/fc/", "fc"), ("enc/nothing", "x")])
    assert report.unmatched_module["head.weight"].endswith(
        "(closest unmatched keys: 'head/kernel')")
    with pytest.raises(ConversionError, match=r"head.weight: .*closest unmatched keys: "
                                              r"'head/kernel'"):
        load_tf_weights(model, prefix, assignment_map=[("enc/fc/", "fc")])
