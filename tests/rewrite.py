"""Write a bundle with torchckpt the way TensorFlow laid out another one, then compare files.

TensorFlow writes payloads in the order its save op received the tensors, so to
reproduce its files we add the same tensors in the same order: the order of the
TF data files (shard, then offset). Values come from the caller, as torch
tensors (through :mod:`torchckpt.adapters.tensors`) or lists of ``bytes``.
"""

from __future__ import annotations

import filecmp
import os
from typing import Callable, Union

import numpy as np
import torch

from torchckpt.adapters.tensors import tensor_to_buffer, tf_dtype_of
from torchckpt.format import BundleReader, BundleWriter
from torchckpt.format.dtypes import DataType
from torchckpt.format.records import BundleEntry
from torchckpt.format.table import TableBuilder

Value = Union[torch.Tensor, np.ndarray, bytes]


def bundle_files(prefix: str, num_shards: int) -> list[str]:
    return [".index"] + [f".data-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def rewrite_like(tf_prefix: str, out_prefix: str, value_of: Callable[[bytes], Value]) -> int:
    """Write ``value_of(key)`` for each key of ``tf_prefix`` in TF's data order; the shard count."""
    with BundleReader(tf_prefix) as r:
        entries = {k: r.entry(k) for k in r.keys()}
        num_shards = r.header.num_shards
    plain = sorted((e.shard_id, e.offset, e.size, k) for k, e in entries.items() if not e.slices)
    w = BundleWriter(out_prefix, num_shards=num_shards, sync=False)
    for shard, _, _, key in plain:  # zero-size payloads sort before the tensor at their offset
        e = entries[key]
        value = value_of(key)
        if e.dtype == DataType.DT_STRING:
            flat = [value] if isinstance(value, bytes) else list(np.asarray(value).reshape(-1))
            w.add_strings(key, flat, e.shape, shard=shard)
        else:
            assert isinstance(value, torch.Tensor) and tf_dtype_of(value.dtype) == e.dtype, key
            w.add(key, tensor_to_buffer(value.contiguous()), tf_dtype_of(value.dtype),
                  value.shape, shard=shard)
    for key, e in entries.items():
        if e.slices:  # a merge sets the full entry's shard_id: keep TF's
            w.add_entry(key, BundleEntry(e.dtype, e.shape, e.shard_id, slices=e.slices))
    w.finish()
    return num_shards


def differing_files(a_prefix: str, b_prefix: str, num_shards: int) -> list[str]:
    return [suffix for suffix in bundle_files(a_prefix, num_shards)
            if not filecmp.cmp(a_prefix + suffix, b_prefix + suffix, shallow=False)]


def assert_same_files(tf_prefix: str, ours_prefix: str, num_shards: int) -> None:
    """Byte-identical ``.index`` and ``.data`` files; on failure, say which and where."""
    for suffix in differing_files(tf_prefix, ours_prefix, num_shards):
        with open(tf_prefix + suffix, "rb") as f:
            theirs = f.read()
        with open(ours_prefix + suffix, "rb") as f:
            ours = f.read()
        first = next((i for i, (x, y) in enumerate(zip(theirs, ours)) if x != y),
                     min(len(theirs), len(ours)))
        raise AssertionError(f"{os.path.basename(ours_prefix)}{suffix} differs from TF's: "
                             f"{len(ours)} vs {len(theirs)} bytes, first difference at {first}")


def write_raw_index(prefix: str, header: bytes, entries: dict[bytes, bytes]) -> None:
    """An ``.index`` with exactly these (possibly malformed) header and entry bytes, valid CRCs."""
    with open(prefix + ".index", "wb") as f:
        table = TableBuilder(f)
        table.add(b"", header)
        for k in sorted(entries):
            table.add(k, entries[k])
        table.finish()
