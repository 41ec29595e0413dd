"""Keras MultiHeadAttention into torch: as four Linears (q, k, v, out) and as nn.MultiheadAttention.

Real models from TensorFlow (``convert_tf_models.py``): tf-keras and Keras 3, with
``value_dim`` equal to ``key_dim`` (both torch forms fit) and different from it
(only Linears fit). The EinsumDense kernels ``[d, heads, head_dim]`` and
``[heads, head_dim, d]`` fold into the Linears' ``(in, out)``.
"""

from __future__ import annotations

import convert_torch_models as T
import numpy as np
import pytest
import torch
from convert_helpers import rand, rel_error, write_object_based
from torch import nn

from torchckpt.convert import load_tf_weights
from torchckpt.errors import ConversionError


def _output(model: nn.Module, folder) -> tuple[torch.Tensor, np.ndarray]:
    with np.load(folder / "ref.npz", allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)), y


@pytest.mark.tf
@pytest.mark.parametrize("case, make", [
    ("attention", T.AttentionLinearsBlock),  # tf-keras, value_dim == key_dim
    ("mha_k2_vdim", lambda: T.AttentionLinears(value_dim=6)),  # tf-keras, value_dim 6 != 8
    ("mha_k3", T.AttentionLinears),  # Keras 3
    ("mha_k3_vdim", lambda: T.AttentionLinears(value_dim=6)),
])
def test_attention_into_four_linears(tf_models, case: str, make) -> None:
    model = make()
    report = load_tf_weights(model, tf_models / case)  # strict
    assert report.ok and not report.warnings
    prefix = "attn." if case == "attention" else ""
    value = 6 if "vdim" in case else (4 if case == "attention" else 8)
    heads, embed = (2, 8) if case == "attention" else (4, 32)
    assert report.transforms[f"{prefix}q.weight"] == (
        f"reshape [{embed}, {heads}, {heads and embed // heads}] to [{embed}, {embed}] + "
        "transpose(1, 0)")
    assert report.transforms[f"{prefix}v.bias"] == f"reshape [{heads}, {value}] to " \
                                                   f"[{heads * value}]"
    assert report.transforms[f"{prefix}out.weight"] == (
        f"reshape [{heads}, {value}, {embed}] to [{heads * value}, {embed}] + transpose(1, 0)")
    got, want = _output(model, tf_models / case)
    assert rel_error(got, want) < 1e-5


@pytest.mark.tf
@pytest.mark.parametrize("case, make", [("attention", T.Attention), ("mha_k3", T.SelfAttention)])
def test_attention_into_nn_multihead_attention(tf_models, case: str, make) -> None:
    model = make()
    report = load_tf_weights(model, tf_models / case)
    assert report.ok
    got, want = _output(model, tf_models / case)
    assert rel_error(got, want) < 1e-5


@pytest.mark.tf
def test_value_dim_differing_from_key_dim_cannot_pack_into_nn_multihead_attention(
        tf_models) -> None:
    with pytest.raises(ConversionError, match="value kernel .* as four nn.Linear"):
        load_tf_weights(T.SelfAttention(), tf_models / "mha_k3_vdim")


def test_einsum_kernel_that_does_not_fold_names_the_linear_it_would_need(tmp_path) -> None:
    prefix = write_object_based(tmp_path / "c", {"mha": {"_query_dense": {
        "kernel": rand(32, 4, 8), "bias": rand(4, 8)}}})
    report = load_tf_weights(nn.Linear(16, 32), prefix, strict=False)
    (mismatch,) = report.mismatched
    assert mismatch.reason == (
        "'weight' [32, 16] cannot come from 'mha/_query_dense/kernel/.ATTRIBUTES/VARIABLE_VALUE' "
        "[32, 4, 8]: the torch side would need Linear(32, 32) (weight [32, 32]) or "
        "Linear(128, 8) (weight [8, 128])")


def test_output_kernel_and_bias_fold_row_major(tmp_path) -> None:
    kernel, bias = rand(4, 6, 32), rand(32)
    prefix = write_object_based(tmp_path / "c", {"out": {"kernel": kernel, "bias": bias}})
    linear = nn.Linear(24, 32)
    load_tf_weights(linear, prefix)
    ctx = rand(3, 4, 6, seed=2)  # [batch, heads, value_dim]
    with torch.no_grad():
        got = linear(torch.from_numpy(ctx.reshape(3, 24)))
    want = np.einsum("bhv,hvd->bd", ctx, kernel) + bias  # Keras' EinsumDense "abcd,cde->abe"
    assert rel_error(got, want) < 1e-5
