"""On models TensorFlow makes for this run: equal outputs after conversion.

The models (``convert_tf_models.py``) and their torch twins (``convert_torch_models.py``):
a CNN with BatchNorm, grouped, depthwise, separable and transposed convolutions
(tf-keras ``save_weights``); a model nested in a model; Conv1D/Conv3D/Conv3DTranspose;
Embedding + LSTM + GRU + bidirectional LSTM; MultiHeadAttention + LayerNormalization; a Keras 3
model trained with Adam (weights reached through the optimizer first); a TF1
graph with BERT-style names and a TF1 LSTMCell kernel, with an assignment map.
"""

from __future__ import annotations

import convert_torch_models as T
import numpy as np
import pytest
import torch
from convert_helpers import rel_error

from torchckpt.convert import load_tf_weights

pytestmark = pytest.mark.tf

CASES = {
    # case: (torch model, checkpoint below the case folder, inputs, load_tf_weights kwargs)
    "cnn": (T.CNN, "weights", ["x"], {}),
    "conv_nd": (T.ConvND, "ckpt", ["x1", "x3"], {}),
    "nested": (T.Nested, "weights", ["x"], {}),
    "rnn": (T.RNN, "", ["x"], {}),
    "attention": (T.Attention, "", ["x"], {}),
    "keras3": (T.Keras3Model, "", ["x"], {}),
    "tf1_bert": (T.MiniBert, "", ["x"], {"assignment_map": T.BERT_MAP}),
}

TRANSFORMS = {  # a few transforms each case must report
    "cnn": {"conv.weight": "permute(3, 2, 0, 1)",
            "depthwise.weight": "permute(2, 3, 0, 1) + reshape to [8, 1, 3, 3]",
            "separable.0.weight": "permute(2, 3, 0, 1) + reshape to [8, 1, 3, 3]",
            "separable.1.weight": "permute(3, 2, 0, 1)", "up.weight": "permute(3, 2, 0, 1)",
            "bn.running_var": "identity"},
    "conv_nd": {"conv1.weight": "permute(2, 1, 0)", "up3.weight": "permute(4, 3, 0, 1, 2)"},
    "nested": {"0.2.weight": "transpose(1, 0)", "1.weight": "transpose(1, 0)"},
    "rnn": {"gru.weight_ih_l0": "transpose(1, 0), gates (z, r, h) -> (r, z, n)",
            "gru.bias_hh_l0": "row 1 of the [2, 3H] bias, gates (z, r, h) -> (r, z, n)",
            "lstm.bias_hh_l0": "constant 0 (TF has one bias; torch adds bias_ih and bias_hh)",
            "bilstm.weight_hh_l0_reverse": "transpose(1, 0)"},
    "attention": {"attn.in_proj_weight": "q, k, v: reshape to [E, heads*head_dim], "
                                         "transpose(1, 0), concatenate"},
    "keras3": {"fc.weight": "transpose(1, 0)", "embed.weight": "identity"},
    "tf1_bert": {"lstm.weight_hh_l0": "rows [8:] of the [x, h] kernel, transpose(1, 0), "
                                      "gates (i, j, f, o) -> (i, f, g, o)"},
}


def _inputs(ref: dict[str, np.ndarray], names: list[str]) -> list[torch.Tensor]:
    return [torch.from_numpy(ref[n]).long() if ref[n].dtype.kind == "i" else
            torch.from_numpy(ref[n]) for n in names]


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_model_reproduces_tf_output(tf_models, case: str) -> None:
    make, prefix, inputs, kwargs = CASES[case]
    folder = tf_models / case
    with np.load(folder / "ref.npz", allow_pickle=False) as z:
        ref = {k: z[k] for k in z.files}
    model = make()
    report = load_tf_weights(model, folder / prefix if prefix else folder, **kwargs)  # strict
    assert report.ok, report.problems()
    assert set(report.transforms) | set(report.ignored_module) == set(model.state_dict())
    for target, transform in TRANSFORMS[case].items():
        assert report.transforms[target] == transform
    if case == "tf1_bert":  # TF1 LSTMCell adds forget_bias=1.0 at run time; the report says so
        assert any("forget_bias" in n for n in report.notes)
        with torch.no_grad():
            model.lstm.bias_ih_l0[6:12] += 1.0
    model.eval()
    with torch.no_grad():
        got = model(*_inputs(ref, inputs))
    assert rel_error(got, ref["y"]) < 1e-5


def test_keras3_weights_found_through_the_graph(tf_models) -> None:
    """Keras 3 keys follow the optimizer's path first; the walk still finds model order."""
    report = load_tf_weights(T.Keras3Model(), tf_models / "keras3")
    keys = [m.sources[0] for m in report.matched if m.sources]
    assert any(k.startswith("optimizer/_trainable_variables/") for k in keys)
    assert report.matched[0].target == "embed.weight"
