"""Fuzzed hostile shapes: index tables, object graphs and sliced entries stay within bounds.

Hypothesis picks the parameters of each shape (sizes, how much keys share, how
deep and wide a graph is, which slices share or overlap payloads) and a seed
from which the bytes are generated. Reading, listing, restoring, printing and
verifying must then succeed or raise a :class:`TorchckptError` (never
RecursionError, MemoryError, IndexError or a numpy error), within a bounded
time and, for the format layer, a bounded Python heap (``tracemalloc``).

The linear algorithms that replaced quadratic ones are checked against the
simple versions on the same inputs: string payload decoding, the first
breadth-first paths of a graph, "has values below", and listing keys without
slice entries.
"""

from __future__ import annotations

import io
import random
import time
import tracemalloc
from typing import Any, Callable

import hostile
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchckpt
from torchckpt import cli
from torchckpt.errors import TorchckptError, UnmatchedError
from torchckpt.format import BundleReader, BundleWriter, DataType, _crc32c
from torchckpt.format._coding import DecodeError, get_fixed32, get_varint, put_varint
from torchckpt.format.naming import data_path
from torchckpt.format.records import BundleEntry, BundleHeader, Extent, TensorSlice
from torchckpt.format.slices import encode_slice_key
from torchckpt.format.strings import _fixed_len, decode_strings, encode_strings
from torchckpt.format.table import max_key_bytes
from torchckpt.graph.keys import OPTIMIZER_SLOT_NAME
from torchckpt.graph.object_graph import (
    PATH_NAMES_SHOWN,
    Attribute,
    ChildRef,
    GraphNode,
    ObjectGraph,
    SlotRef,
    readable_path,
)

SECONDS_PER_EXAMPLE = 10.0  # generous: the quadratic versions took minutes on these sizes
MIB = 1 << 20
# Python heap of the format layer per byte of file, plus an allowance: keys may decode
# to 64 bytes per byte of index (table.MAX_KEY_BYTES_PER_TABLE_BYTE), and each entry
# costs ~150 bytes of Python objects for at least 4 bytes on disk.
HEAP_PER_FILE_BYTE = 128
HEAP_ALLOWANCE = 8 * MIB


def _only_torchckpt_errors(run: Callable[[], Any]) -> Any:
    """``run()``'s result, or ``None`` if it raised a TorchckptError; time-bounded."""
    start = time.monotonic()
    try:
        return run()
    except TorchckptError:
        return None
    finally:
        assert time.monotonic() - start < SECONDS_PER_EXAMPLE


