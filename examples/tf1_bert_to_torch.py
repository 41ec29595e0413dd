"""Load a TF1 BERT-style checkpoint into a torch BERT with an assignment map.

Google's original BERT checkpoints are TF1 name-based checkpoints
(``tf.compat.v1.train.Saver``) with names such as
``bert/encoder/layer_0/attention/self/query/kernel``. This example builds a tiny
BERT with exactly those names in a ``tf.compat.v1`` graph (plus a pretraining
head under ``cls/``), saves it into a temporary folder, and computes TF's
outputs. It then loads the checkpoint into a torch BERT whose module names are
different, using an assignment map: regular expressions with groups
(``layer_(\\d+)`` -> ``blocks.\\1``), scopes ending in ``/`` that map a whole TF
layer onto a torch module (Dense kernels are transposed because the target is
``nn.Linear``), and ``None`` to skip the pretraining head. Both the sequence
output and the pooled output must match TF's.

Run: ``python examples/tf1_bert_to_torch.py`` (about 15 seconds, TensorFlow included).
Needs ``tensorflow-cpu``.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from torchckpt.convert import load_tf_weights  # noqa: E402

VOCAB, SEQ, HIDDEN, HEADS, INTER, LAYERS = 100, 12, 32, 4, 64, 2

ASSIGNMENT_MAP = [
    ("bert/embeddings/word_embeddings", "tok_emb.weight"),
    ("bert/embeddings/position_embeddings", "pos_emb.weight"),
    ("bert/embeddings/token_type_embeddings", "type_emb.weight"),
    ("bert/embeddings/LayerNorm/", "emb_ln"),
    (r"bert/encoder/layer_(\d+)/attention/self/(query|key|value)/", r"blocks.\1.\2"),
    (r"bert/encoder/layer_(\d+)/attention/output/dense/", r"blocks.\1.attn_out"),
    (r"bert/encoder/layer_(\d+)/attention/output/LayerNorm/", r"blocks.\1.ln1"),
    (r"bert/encoder/layer_(\d+)/intermediate/dense/", r"blocks.\1.ffn_in"),
    (r"bert/encoder/layer_(\d+)/output/dense/", r"blocks.\1.ffn_out"),
    (r"bert/encoder/layer_(\d+)/output/LayerNorm/", r"blocks.\1.ln2"),
    ("bert/pooler/dense/", "pooler"),
    ("cls/", None),  # the masked-LM pretraining head is not part of the encoder
]


def make_tf1_bert(folder: str, ids: np.ndarray, types: np.ndarray) -> dict[str, np.ndarray]:
    """Build, initialize and save a TF1 BERT; returns its outputs for ``ids``."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    init = tf1.truncated_normal_initializer(stddev=0.2)

    def dense(x, name, width):
        with tf1.variable_scope(name):
            w = tf1.get_variable("kernel", [x.shape[-1], width], initializer=init)
            b = tf1.get_variable("bias", [width], initializer=init)
        return tf.tensordot(x, w, 1) + b

    def layer_norm(x, name):
        with tf1.variable_scope(name):
            g = tf1.get_variable("gamma", [HIDDEN], initializer=tf1.random_uniform_initializer(
                0.5, 1.5))
            b = tf1.get_variable("beta", [HIDDEN], initializer=init)
        mean, var = tf.nn.moments(x, [-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + 1e-12) * g + b

    def heads(x):
        return tf.transpose(tf.reshape(x, [-1, SEQ, HEADS, HIDDEN // HEADS]), [0, 2, 1, 3])

    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        ids_in = tf1.placeholder(tf.int32, [None, SEQ])
        types_in = tf1.placeholder(tf.int32, [None, SEQ])
        with tf1.variable_scope("bert"):
            with tf1.variable_scope("embeddings"):
                table = tf1.get_variable("word_embeddings", [VOCAB, HIDDEN], initializer=init)
                h = tf.gather(table, ids_in)
                h += tf1.get_variable("position_embeddings", [SEQ, HIDDEN], initializer=init)
                h += tf.gather(tf1.get_variable("token_type_embeddings", [2, HIDDEN],
                                                initializer=init), types_in)
                h = layer_norm(h, "LayerNorm")
            for i in range(LAYERS):
                with tf1.variable_scope(f"encoder/layer_{i}"):
                    q, k, v = (heads(dense(h, f"attention/self/{n}", HIDDEN))
                               for n in ("query", "key", "value"))
                    probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True)
                                          / np.sqrt(HIDDEN // HEADS))
                    ctx = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]),
                                     [-1, SEQ, HIDDEN])
                    h = layer_norm(dense(ctx, "attention/output/dense", HIDDEN) + h,
                                   "attention/output/LayerNorm")
                    inner = tf.nn.gelu(dense(h, "intermediate/dense", INTER), approximate=False)
                    h = layer_norm(dense(inner, "output/dense", HIDDEN) + h, "output/LayerNorm")
            with tf1.variable_scope("pooler"):
                pooled = tf.tanh(dense(h[:, 0], "dense", HIDDEN))
        with tf1.variable_scope("cls/predictions"):
            dense(h, "transform/dense", HIDDEN)  # pretraining head: saved, not converted
        saver = tf1.train.Saver()
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            saver.save(sess, os.path.join(folder, "bert_model.ckpt"), write_meta_graph=False)
            seq, pool = sess.run([h, pooled], {ids_in: ids, types_in: types})
    return {"sequence": seq, "pooled": pool}


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
        self.attn_out = nn.Linear(HIDDEN, HIDDEN)
        self.ln1 = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.ffn_in = nn.Linear(HIDDEN, INTER)
        self.ffn_out = nn.Linear(INTER, HIDDEN)
        self.ln2 = nn.LayerNorm(HIDDEN, eps=1e-12)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], SEQ, HEADS, -1).transpose(1, 2)
        ctx = nn.functional.scaled_dot_product_attention(
            split(self.query(h)), split(self.key(h)), split(self.value(h)))
        h = self.ln1(self.attn_out(ctx.transpose(1, 2).reshape(h.shape)) + h)
        return self.ln2(self.ffn_out(nn.functional.gelu(self.ffn_in(h))) + h)


