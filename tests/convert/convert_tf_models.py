"""Make small TensorFlow models and checkpoints for the conversion tests (run in a subprocess).

Usage: ``python convert_tf_models.py OUT_DIR [CASE ...]`` (all cases by default). For
each case it writes ``OUT_DIR/CASE/`` holding the checkpoint files and
``ref.npz`` (no pickle): the reference input(s) and TensorFlow's output in
inference mode, or, for the ``train_*`` cases, the batches and the weights
after N + M training steps. It runs TensorFlow in its own process so that the
test process never imports TF next to torch.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np  # noqa: E402

N_STEPS, M_STEPS = 3, 3


def _randomize(model, seed: int) -> None:
    """Give every weight a random value; variances and moving variances stay positive."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.normal(scale=0.4, size=tuple(w.shape)).astype(w.dtype.name if hasattr(
            w.dtype, "name") else str(w.dtype))
        if "variance" in w.name:
            v = np.abs(v) + 0.5
        w.assign(v)


def case_cnn(out: str) -> None:
    import tf_keras as K
    L = K.layers
    model = K.Sequential([
        K.Input((9, 9, 3)),
        L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.Conv2D(4, 1, groups=2),
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        L.SeparableConv2D(6, 3, padding="same"),
        L.Conv2DTranspose(5, 3, strides=2),
        L.GlobalAveragePooling2D(), L.Dense(3)])
    _randomize(model, 1)
    x = np.random.default_rng(11).normal(size=(2, 9, 9, 3)).astype("float32")
    model.save_weights(os.path.join(out, "weights"))  # tf-keras save_weights, TF format
    np.savez(os.path.join(out, "ref.npz"), x=x, y=model(x, training=False).numpy())


def case_nested(out: str) -> None:
    """A model inside a model, saved with tf-keras save_weights (the model is the root)."""
    import tf_keras as K
    L = K.layers
    inner = K.Sequential([K.Input((4,)), L.Dense(5, activation="relu"), L.Dense(3)], name="inner")
    model = K.Sequential([K.Input((4,)), inner, L.Dense(2)])
    _randomize(model, 7)
    x = np.random.default_rng(17).normal(size=(3, 4)).astype("float32")
    model.save_weights(os.path.join(out, "weights"))
    np.savez(os.path.join(out, "ref.npz"), x=x, y=model(x, training=False).numpy())


def case_conv_nd(out: str) -> None:
    import tf_keras as K
    L = K.layers
    x1 = K.Input((7, 2))
    x3 = K.Input((4, 5, 6, 2))
    a = L.GlobalAveragePooling1D()(L.Conv1D(3, 3)(x1))
    b = L.Conv3DTranspose(2, 2, strides=2)(L.Conv3D(3, 2)(x3))
    b = L.GlobalAveragePooling3D()(b)
    model = K.Model([x1, x3], L.Concatenate()([a, b]))
    _randomize(model, 2)
    rng = np.random.default_rng(12)
    i1 = rng.normal(size=(2, 7, 2)).astype("float32")
    i3 = rng.normal(size=(2, 4, 5, 6, 2)).astype("float32")
    import tensorflow as tf
    tf.train.Checkpoint(model=model).write(os.path.join(out, "ckpt"))
    np.savez(os.path.join(out, "ref.npz"), x1=i1, x3=i3, y=model([i1, i3], training=False).numpy())


def case_rnn(out: str) -> None:
    import tf_keras as K
    L = K.layers
    model = K.Sequential([
        K.Input((6,), dtype="int32"), L.Embedding(20, 8),
        L.LSTM(7, return_sequences=True), L.GRU(5, return_sequences=True),
        L.Bidirectional(L.LSTM(4)), L.Dense(3)])
    _randomize(model, 3)
    x = np.random.default_rng(13).integers(0, 20, size=(2, 6)).astype("int32")
    import tensorflow as tf
    tf.train.Checkpoint(model=model).save(os.path.join(out, "ckpt"))
    np.savez(os.path.join(out, "ref.npz"), x=x, y=model(x, training=False).numpy())


def case_attention(out: str) -> None:
    import tf_keras as K
    L = K.layers
    inp = K.Input((5, 8))
    att = L.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp)
    h = L.LayerNormalization()(inp + att)
    model = K.Model(inp, L.Dense(3)(h))
    _randomize(model, 4)
    x = np.random.default_rng(14).normal(size=(2, 5, 8)).astype("float32")
    import tensorflow as tf
    tf.train.Checkpoint(model=model).save(os.path.join(out, "ckpt"))
    np.savez(os.path.join(out, "ref.npz"), x=x, y=model(x, training=False).numpy())


