"""``torchckpt convert --model MODULE:FACTORY``: a torch state_dict, layouts converted, torch names.

No TensorFlow needed: the ``keras2_adam`` and ``tf1_name_based`` fixtures
(tests/data/tf) carry TF's own forward pass. The TF models of the converter
tests go through the same command in tests/convert/test_convert_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from cli_models import SmallNet, Tied
from safetensors.torch import load_file

from torchckpt.cli import main

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[0] / "data" / "tf"
KERAS2 = FIXTURES / "keras2_adam"
MODELS = HERE / "cli_models.py"


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def reference() -> dict[str, np.ndarray]:
    with np.load(KERAS2 / "ckpt-1.expected.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_model_factory_writes_a_loadable_state_dict(capsys, tmp_path) -> None:
    out_file = tmp_path / "small.safetensors"
    code, out, _ = run(capsys, "convert", KERAS2, "--model", f"{MODELS}:SmallNet",
                       "--to", out_file)
    assert code == 0 and f"to {out_file}" in out
    model = SmallNet()
    model.load_state_dict(load_file(str(out_file)), strict=True)
    ref = reference()
    with torch.no_grad():
        got = model(torch.from_numpy(ref["__input__"])).numpy()
    np.testing.assert_allclose(got, ref["__output__"], rtol=1e-5, atol=1e-6)


def test_tied_weights_are_written_under_every_name(capsys, tmp_path) -> None:
    out_file = tmp_path / "tied.safetensors"
    code, _, _ = run(capsys, "convert", KERAS2, "--model", f"{MODELS}:Tied", "--to", out_file,
                     "--partial")  # alias.weight has no TF layer of its own: unmatched
    assert code == 0
    state = load_file(str(out_file))
    Tied().load_state_dict(state, strict=True)
    assert torch.equal(state["alias.weight"], state["net.proj.weight"])


def test_convert_needs_model_or_raw(capsys, tmp_path) -> None:
    code, _, err = run(capsys, "convert", KERAS2, "--to", tmp_path / "x.safetensors")
    assert code == 2 and "--model MODULE:FACTORY" in err and "--raw" in err
    code, _, err = run(capsys, "convert", KERAS2, "--to", tmp_path / "x.safetensors", "--raw",
                       "--model", f"{MODELS}:SmallNet")
    assert code == 2 and "not both" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_factories_exit_2(capsys, tmp_path) -> None:
    for spec, message in [("nocolon", "expected MODULE:FACTORY"),
                          (f"{MODELS}:Missing", "cannot load it"),
                          ("no_such_module_xyz:f", "cannot load it"),
                          (f"{MODELS}:not_a_module", "returned int, not a torch.nn.Module")]:
        code, _, err = run(capsys, "convert", KERAS2, "--model", spec, "--to",
                           tmp_path / "x.safetensors")
        assert code == 2 and message in err, (spec, err)


def test_strict_failure_exits_2_and_partial_writes(capsys, tmp_path) -> None:
    amap = tmp_path / "map.json"
    amap.write_text(json.dumps({"net/layer_with_weights-0/": "proj"}))
    code, _, err = run(capsys, "convert", KERAS2, "--model", f"{MODELS}:SmallNet", "--to",
                       tmp_path / "x.safetensors", "--assignment-map", amap)
    assert code == 2 and "left names unmatched" in err and "head.weight" in err
    assert "closest unmatched keys: 'net/layer_with_weights-2/" in err
    code, _, err = run(capsys, "convert", KERAS2, "--model", f"{MODELS}:SmallNet", "--to",
                       tmp_path / "x.safetensors", "--assignment-map", amap, "--partial")
    assert code == 0 and "--partial: left unmatched" in err
    state = load_file(str(tmp_path / "x.safetensors"))
    assert sorted(state) == sorted(SmallNet().state_dict())


def test_map_that_matches_nothing_exits_2_with_the_closest_keys(capsys, tmp_path) -> None:
    amap = tmp_path / "map.json"
    amap.write_text(json.dumps({"net/layer_with_weights-0/kernel/VARIABLE_VALUE": "proj.weight"}))
    for mode in (["--model", f"{MODELS}:SmallNet"], ["--raw"]):
        code, _, err = run(capsys, "convert", KERAS2, *mode, "--to", tmp_path / "x.safetensors",
                           "--assignment-map", amap)
        assert code == 2, mode
        assert "matches no checkpoint key" in err
        assert "'net/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE'" in err


def test_map_written_with_printed_keys(capsys, tmp_path) -> None:
    amap = tmp_path / "map.json"
    amap.write_text(json.dumps([
        [r"net/layer_with_weights-0/(kernel|bias)/\.ATTRIBUTES/VARIABLE_VALUE", r"proj.\1"],
        ["net/layer_with_weights-1/", "norm"],
        ["net/layer_with_weights-2/kernel/.ATTRIBUTES/VARIABLE_VALUE", "head.weight"],
        ["net/layer_with_weights-2/bias", "head.bias"],
        ["never/matches/anything", None]]))
    out_file = tmp_path / "x.safetensors"
    code, _, err = run(capsys, "convert", KERAS2, "--model", f"{MODELS}:SmallNet", "--to",
                       out_file, "--assignment-map", amap)
    assert code == 0
    assert "warning: assignment-map pattern 'never/matches/anything' matches no checkpoint key" \
        in err
    model = SmallNet()
    model.load_state_dict(load_file(str(out_file)), strict=True)
    ref = reference()
    with torch.no_grad():
        got = model(torch.from_numpy(ref["__input__"])).numpy()
    np.testing.assert_allclose(got, ref["__output__"], rtol=1e-5, atol=1e-6)


def test_malformed_map_file_exits_2(capsys, tmp_path) -> None:
    amap = tmp_path / "map.json"
    amap.write_text("3")
    code, _, err = run(capsys, "convert", KERAS2, "--raw", "--to", tmp_path / "x.safetensors",
                       "--assignment-map", amap)
    assert code == 2 and "not an object or a list of pairs" in err