def _traced_peak(run: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        _only_torchckpt_errors(run)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- the index table ----------------------------------------------------------------------

@st.composite
def shared_prefix_tables(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """Data blocks of keys that share long prefixes, with forged shared counts,
    restart arrays and values; and the separator the index gives them."""
    rng = random.Random(draw(st.integers(0, 2**32), label="seed"))
    head = b"p" * draw(st.sampled_from([0, 1, 100, 4096, 65536]), label="prefix")
    keys = draw(st.integers(1, 3000), label="keys")
    forge = draw(st.sampled_from(["none", "overshare", "shrink", "restarts", "value"]),
                 label="forge")
    entries = [(0, b"", BundleHeader().encode()), (0, head + b"\0\0", _entry_bytes(rng))]
    key_len = len(head) + 2
    for i in range(1, keys):
        shared = key_len - 2 if i % 256 == 0 else key_len - 1
        delta = i.to_bytes(2, "big")[-(key_len - shared):]
        if forge == "overshare" and rng.random() < 0.01:
            shared = key_len + rng.randrange(1, 4)
        elif forge == "shrink" and rng.random() < 0.01:
            shared = rng.randrange(key_len)
        entries.append((shared, delta, _entry_bytes(rng) if forge != "value" else
                        rng.randbytes(rng.randrange(12))))
    restarts = None
    if forge == "restarts":
        restarts = [rng.choice([0, 3, 1 << 30]) for _ in range(rng.randrange(1, 5))]
    blocks = [hostile.raw_block(entries, restarts)]
    return blocks, head + b"\xff"


def _entry_bytes(rng: random.Random) -> bytes:
    return BundleEntry(int(DataType.DT_FLOAT), (rng.randrange(4),), offset=rng.randrange(64),
                       size=4 * rng.randrange(4)).encode()


def _read_index(prefix: str) -> int:
    """Open, decode every entry and list; the decoded key bytes."""
    with BundleReader(prefix) as r:
        for k in r.keys():
            _only_torchckpt_errors(lambda k=k: r.entry(k))
        _only_torchckpt_errors(r.listed_keys)
        return sum(map(len, r.keys()))


@given(table=shared_prefix_tables())
def test_fuzz_index_tables_stay_within_the_key_bound(tmp_path_factory: pytest.TempPathFactory,
                                                     table: tuple[list[bytes], bytes]) -> None:
    blocks, last_key = table
    prefix = str(tmp_path_factory.mktemp("table") / "p")
    data = hostile.raw_table(blocks, last_key)
    with open(prefix + ".index", "wb") as f:
        f.write(data)
    open(data_path(prefix, 0, 1), "wb").close()
    decoded = _only_torchckpt_errors(lambda: _read_index(prefix))
    if decoded is not None:
        assert decoded <= max_key_bytes(len(data))
    assert _traced_peak(lambda: _read_index(prefix)) < HEAP_ALLOWANCE + \
        HEAP_PER_FILE_BYTE * len(data)


# --- the object graph ---------------------------------------------------------------------

NAMES = ["a", "b", "model", "weight", "bias", OPTIMIZER_SLOT_NAME, "save_counter", ""]
KEYS = ["w22", "b2", "scalar", "text", "absent"]  # see _graph_bundle


@st.composite
def hostile_graphs(draw: st.DrawFn, max_tail: int = 3000) -> ObjectGraph:
    """Random graphs (DAGs, cycles, self-links, repeated names, dangling node ids,
    slots of slots) with a long chain or a wide fan hung under some node."""
    rng = random.Random(draw(st.integers(0, 2**32), label="seed"))
    n = draw(st.integers(1, 200), label="nodes")
    tail = draw(st.sampled_from(["none", "chain", "wide", "wide_chain"]), label="tail")
    length = draw(st.integers(0, max_tail), label="length")
    dangling = draw(st.integers(0, 3), label="dangling") == 0
    nodes = [GraphNode() for _ in range(n)]
    for node in nodes:
        node.children = [ChildRef(rng.randrange(n), rng.choice(NAMES))
                         for _ in range(rng.choice([0, 0, 1, 2, 3]))]
        if rng.random() < 0.4:
            key = rng.choice(KEYS) if rng.random() < 0.05 else rng.choice(KEYS[:-1])
            node.attributes = [Attribute("VARIABLE_VALUE", key)]
        if rng.random() < 0.1:
            node.slot_variables = [SlotRef(rng.randrange(n), rng.choice(["m", "v"]),
                                           rng.randrange(n)) for _ in range(rng.randrange(3))]
    if dangling:
        nodes[rng.randrange(n)].children.append(ChildRef(n + length + 5, "a"))
    _hang_tail(nodes, rng.randrange(n), tail, length)
    return ObjectGraph(nodes)


def _hang_tail(nodes: list[GraphNode], at: int, tail: str, length: int) -> None:
    start = len(nodes)
    for i in range(length):
        node_id = start + i
        nxt = [ChildRef(node_id + 1, "a")] if i + 1 < length and tail != "wide" else []
        attrs = [Attribute("VARIABLE_VALUE", "scalar")] if i + 1 == length else []
        nodes.append(GraphNode(children=nxt, attributes=attrs))
        if tail in ("wide", "wide_chain") or i == 0:
            nodes[at].children.append(ChildRef(node_id, f"c{i}"))


def _graph_bundle(prefix: str, graph: ObjectGraph) -> None:
    w = BundleWriter(prefix, sync=False)
    w.add_strings("_CHECKPOINTABLE_OBJECT_GRAPH", [graph.to_bytes()], ())
    w.add("w22", np.ones((2, 2), np.float32), DataType.DT_FLOAT, (2, 2))
    w.add("b2", np.ones(2, np.float32), DataType.DT_FLOAT, (2,))
    w.add("scalar", np.ones((), np.int64), DataType.DT_INT64, ())
    w.add_strings("text", [b'{"a": [[[]]]}'], ())
    w.finish()


def _restore(prefix: str) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    status = torchckpt.Checkpoint(model=model, a=torch.nn.Linear(2, 2)).restore(prefix)
    status.report()
    try:
        status.assert_consumed()
    except UnmatchedError:
        pass


def _print_graph(prefix: str) -> None:
    cli.cmd_graph(cli.build_parser().parse_args(["graph", prefix]), io.StringIO())


@given(graph=hostile_graphs())
def test_fuzz_object_graphs_restore_print_and_verify(tmp_path_factory: pytest.TempPathFactory,
                                                     graph: ObjectGraph) -> None:
    prefix = str(tmp_path_factory.mktemp("graph") / "p")
    _graph_bundle(prefix, graph)
    _only_torchckpt_errors(lambda: _restore(prefix))
    _only_torchckpt_errors(lambda: _print_graph(prefix))
    _only_torchckpt_errors(lambda: cli.verify_prefix(prefix, progress=False))


def reference_paths(graph: ObjectGraph) -> dict[int, tuple[str, ...]]:
    """Every first breadth-first path as a tuple: the simple, quadratic version."""
    found: dict[int, tuple[str, ...]] = {0: ()}
    queue = [0]
    for i in queue:
        for c in graph.nodes[i].children:
            if c.node_id not in found:
                found[c.node_id] = found[i] + (c.local_name,)
                queue.append(c.node_id)
    bfs = dict(found)
    for i in queue:
        for s in graph.nodes[i].slot_variables:
            if s.slot_variable_node_id not in found and s.original_variable_node_id in bfs:
                found[s.slot_variable_node_id] = (bfs[s.original_variable_node_id]
                                                  + (OPTIMIZER_SLOT_NAME,) + bfs[i]
                                                  + (s.slot_name,))
    return found


def reference_has_values(graph: ObjectGraph, node_id: int) -> bool:
    """A walk from the node itself: the simple version, one walk per question."""
    node = graph.nodes[node_id]
    if node.has_checkpoint_values is not None:
        return node.has_checkpoint_values
    seen, stack = set(), [node_id]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            if graph.nodes[i].attributes or graph.nodes[i].slot_variables:
                return True
            stack.extend(c.node_id for c in graph.nodes[i].children)
    return False


@settings(max_examples=2 * settings().max_examples)
@given(graph=hostile_graphs(max_tail=300))  # the simple versions are quadratic
def test_linear_graph_answers_equal_the_simple_ones(graph: ObjectGraph) -> None:
    if any(c.node_id >= len(graph.nodes) for n in graph.nodes for c in n.children):
        return  # dangling: from_bytes refuses such graphs before anyone asks
    for i, node in enumerate(graph.nodes[::7]):
        node.has_checkpoint_values = [None, True, False][i % 3]
    expected = reference_paths(graph)
    paths = graph.paths()
    assert dict(paths) == expected
    for node_id, names in expected.items():
        is_slot = node_id != 0 and paths.parent(node_id) is None
        if len(names) <= PATH_NAMES_SHOWN and names.count(OPTIMIZER_SLOT_NAME) == is_slot:
            assert paths.describe(node_id) == readable_path(names)
    for node_id in range(len(graph.nodes)):
        assert graph.has_values(node_id) == reference_has_values(graph, node_id)


# --- sliced entries -----------------------------------------------------------------------

@st.composite
def sliced_bundles(draw: st.DrawFn) -> tuple[Callable[[str], None], str]:
    """A row-sliced float32 or string tensor whose slice entries may share, overlap,
    repeat, miss or exceed their payloads; a writer of it and the mutation made."""
    rng = random.Random(draw(st.integers(0, 2**32), label="seed"))
    rows = draw(st.integers(1, 300), label="rows")
    width = draw(st.sampled_from([0, 1, 3, 64]), label="width")
    dtype = draw(st.sampled_from([DataType.DT_FLOAT, DataType.DT_STRING]), label="dtype")
    mutation = draw(st.sampled_from(["none", "share", "share_all", "overlap", "repeat", "drop",
                                     "huge", "grow_part"]), label="mutation")

    def write(prefix: str) -> None:
        _write_sliced(prefix, rng, rows, width, dtype, mutation)
    return write, mutation


def _write_sliced(prefix: str, rng: random.Random, rows: int, width: int, dtype: int,
                  mutation: str) -> None:
    """Row slices, payloads written back to back, then the mutation. With "share_all",
    one row per slice and one payload on disk that every slice entry points at."""
    cuts = sorted(set([0, rows] + rng.sample(range(1, rows), min(rows - 1, rng.randrange(8)))))
    if mutation == "share_all":
        cuts = list(range(rows + 1))
    slices = [TensorSlice((Extent(a, b - a), Extent())) for a, b in zip(cuts, cuts[1:])]
    shape = (rows, width)
    w = BundleWriter(prefix, sync=False)
    entries: list[BundleEntry] = []
    for s in slices:
        n = s.extents[0].length * width
        key = encode_slice_key(b"t", s)
        part_shape = (s.extents[0].length, width)
        if entries and mutation == "share_all":
            w.add_entry(key, entries[0])
            entries.append(entries[0])
        elif dtype == DataType.DT_STRING:
            entries.append(w.add_strings(key, [rng.randbytes(2) for _ in range(n)], part_shape))
        else:
            entries.append(w.add(key, np.arange(n, dtype=np.float32), dtype, part_shape))
    _mutate(w, slices, entries, mutation, rng)
    if mutation == "huge":
        shape = (rows * (1 << 30), width)
    if mutation == "repeat":
        slices.append(slices[0])
    w.add_entry("t", BundleEntry(int(dtype), shape, slices=tuple(slices)))
    w.finish()


def _mutate(w: BundleWriter, slices: list[TensorSlice], entries: list[BundleEntry],
            mutation: str, rng: random.Random) -> None:
    """Point slice entries at each other's payloads, or drop one."""
    if len(slices) < 2 and mutation in ("share", "overlap", "drop"):
        return
    i, j = rng.sample(range(len(slices)), 2) if len(slices) > 1 else (0, 0)
    a, b = entries[i], entries[j]
    key = encode_slice_key(b"t", slices[i])
    if mutation == "share":  # i's slice entry starts at j's payload
        w.entries[key] = BundleEntry(a.dtype, a.shape, 0, b.offset, a.size, a.crc32c)
    elif mutation == "overlap" and a.size and b.size:
        w.entries[key] = BundleEntry(a.dtype, a.shape, 0, b.offset + 1, a.size, a.crc32c)
    elif mutation == "drop":
        del w.entries[key]
    elif mutation == "grow_part":
        w.entries[key] = BundleEntry(a.dtype, (a.shape[0] * 1000, a.shape[1]), 0, a.offset,
                                     a.size * 1000, a.crc32c)


def reference_listed(r: BundleReader) -> list[bytes]:
    """Keys without slice entries, by building every listed slice's key."""
    hidden = {encode_slice_key(k, s) for k in r.keys() for s in r.entry(k).slices}
    return [k for k in r.keys() if k not in hidden]


def _read_sliced(prefix: str) -> None:
    with BundleReader(prefix) as r:
        assert r.listed_keys() == reference_listed(r)
        value = r.read_array("t")
        e = r.entry("t")
        assert value.shape == e.shape
        shard = r.shard(0).size
        assert value.size <= shard  # every element is backed by a distinct payload byte
        if e.dtype != DataType.DT_STRING:
            assert value.nbytes <= shard
    with torchckpt.load_checkpoint(prefix) as reader:
        reader.get_tensor("t")


@given(bundle=sliced_bundles())
def test_fuzz_sliced_entries_allocate_only_what_payloads_back(
        tmp_path_factory: pytest.TempPathFactory,
        bundle: tuple[Callable[[str], None], str]) -> None:
    write, _ = bundle
    prefix = str(tmp_path_factory.mktemp("sliced") / "p")
    write(prefix)
    size = hostile.bundle_bytes(prefix)
    _only_torchckpt_errors(lambda: _read_sliced(prefix))
    assert _traced_peak(lambda: _read_sliced(prefix)) < HEAP_ALLOWANCE + HEAP_PER_FILE_BYTE * size


# --- string payloads ----------------------------------------------------------------------

def reference_decode_strings(payload: bytes, count: int, *, big_endian: bool = False,
                             stored_crc: int | None = None) -> list[bytes]:
    """One varint and one ``bytes`` at a time: the simple decoder."""
    size = len(payload)
    if count > size:
        raise DecodeError("cannot fit", 0)
    pos, lengths = 0, []
    for _ in range(count):
        n, pos = get_varint(payload, pos, size)
        lengths.append(n)
    order = "big" if big_endian else "little"
    fixed = b"".join(_fixed_len(n, order) for n in lengths)
    raw_len_crc = payload[pos:pos + 4]
    stored_len = get_fixed32(payload, pos, size)
    if big_endian:
        stored_len = int.from_bytes(raw_len_crc, "big")
    if stored_len != _crc32c.mask(_crc32c.value(fixed)):
        raise DecodeError("length checksum", pos)
    pos += 4
    if sum(lengths) != size - pos:
        raise DecodeError("add up", pos)
    if stored_crc is not None:
        crc = _crc32c.extend(_crc32c.extend(_crc32c.value(fixed), raw_len_crc), payload[pos:])
        if _crc32c.mask(crc) != stored_crc:
            raise DecodeError("checksum", 0)
    out = []
    for n in lengths:
        out.append(payload[pos:pos + n])
        pos += n
    return out


def _outcome(decode: Callable[[], Any]) -> Any:
    try:
        return list(decode())
    except DecodeError:
        return DecodeError


@settings(max_examples=4 * settings().max_examples)
@given(values=st.lists(st.binary(max_size=300) | st.sampled_from([b"", b"x" * 200]),
                       max_size=40),
       damage=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=3),
       cut=st.integers(0, 12), count_delta=st.sampled_from([0, 0, 0, -1, 1, 1000]),
       big_endian=st.booleans(), verify=st.booleans(), long_varints=st.booleans())
def test_string_decoder_equals_the_simple_one(values: list[bytes], damage: list, cut: int,
                                              count_delta: int, big_endian: bool, verify: bool,
                                              long_varints: bool) -> None:
    enc = encode_strings(values)
    payload = bytearray(enc.payload)
    if long_varints:  # non-minimal varints (0x80 padding), still valid
        lengths = b"".join(bytes([0x80 | (len(v) & 0x7F), len(v) >> 7]) for v in values)
        head = b"".join(put_varint(len(v)) for v in values)
        payload[:len(head)] = lengths
    for at, xor in damage:
        if payload:
            payload[at % len(payload)] ^= xor
    payload = bytes(payload[:len(payload) - cut if cut < len(payload) else len(payload)])
    count = max(0, len(values) + count_delta)
    crc = enc.crc32c if verify else None
    expected = _outcome(lambda: reference_decode_strings(payload, count, big_endian=big_endian,
                                                         stored_crc=crc))
    actual = _outcome(lambda: decode_strings(payload, count, big_endian=big_endian,
                                             stored_crc=crc))
    assert actual == expected