def case_keras3(out: str) -> None:
    import keras
    import tensorflow as tf
    L = keras.layers
    keras.utils.set_random_seed(5)
    inp = keras.Input((4,), dtype="int32")
    h = L.LSTM(5)(L.Embedding(10, 6)(inp))
    h = L.BatchNormalization()(L.Dense(8, activation="relu")(h))
    model = keras.Model(inp, L.Dense(3)(L.LayerNormalization()(h)))
    opt = keras.optimizers.Adam(0.01)
    model.compile(opt, "mse")
    rng = np.random.default_rng(15)
    model.fit(rng.integers(0, 10, size=(8, 4)), rng.normal(size=(8, 3)), batch_size=4,
              verbose=0, shuffle=False)
    _randomize(model, 5)
    x = rng.integers(0, 10, size=(2, 4)).astype("int32")
    tf.train.Checkpoint(model=model, optimizer=opt).save(os.path.join(out, "ckpt"))
    np.savez(os.path.join(out, "ref.npz"), x=x, y=np.asarray(model(x, training=False)))


def _attention_case(out: str, K, seed: int, value_dim: int | None) -> None:
    """A model holding one MultiHeadAttention (4 heads, key_dim 8, embed 32), self-attention."""
    import tensorflow as tf
    L = K.layers
    inp = K.Input((5, 32))
    model = K.Model(inp, L.MultiHeadAttention(num_heads=4, key_dim=8, value_dim=value_dim)(
        inp, inp))
    _randomize(model, seed)
    x = np.random.default_rng(seed + 10).normal(size=(2, 5, 32)).astype("float32")
    tf.train.Checkpoint(model=model).save(os.path.join(out, "ckpt"))
    np.savez(os.path.join(out, "ref.npz"), x=x, y=np.asarray(model(x, training=False)))


def case_mha_k2_vdim(out: str) -> None:
    import tf_keras as K
    _attention_case(out, K, 21, value_dim=6)


def case_mha_k3(out: str) -> None:
    import keras as K
    _attention_case(out, K, 22, value_dim=None)


def case_mha_k3_vdim(out: str) -> None:
    import keras as K
    _attention_case(out, K, 23, value_dim=6)


def _cnn_layers(K):
    """Conv2D(same) -> BN -> ReLU -> Conv2D -> Flatten -> Dense(relu) -> Dense on 6x5x3 input:
    the Flatten sees 4 x 3 positions x 5 channels."""
    L = K.layers
    return [L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.Conv2D(5, 3),
            L.Flatten(), L.Dense(7, activation="relu"), L.Dense(3)]


def _flatten_case(out: str, K, seed: int, kind: str) -> None:
    import tensorflow as tf
    layers = _cnn_layers(K)
    if kind == "sequential":
        model = K.Sequential([K.Input((6, 5, 3)), *layers])
    elif kind == "functional":
        inp = h = K.Input((6, 5, 3))
        for layer in layers:
            h = layer(h)
        model = K.Model(inp, h)
    else:  # subclassed: the object graph lists attributes, not the call order
        class Net(K.Model):
            def __init__(self) -> None:
                super().__init__()
                (self.conv1, self.bn, self.relu, self.conv2, self.flat, self.fc1,
                 self.fc2) = layers

            def call(self, x):
                for layer in (self.conv1, self.bn, self.relu, self.conv2, self.flat, self.fc1,
                              self.fc2):
                    x = layer(x)
                return x
        model = Net()
        model(np.zeros((1, 6, 5, 3), "float32"))
    _randomize(model, seed)
    x = np.random.default_rng(seed + 10).normal(size=(2, 6, 5, 3)).astype("float32")
    tf.train.Checkpoint(model=model).save(os.path.join(out, "ckpt"))
    np.savez(os.path.join(out, "ref.npz"), x=x, y=np.asarray(model(x, training=False)))


def case_flatten_k2_seq(out: str) -> None:
    import tf_keras as K
    _flatten_case(out, K, 31, "sequential")


def case_flatten_k2_fun(out: str) -> None:
    import tf_keras as K
    _flatten_case(out, K, 32, "functional")


def case_flatten_k2_sub(out: str) -> None:
    import tf_keras as K
    _flatten_case(out, K, 33, "subclassed")


def case_flatten_k3_seq(out: str) -> None:
    import keras as K
    _flatten_case(out, K, 34, "sequential")


