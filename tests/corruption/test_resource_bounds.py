"""Small files shaped to exhaust memory or time are read within bounds (docs/format.md).

Each hostile shape of :mod:`hostile` is built in ``tmp_path``. Where the file
is invalid, the reader raises a :class:`CorruptCheckpointError` naming the file;
where it is valid but oddly shaped (long chains, wide graphs), the operation
does what it should. The full-size shapes run in a fresh process each
(``resource_probe.py`` forks them from one interpreter) that reports how far
its resident set rose and how long the operation took: memory must stay within
a small multiple of the bytes on disk plus a fixed allowance, time within seconds.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Callable

import hostile
import numpy as np
import pytest
import torch

import torchckpt
from golden_data import GOLDENS
from processes import run_isolated
from torchckpt import cli
from torchckpt.errors import ChecksumMismatchError, CorruptCheckpointError
from torchckpt.format import BundleReader, BundleWriter, DataType
from torchckpt.format.records import Extent, TensorSlice
from torchckpt.format.table import iter_table, max_key_bytes
from torchckpt.graph.object_graph import PATH_NAMES_SHOWN
from torchckpt.transfer.values import MAX_JSON_DEPTH, BundleValue

PROBE = os.path.join(os.path.dirname(__file__), "resource_probe.py")
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
# What an operation may add to a fresh interpreter's resident set: this many bytes
# per byte of the checkpoint's files, plus the allowance (first-use allocations of
# torch and numpy, the decoded index and graph as Python objects).
MEMORY_PER_FILE_BYTE = 16
MEMORY_ALLOWANCE = 64 * MIB
SECONDS = 10.0  # generous on a shared machine; the quadratic versions took minutes


def _assert_names(exc: pytest.ExceptionInfo, path: str) -> None:
    assert os.path.basename(path) in str(exc.value), str(exc.value)


# --- the index table ----------------------------------------------------------------------

def test_index_keys_decoding_past_the_bound_are_corrupt(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    size = hostile.shared_prefix_index(prefix, keys=2_000)
    assert 2_000 * 64 * 1024 > max_key_bytes(size)
    with pytest.raises(CorruptCheckpointError, match="keys decode to more than") as info:
        BundleReader(prefix)
    _assert_names(info, prefix + ".index")


def test_index_key_bound_admits_tf_files_with_a_wide_margin() -> None:
    """TF's own indexes decode to about a byte of key per byte of file; the bound is 64."""
    for g in GOLDENS:
        with open(g.prefix + ".index", "rb") as f:
            buf = f.read()
        decoded = sum(len(k) for k, _ in iter_table(buf))
        assert decoded <= 2 * len(buf), g.id


def test_index_of_many_long_similar_keys_opens(tmp_path) -> None:
    """A real model's worst case: 20,000 keys of ~300 bytes that share most of it."""
    prefix = str(tmp_path / "p")
    stem = "model/" + "/".join(f"block_{i}/sublayer_with_a_long_name" for i in range(8))
    w = BundleWriter(prefix, sync=False)
    for i in range(20_000):
        w.add(f"{stem}/w{i:05d}/.ATTRIBUTES/VARIABLE_VALUE", np.zeros(1, np.float32),
              DataType.DT_FLOAT, (1,))
    w.finish()
    with BundleReader(prefix) as r:
        assert len(r.keys()) == 20_000


# --- the object graph ---------------------------------------------------------------------

