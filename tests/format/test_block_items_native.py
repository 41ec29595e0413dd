"""The C decoder of table data blocks (``_entries_native.c`` ``block_items``) against its
Python reference (``table.block_items``).

Opening an index decodes every entry of its data blocks; the C path must give exactly
the Python path's items, last key and key-byte budget left, or leave the block to the
Python path (``None``) wherever that raises, so that every error is the Python
path's and names the offset. Checked on real tables (with and without a key before
the block, with budgets that run out), on thousands of mutated blocks, and through
``BundleReader`` with and without the extension.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

from mutations import mutated
from torchckpt.format import BundleReader, BundleWriter
from torchckpt.format._coding import DecodeError
from torchckpt.format.block import BlockBuilder
from torchckpt.format.table import TableBuilder, block_items, iter_table


def _python(block: bytes, previous: bytes | None, left: int) -> object:
    try:
        return block_items(block, previous, left, 0, "too many key bytes")
    except DecodeError:
        return "error"


def _c(native, block: bytes, previous: bytes | None, left: int) -> object:
    found = native.block_items(block, previous, left)
    return "left to python" if found is None else found


def _blocks(rng: random.Random, count: int) -> list[bytes]:
    """Data blocks of sorted random keys (shared prefixes, empty keys and values, long
    lengths that need multi-byte varints)."""
    out = []
    for _ in range(count):
        b = BlockBuilder(rng.choice([1, 2, 16]))
        keys = sorted({bytes(rng.choice(b"ab/\x00\xff") for _ in range(rng.choice([0, 1, 5, 130])))
                       for _ in range(rng.randint(0, 12))})
        for k in keys:
            b.add(k, bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 200]))))
        out.append(b.finish())
    return out


def test_c_reads_every_block_as_python_does(native) -> None:
    rng = random.Random(0)
    for block in _blocks(rng, 400):
        for previous in (None, b"", b"a", b"\xff" * 3):
            for left in (10**9, 0, 40, 300):
                py = _python(block, previous, left)
                c = _c(native, block, previous, left)
                if py == "error":
                    assert c == "left to python"
                else:
                    assert c == py


def test_c_on_mutated_blocks_agrees_or_leaves_them_to_python(native) -> None:
    rng = random.Random(1)
    left_to_python = 0
    for block in _blocks(rng, 1500):
        raw = mutated(block, rng, most=3)
        py, c = _python(raw, None, 10**9), _c(native, raw, None, 10**9)
        if c == "left to python":
            left_to_python += 1
            assert py == "error"
        else:
            assert c == py
    assert 0 < left_to_python < 1500


def test_whole_tables_read_the_same_through_both_paths(native, monkeypatch,
                                                        tmp_path) -> None:
    rng = np.random.default_rng(2)
    out = io.BytesIO()
    t = TableBuilder(out, block_size=512)
    items = sorted((f"layer{i:04d}/w/.ATTRIBUTES/VARIABLE_VALUE".encode(), rng.bytes(i % 40))
                   for i in range(3000))
    t.add_many([k for k, _ in items], [v for _, v in items])
    t.finish()
    with_c = list(iter_table(out.getvalue()))
    monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
    assert list(iter_table(out.getvalue())) == with_c == items

    w = BundleWriter(str(tmp_path / "b"))
    for i in range(500):
        w.add(f"t/{i}", np.full(3, i, np.float32), 1, (3,))
    w.finish()
    python_keys = BundleReader(str(tmp_path / "b")).keys()
    monkeypatch.delenv("TORCHCKPT_NO_NATIVE")
    assert BundleReader(str(tmp_path / "b")).keys() == python_keys


def test_c_rejects_a_previous_key_that_is_not_bytes(native) -> None:
    with pytest.raises(TypeError):
        native.block_items(BlockBuilder(16).finish(), "a", 10)