def case_flatten_k3_fun(out: str) -> None:
    import keras as K
    _flatten_case(out, K, 35, "functional")


def case_iterator(out: str) -> None:
    """A TF2 training checkpoint that tracks a tf.data iterator (a DT_VARIANT entry): a Keras 2
    model after one Adam step on a batch taken from that iterator."""
    import tensorflow as tf
    import tf_keras as K
    L = K.layers
    model = K.Sequential([K.Input((4,)), L.Dense(5, activation="tanh"), L.Dense(2)])
    _randomize(model, 41)
    rng = np.random.default_rng(41)
    data = tf.data.Dataset.from_tensor_slices((rng.normal(size=(12, 4)).astype("float32"),
                                               rng.normal(size=(12, 2)).astype("float32")))
    iterator = iter(data.batch(3))
    opt = K.optimizers.Adam(0.01)
    xb, yb = next(iterator)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables))
    tf.train.Checkpoint(model=model, optimizer=opt, train_iterator=iterator).save(
        os.path.join(out, "ckpt"))
    x = rng.normal(size=(2, 4)).astype("float32")
    np.savez(os.path.join(out, "ref.npz"), x=x, y=model(x, training=False).numpy())


def _tf1_dense(tf1, x, scope, n_in, n_out, rng):
    with tf1.variable_scope(scope):
        w = tf1.get_variable("kernel", initializer=rng.normal(scale=0.3, size=(n_in, n_out))
                             .astype("float32"))
        b = tf1.get_variable("bias", initializer=rng.normal(scale=0.1, size=(n_out,))
                             .astype("float32"))
    return tf1.tensordot(x, w, 1) + b


