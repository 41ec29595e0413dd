"""Conv2D -> Flatten -> Dense into a torch CNN: Keras flattens H, W, C; torch.flatten C, H, W.

Real models from TensorFlow (``convert_tf_models.py``): tf-keras and Keras 3,
Sequential and Functional (the object graph shows the Flatten: the kernel rows
are reordered by default, or kept for a torch model that flattens channels-last),
and a tf-keras subclassed model (the graph cannot tell: a warning, and
``flatten_order`` per Linear).
"""

from __future__ import annotations

import convert_torch_models as T
import numpy as np
import pytest
import torch
from convert_helpers import rel_error

from torchckpt.convert import load_tf_weights
from torchckpt.errors import ConversionError

pytestmark = pytest.mark.tf

SHOWN = ["flatten_k2_seq", "flatten_k2_fun", "flatten_k3_seq", "flatten_k3_fun"]


def _error(model: torch.nn.Module, folder) -> float:
    with np.load(folder / "ref.npz", allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    model.eval()
    with torch.no_grad():
        return rel_error(model(torch.from_numpy(x)), y)


@pytest.mark.parametrize("case", SHOWN)
def test_flatten_rows_reordered_for_torch_flatten(tf_models, case: str) -> None:
    model = T.FlattenCNN()
    report = load_tf_weights(model, tf_models / case)
    assert report.ok and not report.warnings
    assert report.transforms["fc1.weight"] == ("rows (positions=12, channels=5) -> (channels, "
                                               "positions) + transpose(1, 0)")
    assert report.transforms["fc2.weight"] == "transpose(1, 0)"  # only the Dense after Flatten
    assert any("'fc1' (Linear) reads the flattened output of 'conv2' (Conv2d)" in n and
               "reordered" in n for n in report.notes)
    assert _error(model, tf_models / case) < 1e-5


@pytest.mark.parametrize("case", SHOWN)
def test_channels_last_torch_model_keeps_rows(tf_models, case: str) -> None:
    model = T.FlattenCNN(channels_last=True)
    report = load_tf_weights(model, tf_models / case, flatten_order="channels_last")
    assert report.transforms["fc1.weight"] == "transpose(1, 0)"
    assert any("rows kept" in n for n in report.notes)
    assert _error(model, tf_models / case) < 1e-5
    wrong = T.FlattenCNN(channels_last=True)  # the default order for a channels-last model
    load_tf_weights(wrong, tf_models / case)
    assert _error(wrong, tf_models / case) > 1e-2  # the reorder matters


def test_subclassed_model_warns_and_takes_an_order_per_linear(tf_models) -> None:
    folder = tf_models / "flatten_k2_sub"
    model = T.FlattenCNN()
    with pytest.warns(UserWarning, match="takes 60 = 5 channels x 12 positions of 'conv2'"):
        report = load_tf_weights(model, folder)
    assert report.transforms["fc1.weight"] == "transpose(1, 0)"
    assert "flatten_order={'fc1': 'channels_first'}" in report.warnings[0]
    assert "warnings:" in str(report)
    assert _error(model, folder) > 1e-2  # loaded as stored: outputs differ, hence the warning
    model = T.FlattenCNN()
    report = load_tf_weights(model, folder, flatten_order={"fc1": "channels_first"})
    assert not report.warnings and _error(model, folder) < 1e-5
    model = T.FlattenCNN(channels_last=True)
    report = load_tf_weights(model, folder, flatten_order={"fc1": "channels_last"})
    assert not report.warnings and _error(model, folder) < 1e-5


def test_unknown_flatten_order_is_an_error(tf_models) -> None:
    with pytest.raises(ConversionError, match="flatten_order 'nchw' is not one of"):
        load_tf_weights(T.FlattenCNN(), tf_models / "flatten_k2_seq", flatten_order="nchw")
