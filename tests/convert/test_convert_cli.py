"""``torchckpt convert --model`` on models TensorFlow makes: a state_dict torch loads strictly,
with outputs equal to Keras (flatten orders, attention as Linears, an iterator checkpoint)."""

from __future__ import annotations

from pathlib import Path

import convert_torch_models as T
import numpy as np
import pytest
import torch
from convert_helpers import rel_error
from safetensors.torch import load_file

from torchckpt.cli import main

pytestmark = pytest.mark.tf

MODELS = Path(T.__file__).resolve()


@pytest.mark.parametrize("case, factory, make, extra", [
    ("flatten_k3_seq", "FlattenCNN", T.FlattenCNN, []),
    ("flatten_k2_fun", "flatten_cnn_channels_last", lambda: T.FlattenCNN(channels_last=True),
     ["--flatten-order", "channels_last"]),
    ("flatten_k2_sub", "FlattenCNN", T.FlattenCNN, ["--flatten-order", "fc1=channels_first"]),
    ("mha_k3", "AttentionLinears", T.AttentionLinears, []),
    ("iterator", "IteratorNet", T.IteratorNet, []),
])
def test_convert_model_matches_keras(tf_models, capsys, tmp_path, case: str, factory: str, make,
                                     extra: list[str]) -> None:
    out_file = tmp_path / "model.safetensors"
    code = main(["convert", str(tf_models / case), "--model", f"{MODELS}:{factory}",
                 "--to", str(out_file), "--report", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "warning" not in err
    model = make()
    model.load_state_dict(load_file(str(out_file)), strict=True)
    model.eval()
    with np.load(tf_models / case / "ref.npz", allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    with torch.no_grad():
        assert rel_error(model(torch.from_numpy(x)), y) < 1e-5
    if case.startswith("flatten") and "channels_last" not in extra:
        assert "kernel rows reordered" in out  # --report prints the notes


def test_subclassed_flatten_warns_on_stderr(tf_models, capsys, tmp_path) -> None:
    code = main(["convert", str(tf_models / "flatten_k2_sub"), "--model", f"{MODELS}:FlattenCNN",
                 "--to", str(tmp_path / "m.safetensors")])
    err = capsys.readouterr().err
    assert code == 0 and "warning: 'fc1' (Linear) takes 60 = 5 channels x 12 positions" in err


def test_raw_dump_keeps_tf_keys_and_layouts(tf_models, capsys, tmp_path) -> None:
    out_file = tmp_path / "raw.safetensors"
    assert main(["convert", str(tf_models / "iterator"), "--raw", "--to", str(out_file)]) == 0
    raw = load_file(str(out_file))
    assert raw["model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"].shape == (4, 5)
    assert "train_iterator/.ATTRIBUTES/ITERATOR_STATE" not in raw
    assert "train_iterator/.ATTRIBUTES/ITERATOR_STATE" in capsys.readouterr().err  # left out
