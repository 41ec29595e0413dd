"""TensorFlow and torchckpt share one process in either import order.

torchckpt builds its protobuf classes in a private descriptor pool, so neither
library's registrations clash with the other's. Each order runs in a fresh
interpreter (the two run concurrently), and both libraries read the same
checkpoint there.
"""

from __future__ import annotations

import os
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from golden_data import BY_ID
from processes import run_isolated

pytestmark = pytest.mark.tf

SCRIPT = textwrap.dedent("""
    import sys
    order = sys.argv[2].split(",")
    for name in order:
        __import__(name)
    import numpy as np
    import tensorflow as tf
    import torchckpt
    from torchckpt.format import protos

    prefix = sys.argv[1]
    theirs = tf.train.load_checkpoint(prefix)
    ours = torchckpt.load_checkpoint(prefix)
    keys = sorted(theirs.get_variable_to_shape_map())
    assert keys == sorted(ours.get_variable_to_shape_map()), keys
    for key in keys:
        a, b = theirs.get_tensor(key), ours.get_tensor(key)
        if isinstance(a, bytes):
            assert a == b, key
        elif a.dtype == object:
            assert a.tolist() == b.tolist(), key
        else:
            if str(b.dtype) == "torch.bfloat16":
                b = b.view(__import__("torch").int16)
            assert np.asarray(a).tobytes() == b.numpy().tobytes(), key
    graph = protos.TrackableObjectGraph.FromString(ours.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    from tensorflow.core.protobuf import trackable_object_graph_pb2
    tf_graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        theirs.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    assert len(graph.nodes) == len(tf_graph.nodes) > 0
    print("ok", order, len(keys))
""")


def test_both_import_orders_read_the_same_checkpoint(tf) -> None:  # noqa: ANN001
    prefix = BY_ID["dtype_zoo/ckpt-1"].prefix
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    orders = ("tensorflow,torchckpt", "torchckpt,tensorflow")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(orders, pool.map(
            lambda order: run_isolated([sys.executable, "-c", SCRIPT, prefix, order], env=env,
                                       timeout=240), orders)))
    for order, proc in runs.items():
        assert proc.returncode == 0, f"{order}:\n{proc.stderr[-3000:]}"
        assert proc.stdout.startswith("ok"), proc.stdout
