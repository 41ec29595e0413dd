"""For the same tensors, our ``.index``/``.data`` equal what TF 2.21 writes.

TensorFlow writes each case into ``tmp_path`` during the test; torchckpt then
writes the same torch tensors in TF's order and the files must be identical.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

from golden_data import OBJECT_GRAPH_KEY
from rewrite import assert_same_files, rewrite_like
from torchckpt.adapters.tensors import tensor_to_buffer, tf_dtype_of
from torchckpt.format import BundleReader, BundleWriter
from torchckpt.format.records import Extent, TensorSlice
from torchckpt.format.slices import encode_slice_key, slice_bounds

pytestmark = pytest.mark.tf


def _every_dtype() -> dict[str, torch.Tensor | np.ndarray]:
    g = torch.Generator().manual_seed(7)
    f32 = torch.tensor([[1.5, -0.0, float("nan")], [float("inf"), -float("inf"), 1e-45]])
    return {
        "f32": f32, "f16": torch.randn(2, 3, generator=g).half(),
        "f64": torch.tensor([torch.pi, -0.0], dtype=torch.float64),
        "bf16": torch.randn(5, generator=g).bfloat16(),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "i16": torch.tensor([-32768, 5], dtype=torch.int16),
        "i32": torch.tensor([1, 2, 3], dtype=torch.int32),
        "i64": torch.tensor([2**62, -1], dtype=torch.int64),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "u16": torch.tensor([65535, 1], dtype=torch.uint16),
        "u32": torch.tensor([2**32 - 1], dtype=torch.uint32),
        "u64": torch.tensor([2**64 - 1], dtype=torch.uint64),
        "flag": torch.tensor([True, False, True]),
        "c64": torch.tensor([1 + 2j, -3.5j], dtype=torch.complex64),
        "c128": torch.tensor([[3 - 4j]], dtype=torch.complex128),
        "scalar": torch.tensor(3.0), "scalar_i": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(2, 0), "empty1": torch.zeros(0, dtype=torch.int32),
        "big": torch.randn(300, 300, generator=g),  # 360,000 bytes: more than one 256 KiB block
        "words": _strings([b"a", b"", b"\xff\x00\xfe", b"x" * 300], [2, 2]),
        "title": _strings([b"scalar string"], []), "no_words": _strings([], [0]),
    }


def _strings(values: list[bytes], shape: list[int]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def _to_tf(tf, value: torch.Tensor | np.ndarray):  # noqa: ANN001, ANN202
    if isinstance(value, np.ndarray):
        return tf.constant(value, dtype=tf.string)
    if value.dtype == torch.bfloat16:
        return tf.bitcast(tf.constant(value.view(torch.int16).numpy()), tf.bfloat16)
    return tf.constant(value.numpy())


def test_object_based_checkpoint_of_every_dtype(tf, tmp_path: os.PathLike) -> None:  # noqa: ANN001
    values = _every_dtype()
    module = tf.Module()
    for name, value in values.items():
        setattr(module, name, tf.Variable(_to_tf(tf, value)))
    tf_prefix = tf.train.Checkpoint(mod=module).write(os.path.join(tmp_path, "tf", "ckpt"))
    graph = tf.train.load_checkpoint(tf_prefix).get_tensor(OBJECT_GRAPH_KEY)
    by_key = {f"mod/{n}/.ATTRIBUTES/VARIABLE_VALUE".encode(): v for n, v in values.items()}
    by_key[OBJECT_GRAPH_KEY.encode()] = graph
    ours = os.path.join(tmp_path, "ours", "ckpt")
    num_shards = rewrite_like(tf_prefix, ours, by_key.__getitem__)
    assert num_shards == 1
    assert_same_files(tf_prefix, ours, num_shards)


def test_raw_save_many_keys_huge_key_and_slices(tf, tmp_path: os.PathLike) -> None:  # noqa: ANN001
    # Enough keys for a >256 KiB index (several data blocks and index entries), one key that
    # forces the overly-large-entry flush, and a sliced tensor; SaveV2 is TF's BundleWriter.
    names = [hashlib.sha1(str(i).encode()).hexdigest() + "/" + "k" * 60 for i in range(2500)]
    tensors = [torch.tensor(float(i)) for i in range(2500)]
    names += ["a", "b" + "x" * 600_000, "c"]
    tensors += [torch.tensor(1.0), torch.tensor([1, 2]), torch.tensor([5], dtype=torch.int8)]
    full = torch.arange(35, dtype=torch.float32).reshape(7, 5)
    tf_prefix = os.path.join(tmp_path, "raw")
    tf.raw_ops.SaveV2(prefix=tf_prefix, tensor_names=names + ["part/w", "part/w"],
                      shape_and_slices=[""] * len(names) + ["7 5 0,4:0,5", "7 5 4,3:-"],
                      tensors=[tf.constant(t.numpy()) for t in tensors]
                      + [tf.constant(full[:4].numpy()), tf.constant(full[4:].numpy())])
    assert os.path.getsize(tf_prefix + ".index") > 2 * 256 * 1024

    ours = os.path.join(tmp_path, "ours")
    w = BundleWriter(ours, sync=False)
    for name, t in zip(names, tensors):
        w.add(name, tensor_to_buffer(t), tf_dtype_of(t.dtype), t.shape)
    w.add_sliced("part/w", tf_dtype_of(full.dtype), full.shape, [
        (TensorSlice((Extent(0, 4), Extent(0, 5))), tensor_to_buffer(full[:4].contiguous())),
        (TensorSlice((Extent(4, 3), Extent())), tensor_to_buffer(full[4:].contiguous())),
    ])
    w.finish()
    assert_same_files(tf_prefix, ours, 1)


def test_merged_multi_shard_with_slices(tf, tmp_path: os.PathLike) -> None:  # noqa: ANN001
    # MaxShardSizePolicy splits the save into 4 shard files and cuts tensors into slices;
    # TF merges the per-shard bundles (a merge sets shard_id on sliced full entries).
    values = {"a": torch.arange(100, dtype=torch.float32), "b": torch.arange(50),
              "c": torch.arange(100, dtype=torch.float64).reshape(10, 10)}
    module = tf.Module()
    for name, v in values.items():
        setattr(module, name, tf.Variable(v.numpy()))
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=500)
    tf_prefix = tf.train.Checkpoint(mod=module).write(
        os.path.join(tmp_path, "tf", "ckpt"),
        options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    by_key = {f"mod/{n}/.ATTRIBUTES/VARIABLE_VALUE".encode(): v for n, v in values.items()}
    by_key[OBJECT_GRAPH_KEY.encode()] = tf.train.load_checkpoint(tf_prefix).get_tensor(
        OBJECT_GRAPH_KEY)
    with BundleReader(tf_prefix) as r:  # the slice layout TF chose, to cut the same parts
        for key, full in list(by_key.items()):
            for s in r.entry(key).slices if key in r else ():
                bounds = slice_bounds(s, tuple(full.shape))
                by_key[encode_slice_key(key, s)] = full[tuple(slice(a, b) for a, b in bounds)]
    ours = os.path.join(tmp_path, "ours", "ckpt")
    num_shards = rewrite_like(tf_prefix, ours, by_key.__getitem__)
    assert num_shards > 1
    assert_same_files(tf_prefix, ours, num_shards)
