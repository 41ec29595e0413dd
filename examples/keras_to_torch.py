"""Convert a Keras (tf-keras) model's checkpoint into an equivalent torch model.

Builds a small Keras CNN classifier (Conv2D, BatchNormalization, DepthwiseConv2D,
SeparableConv2D, Dense), trains it for a few steps with Adam, and saves it with
``tf.train.Checkpoint(model=..., optimizer=...)`` into a temporary folder. Then
it writes the same architecture in torch, loads the checkpoint with
``torchckpt.convert.load_tf_weights`` (Keras layers are matched to torch modules
in order; kernels are transposed/permuted by the type of each torch module; the
Adam slots become the torch optimizer's state) and checks that both models give
the same outputs.

Run: ``python examples/keras_to_torch.py`` (about 15 seconds, TensorFlow included).
Needs ``tensorflow-cpu`` and ``tf-keras``.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from torchckpt.convert import load_tf_weights  # noqa: E402


def train_keras(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and save the Keras model; returns a test batch and Keras' outputs for it."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.DepthwiseConv2D(3, padding="same", activation="relu"),
        L.SeparableConv2D(16, 3, strides=2, padding="same", activation="relu"),
        L.GlobalAveragePooling2D(), L.Dense(10)])
    optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    model.fit(images, rng.integers(0, 10, 64), batch_size=16, epochs=1, verbose=0)
    tf.train.Checkpoint(model=model, optimizer=optimizer).save(os.path.join(folder, "ckpt"))
    test = rng.normal(size=(4, 16, 16, 3)).astype("float32")
    return test, model(test, training=False).numpy()


class TorchCNN(nn.Module):
    """The same network, written for torch (NCHW). Registration order = Keras layer order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, eps=1e-3)  # Keras' default epsilon; torch's is 1e-5
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        # SeparableConv2D = depthwise (no bias) + pointwise; "same" with stride 2 on an even
        # input pads only after, so pad right/bottom explicitly.
        self.separable_dw = nn.Conv2d(8, 8, 3, stride=2, groups=8, bias=False)
        self.separable_pw = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x.permute(0, 3, 1, 2))))  # NHWC -> NCHW
        h = torch.relu(self.depthwise(h))
        h = nn.functional.pad(h, (0, 1, 0, 1))
        h = torch.relu(self.separable_pw(self.separable_dw(h)))
        return self.head(h.mean(dim=(2, 3)))


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        test, expected = train_keras(folder)
        model = TorchCNN()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        report = load_tf_weights(model, folder, optimizer=optimizer)  # directory: latest
    print(f"converted {len(report.matched)} values and {len(report.optimizer_matched)} "
          f"optimizer state entries ({report.mode} mode); transforms:")
    for target, transform in report.transforms.items():
        if not target.startswith("optimizer"):
            print(f"  {target:28s} {transform}")
    model.eval()
    with torch.no_grad():
        got = model(torch.from_numpy(test)).numpy()
    error = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    assert error < 1e-5, f"outputs differ: relative error {error:.2e}"
    step = int(optimizer.state_dict()["state"][0]["step"])
    assert step == 4, step  # 64 images / batch 16
    print(f"checked: torch outputs equal Keras outputs (max relative error {error:.1e})")
    print(f"checked: Adam state resumes at step {step} with Keras' moments (exp_avg, exp_avg_sq)")


if __name__ == "__main__":
    main()
