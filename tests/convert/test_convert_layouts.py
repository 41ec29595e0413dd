"""Layout conversions checked against TF's own formulas in numpy (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from convert_helpers import rand, write_name_based, write_object_based
from torch import nn

from torchckpt.convert import Layout, default_layouts, load_tf_weights
from torchckpt.convert.transforms import TRANSPOSE


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_tf1_lstm_cell_kernel_is_split_and_reordered(tmp_path) -> None:
    n_in, hidden = 3, 4
    kernel, bias = rand(n_in + hidden, 4 * hidden), rand(4 * hidden, seed=1)
    prefix = write_name_based(tmp_path / "m", {"rnn/lstm_cell/kernel": kernel,
                                               "rnn/lstm_cell/bias": bias})
    lstm = nn.LSTM(n_in, hidden, batch_first=True)
    report = load_tf_weights(lstm, prefix, assignment_map={"rnn/lstm_cell/": ""})
    assert any("forget_bias" in n for n in report.notes)
    x = rand(2, 5, n_in, seed=2)
    h = c = np.zeros((2, hidden), np.float32)
    for t in range(5):  # tf.compat.v1.nn.rnn_cell.LSTMCell with forget_bias=0
        i, j, f, o = np.split(np.concatenate([x[:, t], h], 1) @ kernel + bias, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(j)
        h = sigmoid(o) * np.tanh(c)
    with torch.no_grad():
        out, _ = lstm(torch.from_numpy(x))
    np.testing.assert_allclose(out[:, -1].numpy(), h, rtol=1e-5, atol=1e-6)


def test_keras_gru_with_reset_before_is_refused(tmp_path) -> None:
    prefix = write_object_based(tmp_path / "c", {"gru": {"cell": {
        "kernel": rand(3, 6), "recurrent_kernel": rand(2, 6), "bias": rand(6)}}})
    report = load_tf_weights(nn.GRU(3, 2), prefix, strict=False)
    assert "reset_after=False" in report.mismatched[0].reason
    assert set(report.unmatched_module) == {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                            "bias_hh_l0"}


def test_stacked_bidirectional_lstm_takes_cells_in_order(tmp_path) -> None:
    cells = {f"{layer}_{d}": {"cell": {
        "kernel": rand(3 if layer == "l0" else 4, 8, seed=k), "recurrent_kernel": rand(2, 8),
        "bias": rand(8)}} for k, (layer, d) in enumerate(
            [("l0", "fw"), ("l0", "bw"), ("l1", "fw"), ("l1", "bw")])}
    prefix = write_object_based(tmp_path / "c", {"model": cells})
    lstm = nn.LSTM(3, 2, num_layers=2, bidirectional=True)
    report = load_tf_weights(lstm, prefix)
    assert report.ok
    np.testing.assert_array_equal(lstm.weight_ih_l1_reverse.detach().numpy(),
                                  cells["l1_bw"]["cell"]["kernel"].T)
    np.testing.assert_array_equal(lstm.weight_ih_l0.detach().numpy(),
                                  cells["l0_fw"]["cell"]["kernel"].T)


def test_separable_conv_pairs_with_two_torch_convs(tmp_path) -> None:
    prefix = write_object_based(tmp_path / "c", {"layer_with_weights-0": {
        "depthwise_kernel": rand(3, 3, 4, 2), "pointwise_kernel": rand(1, 1, 8, 5),
        "bias": rand(5)}})
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=4), nn.Conv2d(8, 5, 1))
    report = load_tf_weights(model, prefix)
    assert report.transforms == {
        "0.weight": "permute(2, 3, 0, 1) + reshape to [8, 1, 3, 3]",
        "0.bias": "constant 0 (no bias in checkpoint)",
        "1.weight": "permute(3, 2, 0, 1)", "1.bias": "identity"}
    with pytest.raises(Exception, match="groups == in_channels"):
        load_tf_weights(nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 5, 1)), prefix)


def test_dense_bias_presence_differs(tmp_path) -> None:
    no_bias = write_object_based(tmp_path / "a", {"d": {"kernel": rand(3, 2)}})
    report = load_tf_weights(nn.Linear(3, 2), no_bias)
    assert report.transforms["bias"] == "constant 0 (no bias in checkpoint)"
    with_bias = write_object_based(tmp_path / "b", {"d": {"kernel": rand(3, 2), "bias": rand(2)}})
    report = load_tf_weights(nn.Linear(3, 2, bias=False), with_bias, strict=False)
    assert list(report.unmatched_checkpoint) == ["d/bias/.ATTRIBUTES/VARIABLE_VALUE"]
    assert "has no use for it" in report.unmatched_checkpoint["d/bias/.ATTRIBUTES/VARIABLE_VALUE"]


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(3))
        self.dense = nn.Linear(3, 2)


def test_tf_module_attributes_and_generic_layout(tmp_path) -> None:
    """A tf.Module with a variable and a Dense-like child named w/b (attribute order)."""
    scale, w, b = rand(3), rand(3, 2), rand(2)
    prefix = write_object_based(tmp_path / "m", {"model": {"scale": scale,
                                                           "dense": {"w": w, "b": b}}})
    model = Custom()
    report = load_tf_weights(model, prefix)
    assert report.transforms == {"scale": "identity", "dense.weight": "transpose(1, 0)",
                                 "dense.bias": "identity"}
    np.testing.assert_array_equal(model.dense.weight.detach().numpy(), w.T)


def test_multihead_attention_from_keras_kernels(tmp_path) -> None:
    e, heads = 4, 2
    parts = {f"_{p}_dense": {"kernel": rand(e, heads, e // heads, seed=i),
                             "bias": rand(heads, e // heads, seed=i)}
             for i, p in enumerate(("query", "key", "value"))}
    parts["_output_dense"] = {"kernel": rand(heads, e // heads, e), "bias": rand(e)}
    prefix = write_object_based(tmp_path / "m", {"mha": parts})
    mha = nn.MultiheadAttention(e, heads)
    load_tf_weights(mha, prefix)
    q = parts["_query_dense"]["kernel"].reshape(e, e).T
    np.testing.assert_array_equal(mha.in_proj_weight.detach().numpy()[:e], q)
    np.testing.assert_array_equal(mha.out_proj.weight.detach().numpy(),
                                  parts["_output_dense"]["kernel"].reshape(e, e).T)
    report = load_tf_weights(nn.MultiheadAttention(e, 4), prefix, strict=False)
    assert "is not split into 4 heads" in report.mismatched[0].reason


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(2, 3))


class ScaledLayout(Layout):
    """A custom layout: the TF variable 'gain' is stored transposed."""

    def build(self, b, module) -> None:
        var = b.need("gain", "Scaled")
        if var is not None:
            b.assign("gain", [var], TRANSPOSE)


def test_custom_layout_registration(tmp_path) -> None:
    prefix = write_object_based(tmp_path / "m", {"s": {"gain": rand(3, 2)}})
    registry = default_layouts()
    registry.register(Scaled, ScaledLayout())
    model = Scaled()
    report = load_tf_weights(model, prefix, layouts=registry)
    assert report.transforms == {"gain": "transpose(1, 0)"}
    assert default_layouts().lookup(model) is None  # the default registry is untouched


@pytest.mark.parametrize("shape, n_in, n_out, described", [
    ((32, 4, 8), 32, 32, "reshape [32, 4, 8] to [32, 32] + transpose(1, 0)"),  # q/k/v kernel
    ((4, 6, 32), 24, 32, "reshape [4, 6, 32] to [24, 32] + transpose(1, 0)"),  # output kernel
    ((1, 1, 5, 7), 5, 7, "reshape [1, 1, 5, 7] to [5, 7] + transpose(1, 0)"),  # a 1x1 conv
])
def test_linear_takes_kernels_that_fold_into_in_out(tmp_path, shape, n_in, n_out,
                                                    described) -> None:
    kernel = rand(*shape)
    prefix = write_object_based(tmp_path / "c", {"layer": {"kernel": kernel}})
    linear = nn.Linear(n_in, n_out, bias=False)
    report = load_tf_weights(linear, prefix)
    assert report.transforms["weight"] == described
    np.testing.assert_array_equal(linear.weight.detach().numpy(), kernel.reshape(n_in, n_out).T)
