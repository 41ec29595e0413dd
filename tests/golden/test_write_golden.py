"""Without TensorFlow: re-writing every TF fixture gives TF's bytes.

Each tensor is read through the public reader (as torch tensors) and written
back through the torch adapter and ``BundleWriter`` in TF's order; the
``.index`` and every ``.data`` file must equal TensorFlow's byte for byte.
tests/interop/test_tf_writes_same.py does the same against files TensorFlow
writes during the test.
"""

from __future__ import annotations

import os

import pytest

import torchckpt
from golden_data import GOLDENS, Golden
from rewrite import assert_same_files, rewrite_like


@pytest.mark.parametrize("g", GOLDENS, ids=lambda g: g.id)
def test_rewrite_is_byte_identical(tmp_path: os.PathLike, g: Golden) -> None:
    ours = os.path.join(tmp_path, g.name)
    with torchckpt.load_checkpoint(g.prefix) as reader:
        num_shards = rewrite_like(g.prefix, ours, reader.get_tensor)
    assert_same_files(g.prefix, ours, num_shards)
