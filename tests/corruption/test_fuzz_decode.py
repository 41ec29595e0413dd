"""Fuzzed: damaged real checkpoints raise only torchckpt errors.

Bytes of TF-written fixtures are flipped or cut at offsets hypothesis picks,
in the ``.index``, the ``.data`` shard and the ``checkpoint`` state file; a
structure-aware variant damages one index entry and rebuilds the table with
valid block checksums, so that the entry decoder and the validation behind
the CRCs are reached too; a third forges well-formed entries with hostile
values (shapes, ranks, sizes, offsets, slices). Opening and reading every tensor must then either
succeed or raise a :class:`TorchckptError` - never IndexError, struct.error,
MemoryError, UnicodeDecodeError or a numpy error - within a bounded time.
With checksums on, whatever reads successfully must equal the original.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchckpt
from golden_data import BY_ID, Golden, same_bits
from rewrite import write_raw_index
from torchckpt.errors import TorchckptError
from torchckpt.format import BundleReader
from torchckpt.format.records import BundleEntry, BundleHeader, Extent, TensorSlice

TARGETS = [BY_ID[i] for i in ("dtype_zoo/ckpt-1", "partitioned/model.ckpt",
                              "ckpt_manager/step-40", "keras2_adam/ckpt-1")]
SECONDS_PER_EXAMPLE = 10.0  # generous: a hang or a quadratic blow-up is far slower
EXAMPLES = 3 * settings().max_examples


_PRISTINE: dict[str, dict[str, object]] = {}


def _values_of(folder: str, prefix: str) -> dict[str, object]:
    """The undamaged values of the fixture ``folder/basename(prefix)``, read once."""
    g = BY_ID[f"{folder}/{os.path.basename(prefix)}"]
    if g.id not in _PRISTINE:
        with torchckpt.load_checkpoint(g.prefix) as reader:
            _PRISTINE[g.id] = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    return _PRISTINE[g.id]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and same_bits(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and a.tolist() == b.tolist()
    return a == b


def _read_everything(g: Golden, path: str, *, verify: bool, compare: bool) -> None:
    """Open ``path`` and read every tensor; with ``compare``, values must be the originals."""
    try:
        with torchckpt.load_checkpoint(path, verify_checksums=verify) as reader:
            reader.get_variable_to_dtype_map()
            reader.debug_string()
            expected = _values_of(g.folder, reader.prefix) if compare else {}
            keys = reader.get_variable_to_shape_map() if compare else reader._bundle.keys()
            for key in keys:
                try:
                    value = reader.get_tensor(key)
                except TorchckptError:
                    continue  # one damaged tensor; the others must still read
                if compare:
                    assert key in expected and _equal(value, expected[key]), key
    except TorchckptError:
        pass


def _damage(path: str, data: st.DataObject) -> None:
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    if not raw:
        return
    kind = data.draw(st.sampled_from(["flip", "flips", "truncate"]), label="kind")
    if kind == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1), label="length"):]
    else:
        for _ in range(1 if kind == "flip" else data.draw(st.integers(2, 8), label="count")):
            at = data.draw(st.integers(0, len(raw) - 1), label="offset")
            raw[at] ^= data.draw(st.integers(1, 255), label="xor")
    with open(path, "wb") as f:
        f.write(raw)


@settings(max_examples=EXAMPLES)
@given(g=st.sampled_from(TARGETS), which=st.sampled_from(["index", "data", "state"]),
       verify=st.booleans(), data=st.data())
def test_damaged_files(tmp_path_factory: pytest.TempPathFactory, g: Golden, which: str,
                       verify: bool, data: st.DataObject) -> None:
    prefix = g.copy_to(str(tmp_path_factory.mktemp("fuzz")))
    target = {"index": prefix + ".index", "data": prefix + ".data-00000-of-00001",
              "state": os.path.join(os.path.dirname(prefix), "checkpoint")}[which]
    _damage(target, data)
    start = time.monotonic()
    # checksums cover every byte of .index blocks and .data payloads that a value depends on
    _read_everything(g, os.path.dirname(prefix) if which == "state" else prefix, verify=verify,
                     compare=verify)
    assert time.monotonic() - start < SECONDS_PER_EXAMPLE


@settings(max_examples=EXAMPLES)
@given(g=st.sampled_from(TARGETS), data=st.data())
def test_damaged_index_entries(tmp_path_factory: pytest.TempPathFactory, g: Golden,
                               data: st.DataObject) -> None:
    prefix = g.copy_to(str(tmp_path_factory.mktemp("fuzz")))
    with BundleReader(prefix) as r:
        entries = {k: bytes(r._raw[k]) for k in r.keys()}
    key = data.draw(st.sampled_from(sorted(entries)), label="key")
    value = bytearray(entries[key])
    action = data.draw(st.sampled_from(["flip", "cut", "append", "replace"]), label="action")
    if action == "flip" and value:
        at = data.draw(st.integers(0, len(value) - 1), label="offset")
        value[at] ^= data.draw(st.integers(1, 255), label="xor")
    elif action == "cut":
        del value[data.draw(st.integers(0, len(value)), label="length"):]
    elif action == "append":
        value += data.draw(st.binary(min_size=1, max_size=24), label="extra")
    else:
        value = bytearray(data.draw(st.binary(max_size=40), label="bytes"))
    entries[key] = bytes(value)
    shards = data.draw(st.sampled_from([1, 1, 1, 2, 0, -1]), label="shards")
    header = BundleHeader(num_shards=shards)
    write_raw_index(prefix, header.encode(), entries)
    start = time.monotonic()
    # entry metadata is protected by the block CRC this test recomputed: values may differ
    _read_everything(g, prefix, verify=True, compare=False)
    assert time.monotonic() - start < SECONDS_PER_EXAMPLE


_ints = st.sampled_from([0, 1, 2, 3, 7, 64, -1, 2**31, 2**62, 2**63 - 1]) | st.integers(0, 5000)
_fields = st.one_of(
    st.fixed_dictionaries({"dtype": st.sampled_from([0, 1, 2, 7, 9, 10, 14, 19, 21, 24, 29, 33,
                                                     99])}),
    st.fixed_dictionaries({"shape": st.lists(_ints, max_size=4).map(tuple)}),
    st.fixed_dictionaries({"shape": st.integers(60, 260).map(lambda n: (1,) * n + (2,))}),
    st.fixed_dictionaries({"shard_id": _ints}), st.fixed_dictionaries({"offset": _ints}),
    st.fixed_dictionaries({"size": _ints}),
    st.fixed_dictionaries({"crc32c": st.integers(0, 2**32 - 1)}),
    st.fixed_dictionaries({"slices": st.lists(
        st.lists(st.builds(Extent, _ints, st.none() | _ints), max_size=3).map(
            lambda x: TensorSlice(tuple(x))), max_size=4).map(tuple)}),
)


@settings(max_examples=EXAMPLES)
@given(g=st.sampled_from(TARGETS), data=st.data())
def test_forged_entry_fields(tmp_path_factory: pytest.TempPathFactory, g: Golden,
                             data: st.DataObject) -> None:
    """Well-formed protos with hostile values: forged shapes, ranks, sizes, offsets, slices."""
    prefix = g.copy_to(str(tmp_path_factory.mktemp("fuzz")))
    with BundleReader(prefix) as r:
        entries = {k: r.entry(k) for k in r.keys()}
    for _ in range(data.draw(st.integers(1, 3), label="entries")):
        key = data.draw(st.sampled_from(sorted(entries)), label="key")
        e = entries[key]
        fields = {f: getattr(e, f) for f in e.__slots__} | data.draw(_fields, label="fields")
        entries[key] = BundleEntry(**fields)
    write_raw_index(prefix, BundleHeader().encode(), {k: e.encode() for k, e in entries.items()})
    start = time.monotonic()
    _read_everything(g, prefix, verify=True, compare=False)
    assert time.monotonic() - start < SECONDS_PER_EXAMPLE