class TorchBert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, HIDDEN)
        self.pos_emb = nn.Embedding(SEQ, HIDDEN)
        self.type_emb = nn.Embedding(2, HIDDEN)
        self.emb_ln = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.pooler = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, ids: torch.Tensor, types: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.emb_ln(self.tok_emb(ids) + self.pos_emb.weight + self.type_emb(types))
        for block in self.blocks:
            h = block(h)
        return h, torch.tanh(self.pooler(h[:, 0]))


def main() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, size=(3, SEQ)).astype("int32")
    types = (np.arange(SEQ) >= SEQ // 2).astype("int32")[None].repeat(3, 0)
    with tempfile.TemporaryDirectory() as folder:
        expected = make_tf1_bert(folder, ids, types)
        model = TorchBert()
        report = load_tf_weights(model, folder, assignment_map=ASSIGNMENT_MAP)  # strict
    print(f"converted {len(report.matched)} values with the assignment map; skipped "
          f"{len(report.skipped)} checkpoint keys:")
    for key, why in report.skipped.items():
        print(f"  {key}: {why}")
    model.eval()
    with torch.no_grad():
        seq, pooled = model(torch.from_numpy(ids).long(), torch.from_numpy(types).long())
    for name, got in (("sequence", seq), ("pooled", pooled)):
        want = expected[name]
        error = float(np.max(np.abs(got.numpy() - want)) / np.max(np.abs(want)))
        assert error < 1e-5, f"{name} output differs: relative error {error:.2e}"
        print(f"checked: torch {name} output equals TF's (max relative error {error:.1e})")


if __name__ == "__main__":
    main()
