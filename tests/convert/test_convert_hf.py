"""A Hugging Face ``TFBertModel`` checkpoint into transformers' torch ``BertModel``.

The TF model is built from a tiny config and saved by ``convert_hf_models.py``
(no download). The torch model comes from the same library; the conversion
uses nothing of transformers' own TF-to-torch helpers: only an assignment map
whose patterns are written as ``list_variables`` prints the keys, or without
the ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from convert_helpers import rel_error

from torchckpt.convert import load_tf_weights

pytestmark = pytest.mark.tf

#: TFBertModel checkpoint names -> BertModel's state_dict (scopes end in "/").
TF_BERT_MAP = [
    ("model/bert/embeddings/weight/.ATTRIBUTES/VARIABLE_VALUE",
     "embeddings.word_embeddings.weight"),
    ("model/bert/embeddings/embeddings", "embeddings.position_embeddings.weight"),
    ("model/bert/embeddings/token_type_embeddings", "embeddings.token_type_embeddings.weight"),
    (r"model/bert/encoder/layer/(\d+)/attention/self_attention/",
     r"encoder.layer.\1.attention.self"),
    (r"model/bert/encoder/layer/(\d+)/attention/dense_output/",
     r"encoder.layer.\1.attention.output"),
    (r"model/bert/encoder/layer/(\d+)/bert_output/", r"encoder.layer.\1.output"),
    ("model/bert/", ""),  # embeddings/LayerNorm, intermediate/dense, pooler/dense by name
]


def test_tf_bert_converts_into_torch_bert(hf_models, monkeypatch) -> None:
    monkeypatch.setenv("USE_TF", "0")  # transformers' torch classes, without importing TF here
    tf_loaded_before = "tensorflow" in sys.modules  # other tests of the session may load it
    from transformers import BertConfig, BertModel

    folder = hf_models / "bert"
    config = json.loads((folder / "config.json").read_text())
    model = BertModel(BertConfig(**config, attn_implementation="eager"))
    report = load_tf_weights(model, folder, assignment_map=TF_BERT_MAP)  # strict
    assert report.ok and not report.warnings
    assert set(report.transforms) == set(model.state_dict()) - set(report.ignored_module)
    assert report.transforms["encoder.layer.1.attention.self.query.weight"] == "transpose(1, 0)"
    with np.load(folder / "ref.npz", allow_pickle=False) as z:
        ref = {k: z[k] for k in z.files}
    model.eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(ref[k]).long()
                       for k in ("input_ids", "token_type_ids", "attention_mask")})
    assert rel_error(out.last_hidden_state, ref["last_hidden_state"]) < 1e-5
    assert rel_error(out.pooler_output, ref["pooler_output"]) < 1e-5
    assert tf_loaded_before or "tensorflow" not in sys.modules  # the conversion needs no TF