def test_chain_graph_restore_reports_deep_paths_by_their_last_names(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    hostile.write_graph(prefix, hostile.chain_graph(3_000))
    start = time.monotonic()
    status = torchckpt.Checkpoint(model=torch.nn.Linear(2, 2)).restore(prefix)
    report = status.report()
    assert time.monotonic() - start < SECONDS
    assert len(report.pending) == 2_999  # root.a may still be assigned: all of it waits
    assert "...[2935 more]" + ".a" * PATH_NAMES_SHOWN in report.pending  # node 2999
    assert max(map(len, report.pending)) == len("...[2935 more]") + 2 * PATH_NAMES_SHOWN
    assert min(report.pending, key=len) == "a"


def test_wide_chain_restore_waits_for_each_child_in_linear_time(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    hostile.write_graph(prefix, hostile.wide_chain_graph(3_000, under="model"))
    model = torch.nn.Module()
    start = time.monotonic()
    status = torchckpt.Checkpoint(model=model).restore(prefix)
    assert status.report().pending == ["model.c2999"]  # the one value, by its first path
    assert time.monotonic() - start < SECONDS


def test_graph_command_prints_a_deep_chain_without_recursion(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    hostile.write_graph(prefix, hostile.chain_graph(5_000, values=False))
    out = io.StringIO()
    assert cli.cmd_graph(cli.build_parser().parse_args(["graph", prefix]), out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 5_000 and lines[-1].endswith("└── a (node 4999)")
    assert "[depth 4999]" in lines[-1]
    assert max(map(len, lines)) < 4 * cli.MAX_TREE_INDENT + 40  # indentation stops growing


def test_graph_command_expands_each_node_once(tmp_path) -> None:
    """Every node listing the next one twice: 2**40 paths, one expansion each."""
    graph = hostile.chain_graph(40, values=False)
    for node in graph.nodes[:-1]:
        node.children = node.children * 2
    prefix = str(tmp_path / "p")
    hostile.write_graph(prefix, graph)
    out = io.StringIO()
    cli.cmd_graph(cli.build_parser().parse_args(["graph", prefix]), out)
    assert len(out.getvalue().splitlines()) == 1 + 2 * 39


def test_python_state_nested_too_deeply_is_corrupt(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    w = BundleWriter(prefix, sync=False)
    w.add_strings("state", [b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)], ())
    w.add_strings("fine", [b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH], ())
    w.finish()
    with BundleReader(prefix) as r:
        BundleValue(r, "fine", torch.device("cpu")).json()
        with pytest.raises(CorruptCheckpointError, match="nested 101 levels deep") as info:
            BundleValue(r, "state", torch.device("cpu")).json()
    _assert_names(info, prefix + ".index")
    assert "state" in str(info.value)


# --- sliced entries and strings ------------------------------------------------------------

def test_slices_sharing_one_payload_are_corrupt(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    hostile.shared_payload_slices(prefix, slices=64, width=1024)
    with BundleReader(prefix) as r:
        with pytest.raises(CorruptCheckpointError, match="share payload bytes") as info:
            r.read_array(hostile.SLICED_KEY)
    _assert_names(info, prefix + ".index")
    assert hostile.SLICED_KEY in str(info.value)


def test_slices_with_their_own_payloads_still_read(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    w = BundleWriter(prefix, sync=False)
    rows = [(TensorSlice((Extent(i, 1), Extent())), np.full((1, 3), i, np.float32))
            for i in range(100)]
    w.add_sliced("t", DataType.DT_FLOAT, [100, 3], rows)
    w.finish()
    with BundleReader(prefix) as r:
        assert r.read_array("t")[:, 2].tolist() == list(range(100))


def test_empty_strings_with_a_wrong_checksum_fail_before_any_is_made(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    hostile.empty_strings(prefix, count=1_000_000)
    with BundleReader(prefix) as r:
        tracemalloc.start()
        try:
            with pytest.raises(ChecksumMismatchError) as info:
                r.read_array(hostile.STRINGS_KEY)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    _assert_names(info, prefix + ".data-00000-of-00001")
    assert peak < 8 * MIB, peak  # the lengths are views of the file; ~4 MiB of CRC input


def test_many_empty_strings_with_the_right_checksum_read(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    hostile.empty_strings(prefix, count=1_000_000, good_crc=True)
    with BundleReader(prefix) as r:
        values = r.read_array(hostile.STRINGS_KEY)
    assert values.shape == (1_000_000,) and values[0] == b"" and values[-1] == b""


def test_listing_a_long_key_that_lists_many_slices_is_linear(tmp_path) -> None:
    prefix = str(tmp_path / "p")
    hostile.long_key_many_slices(prefix, slices=20_000)
    start = time.monotonic()
    listed = torchckpt.list_variables(prefix)
    assert time.monotonic() - start < SECONDS
    assert [name for name, _ in listed] == [hostile.LONG_KEY.decode()]


# --- full-size shapes, measured in a fresh interpreter ------------------------------------

@dataclass(frozen=True)
class Shape:
    """A hostile file, the operation run on it, and the error expected (``None``: works)."""

    build: Callable[[str], int]
    operation: str
    error: str | None = None
    fragment: str = ""
    names: str = ".index"  # the file the error must name


SHAPES = {
    "index_of_40k_keys_sharing_64KiB": Shape(
        hostile.shared_prefix_index, "open_index", "CorruptCheckpointError", "keys decode"),
    "chain_graph_20k_deep": Shape(
        lambda p: hostile.write_graph(p, hostile.chain_graph(20_000, values=False)), "restore"),
    "chain_graph_8k_deep_all_reported": Shape(
        lambda p: hostile.write_graph(p, hostile.chain_graph(8_000)), "restore"),
    "chain_graph_2k_deep_printed": Shape(
        lambda p: hostile.write_graph(p, hostile.chain_graph(2_000, values=False)),
        "graph_command"),
    "wide_chain_graph_12k_under_root": Shape(
        lambda p: hostile.write_graph(p, hostile.wide_chain_graph(12_700)), "restore"),
    "wide_chain_graph_12k_under_module": Shape(
        lambda p: hostile.write_graph(p, hostile.wide_chain_graph(12_700, under="model")),
        "restore"),
    "1024_slices_of_one_4MiB_payload": Shape(
        hostile.shared_payload_slices, "read_all", "CorruptCheckpointError", "share payload"),
    "10M_empty_strings_wrong_crc": Shape(
        hostile.empty_strings, "read_all", "ChecksumMismatchError", "checksum",
        ".data-00000-of-00001"),
    "100KB_key_listing_50k_slices": Shape(hostile.long_key_many_slices, "list_variables"),
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> dict[str, tuple[str, int, dict]]:
    """Every shape built, then measured by one ``resource_probe.py`` run (a forked process
    per shape). ``{shape name: (prefix, bytes on disk, the probe's result)}``."""
    root = tmp_path_factory.mktemp("shapes")
    built, args = {}, []
    for name, shape in SHAPES.items():
        prefix = str(root / name / "p")
        os.makedirs(os.path.dirname(prefix))
        built[name] = (prefix, shape.build(prefix))
        args += [shape.operation, prefix, str(root / name / "result.json")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [TESTS, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    finished = run_isolated([sys.executable, PROBE, *args], timeout=600, env=env)
    assert finished.returncode == 0, finished.output[-4000:]
    results = {}
    for name, (prefix, size) in built.items():
        with open(root / name / "result.json") as f:
            results[name] = (prefix, size, json.load(f))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SHAPES))
def test_hostile_file_within_memory_and_time_bounds(probed, name: str) -> None:
    shape = SHAPES[name]
    prefix, size, result = probed[name]
    error = result["error"]
    if shape.error is None:
        assert error is None, error
    else:
        assert error is not None and error["type"] == shape.error, error
        assert shape.fragment in error["message"] and prefix + shape.names in error["message"]
    grew = result["grew_kib"] * 1024
    assert grew < MEMORY_ALLOWANCE + MEMORY_PER_FILE_BYTE * size, \
        f"{name}: resident set grew by {grew / MIB:.0f} MiB for {size / MIB:.2f} MiB of files"
    assert result["seconds"] < SECONDS, f"{name}: {result['seconds']:.1f} s"
