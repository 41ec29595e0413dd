"""Make a tiny Hugging Face ``TFBertModel`` checkpoint for the conversion tests (a subprocess).

Usage: ``python convert_hf_models.py OUT_DIR``. Writes ``OUT_DIR/bert/``: a
``tf.train.Checkpoint(model=TFBertModel(config))`` with every weight randomized,
``config.json`` (the ``BertConfig``), and ``ref.npz`` (no pickle) holding the
inputs and TF's ``last_hidden_state`` and ``pooler_output``. Nothing is
downloaded: the model is built from its config. transformers 4.x still has
the TF classes (they run on tf-keras); 5.x removed them.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

#: A BERT small enough to build in a second, with everything a real one has.
CONFIG = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=32, max_position_embeddings=20, type_vocab_size=2,
              hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
              attention_probs_dropout_prob=0.1)


def make_bert(out: str) -> None:
    import tensorflow as tf
    from transformers import BertConfig, TFBertModel

    config = BertConfig(**CONFIG)
    model = TFBertModel(config)
    rng = np.random.default_rng(51)
    ids = rng.integers(0, CONFIG["vocab_size"], size=(2, 7)).astype("int32")
    types = rng.integers(0, 2, size=(2, 7)).astype("int32")
    mask = np.ones((2, 7), "int32")
    mask[1, 5:] = 0  # padding in the second sequence
    model(input_ids=ids, token_type_ids=types, attention_mask=mask)  # builds the weights
    for w in model.weights:  # away from the init (zero biases, unit gammas) so each one matters
        value = rng.normal(scale=0.2, size=tuple(w.shape))
        if "gamma" in w.name:
            value += 1.0
        w.assign(value.astype("float32"))
    got = model(input_ids=ids, token_type_ids=types, attention_mask=mask, training=False)
    tf.train.Checkpoint(model=model).save(os.path.join(out, "ckpt"))
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(CONFIG, f)
    np.savez(os.path.join(out, "ref.npz"), input_ids=ids, token_type_ids=types,
             attention_mask=mask, last_hidden_state=got.last_hidden_state.numpy(),
             pooler_output=got.pooler_output.numpy())


def main(argv: list[str]) -> int:
    out = os.path.join(argv[0], "bert")
    os.makedirs(out, exist_ok=True)
    make_bert(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