def _tf1_layer_norm(tf1, tf, x, scope, width, rng):
    with tf1.variable_scope(scope):
        g = tf1.get_variable("gamma", initializer=(1 + 0.1 * rng.normal(size=width)).astype("f4"))
        b = tf1.get_variable("beta", initializer=(0.1 * rng.normal(size=width)).astype("f4"))
    mean, var = tf.nn.moments(x, [-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + 1e-12) * g + b


def case_tf1_bert(out: str) -> None:
    """BERT-style names (bert/encoder/layer_0/attention/self/query/kernel, LayerNorm/gamma),
    a TF1 LSTMCell-style [x, h] kernel, AdamOptimizer slots and BERT adam_m/adam_v."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    rng = np.random.default_rng(16)
    vocab, seq, hidden, heads, inter, lstm = 30, 5, 8, 2, 16, 6
    g = tf.Graph()
    with g.as_default():
        ids = tf1.placeholder(tf.int32, [None, seq])
        with tf1.variable_scope("bert"):
            with tf1.variable_scope("embeddings"):
                table = tf1.get_variable("word_embeddings", initializer=rng.normal(
                    size=(vocab, hidden)).astype("f4"))
                pos = tf1.get_variable("position_embeddings", initializer=rng.normal(
                    size=(seq, hidden)).astype("f4"))
                h = tf.gather(table, ids) + pos
                h = _tf1_layer_norm(tf1, tf, h, "LayerNorm", hidden, rng)
            with tf1.variable_scope("encoder/layer_0"):
                q = _tf1_dense(tf1, h, "attention/self/query", hidden, hidden, rng)
                k = _tf1_dense(tf1, h, "attention/self/key", hidden, hidden, rng)
                v = _tf1_dense(tf1, h, "attention/self/value", hidden, hidden, rng)
                def split(t):
                    return tf.transpose(tf.reshape(t, [-1, seq, heads, hidden // heads]),
                                        [0, 2, 1, 3])
                scores = tf.matmul(split(q), split(k), transpose_b=True) / np.sqrt(hidden // heads)
                ctx = tf.matmul(tf.nn.softmax(scores), split(v))
                ctx = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [-1, seq, hidden])
                a = _tf1_dense(tf1, ctx, "attention/output/dense", hidden, hidden, rng)
                h = _tf1_layer_norm(tf1, tf, a + h, "attention/output/LayerNorm", hidden, rng)
                m = tf.nn.gelu(_tf1_dense(tf1, h, "intermediate/dense", hidden, inter, rng),
                               approximate=False)
                o = _tf1_dense(tf1, m, "output/dense", inter, hidden, rng)
                h = _tf1_layer_norm(tf1, tf, o + h, "output/LayerNorm", hidden, rng)
        with tf1.variable_scope("rnn/lstm_cell"):  # tf.compat.v1.nn.rnn_cell.LSTMCell layout
            kern = tf1.get_variable("kernel", initializer=rng.normal(
                scale=0.3, size=(hidden + lstm, 4 * lstm)).astype("f4"))
            bias = tf1.get_variable("bias", initializer=rng.normal(
                scale=0.1, size=(4 * lstm,)).astype("f4"))
        state_c = state_h = tf.zeros([tf.shape(ids)[0], lstm])
        for t in range(seq):
            gates = tf.matmul(tf.concat([h[:, t], state_h], 1), kern) + bias
            i, j, f, og = tf.split(gates, 4, axis=1)
            state_c = tf.sigmoid(f + 1.0) * state_c + tf.sigmoid(i) * tf.tanh(j)  # forget_bias 1.0
            state_h = tf.sigmoid(og) * tf.tanh(state_c)
        logits = _tf1_dense(tf1, state_h, "cls/head", lstm, 3, rng)
        loss = tf.reduce_mean(tf.square(logits))
        step = tf1.train.get_or_create_global_step()
        train = tf1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
        with tf1.variable_scope("bert/pooler/dense"):  # BERT-style optimizer slots, not trained
            tf1.get_variable("kernel", initializer=np.eye(hidden, dtype="f4"))
            tf1.get_variable("kernel/adam_m", initializer=np.full((hidden, hidden), 0.5, "f4"))
            tf1.get_variable("kernel/adam_v", initializer=np.full((hidden, hidden), 0.25, "f4"))
        saver = tf1.train.Saver()
        x = rng.integers(0, vocab, size=(2, seq)).astype("int32")
        with tf1.Session(graph=g) as sess:
            sess.run(tf1.global_variables_initializer())
            for _ in range(2):
                sess.run(train, {ids: x})
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=step,
                       write_meta_graph=False)
            y = sess.run(logits, {ids: x})
    np.savez(os.path.join(out, "ref.npz"), x=x, y=y)


def _train_case(out: str, make_optimizer, legacy_keras3: bool = False) -> None:
    """Dense(tanh) -> LayerNormalization -> Dense, MSE, N steps, checkpoint, M more steps."""
    import tensorflow as tf
    import tf_keras as K
    K.utils.set_random_seed(6)
    L = K.layers
    model = K.Sequential([K.Input((6,)), L.Dense(8, activation="tanh"), L.LayerNormalization(),
                          L.Dense(3)])
    opt = make_optimizer(K)
    rng = np.random.default_rng(17)
    xs = rng.normal(size=(N_STEPS + M_STEPS, 5, 6)).astype("float32")
    ys = rng.normal(size=(N_STEPS + M_STEPS, 5, 3)).astype("float32")

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables, strict=True))

    for i in range(N_STEPS + M_STEPS):
        if i == N_STEPS:
            tf.train.Checkpoint(model=model, optimizer=opt).save(os.path.join(out, "ckpt"))
        step(xs[i], ys[i])
    final = {f"w{i}": w.numpy() for i, w in enumerate(model.weights)}
    np.savez(os.path.join(out, "ref.npz"), xs=xs, ys=ys, **final)


def case_train_adam(out: str) -> None:
    _train_case(out, lambda K: K.optimizers.Adam(0.01))


def case_train_adam_legacy(out: str) -> None:
    _train_case(out, lambda K: K.optimizers.legacy.Adam(0.01))


def case_train_sgd(out: str) -> None:
    _train_case(out, lambda K: K.optimizers.SGD(0.05, momentum=0.9))


def case_train_sgd_legacy(out: str) -> None:
    _train_case(out, lambda K: K.optimizers.legacy.SGD(0.05, momentum=0.9))


def case_train_rmsprop(out: str) -> None:
    _train_case(out, lambda K: K.optimizers.RMSprop(0.01, momentum=0.5, epsilon=1e-12))


def case_train_rmsprop_legacy(out: str) -> None:
    # epsilon sits inside the square root in TF and outside in torch: make it negligible
    _train_case(out, lambda K: K.optimizers.legacy.RMSprop(0.01, momentum=0.5, epsilon=1e-12))


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def main(argv: list[str]) -> int:
    out_dir, names = argv[0], argv[1:] or sorted(CASES)
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    for name in names:
        path = os.path.join(out_dir, name)
        os.makedirs(path, exist_ok=True)
        if name == "tf1_bert":  # graph mode must not leak into the eager cases
            continue
        CASES[name](path)
    if "tf1_bert" in names:
        CASES["tf1_bert"](os.path.join(out_dir, "tf1_bert"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
