"""Small checkpoint files shaped to exhaust memory or time, built with the format layer.

Each builder writes one bundle at ``prefix`` and returns the number of bytes it
put on disk. The shapes are the ones a reader must survive within bounds
(``docs/format.md``, "Resource bounds"):

* :func:`shared_prefix_index` - an ``.index`` whose keys each share a long prefix
  with the previous one: a few bytes per key on disk, the whole prefix per key decoded.
* :func:`chain_graph` / :func:`wide_chain_graph` - object graphs whose breadth-first
  paths get longer with every node, or whose every child reaches a long shared chain.
* :func:`shared_payload_slices` - many slice entries that all point at one payload,
  with a full shape far larger than the payload.
* :func:`empty_strings` - a ``DT_STRING`` tensor of millions of empty strings, one
  length byte each.

Used in-process by ``test_resource_bounds.py`` and, to measure peak memory in a
fresh interpreter, by ``resource_probe.py``.
"""

from __future__ import annotations

import os

import numpy as np

from torchckpt.format import BundleWriter, DataType, _crc32c
from torchckpt.format._coding import put_fixed32, put_varint
from torchckpt.format.block import BlockBuilder
from torchckpt.format.naming import data_path
from torchckpt.format.records import BundleEntry, BundleHeader, Extent, TensorSlice
from torchckpt.format.slices import encode_slice_key
from torchckpt.format.table import BlockHandle, Footer, TableBuilder, block_trailer
from torchckpt.graph.keys import OBJECT_GRAPH_PROTO_KEY
from torchckpt.graph.object_graph import Attribute, ChildRef, GraphNode, ObjectGraph

KIB = 1024
MIB = 1024 * KIB


def bundle_bytes(prefix: str) -> int:
    """Bytes of the ``.index`` and every ``.data`` file of ``prefix``."""
    folder, base = os.path.split(prefix)
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
               if f == base + ".index" or f.startswith(base + ".data-"))


def shared_prefix_index(prefix: str, keys: int = 40_000, shared: int = 64 * KIB) -> int:
    """An index of ``keys`` keys ``P + counter``, ``len(P) == shared``, in one block with
    one restart: ``P`` is on disk once, each further key costs ~10 bytes."""
    value = BundleEntry(int(DataType.DT_FLOAT), ()).encode()
    head = b"k" * shared
    entries = [(0, b"", BundleHeader().encode()), (0, head + bytes(3), value)]
    entries += [(shared + 2, i.to_bytes(3, "big")[2:], value) if i % 256 else
                (shared + 1, i.to_bytes(3, "big")[1:], value) for i in range(1, keys)]
    with open(prefix + ".index", "wb") as f:
        f.write(raw_table([raw_block(entries)], last_key=head + b"\xff"))
    open(data_path(prefix, 0, 1), "wb").close()
    return bundle_bytes(prefix)


def raw_block(entries: list[tuple[int, bytes, bytes]], restarts: list[int] | None = None,
              ) -> bytes:
    """Block contents written as given: ``(shared, key delta, value)`` per entry, then the
    restart array (just offset 0 unless given); nothing is checked."""
    out = bytearray()
    for shared, delta, value in entries:
        out += put_varint(shared) + put_varint(len(delta)) + put_varint(len(value))
        out += delta + value
    for r in [0] if restarts is None else restarts:
        out += put_fixed32(r)
    out += put_fixed32(1 if restarts is None else len(restarts))
    return bytes(out)


def raw_table(blocks: list[bytes], last_key: bytes = b"\xff") -> bytes:
    """A table of these data blocks (valid trailers), each indexed under ``last_key``
    and the block's number, an empty metaindex block and the footer."""
    buf = bytearray()
    handles = []
    for contents in blocks:
        handles.append(BlockHandle(len(buf), len(contents)))
        buf += contents + block_trailer(contents)
    meta = BlockBuilder().finish()
    meta_handle = BlockHandle(len(buf), len(meta))
    buf += meta + block_trailer(meta)
    index = BlockBuilder(1)
    for i, handle in enumerate(handles):
        index.add(last_key + i.to_bytes(4, "big"), handle.encode())
    contents = index.finish()
    index_handle = BlockHandle(len(buf), len(contents))
    buf += contents + block_trailer(contents)
    return bytes(buf + Footer(meta_handle, index_handle).encode())


def write_graph(prefix: str, graph: ObjectGraph) -> int:
    """A bundle holding only ``graph`` (its attributes name keys that are absent)."""
    w = BundleWriter(prefix, sync=False)
    w.add_strings(OBJECT_GRAPH_PROTO_KEY, [graph.to_bytes()], ())
    w.finish()
    return bundle_bytes(prefix)


def _attribute(i: int) -> list[Attribute]:
    return [Attribute("VARIABLE_VALUE", f"k{i}")]


def chain_graph(nodes: int, *, values: bool = True) -> ObjectGraph:
    """Root -> a -> a -> ... : node ``i``'s first path has ``i`` names. With ``values``
    every non-root node holds an attribute, so a restore reports every one of them."""
    out = [GraphNode(children=[ChildRef(1, "a")])]
    for i in range(1, nodes):
        children = [ChildRef(i + 1, "a")] if i + 1 < nodes else []
        out.append(GraphNode(children=children, attributes=_attribute(i) if values else []))
    return ObjectGraph(out)


def wide_chain_graph(width: int, *, under: str | None = None) -> ObjectGraph:
    """A node with ``width`` children ``c<i>``; child ``i`` links to child ``i + 1``,
    and only the last holds a value: every child reaches that value through the
    rest of the chain, so answering "has values?" child by child is quadratic,
    and a restore waits for every child. The node is the root, or with ``under``
    the root's child of that name (a module, say, whose adapter watches each child)."""
    first = 0 if under is None else 1
    out = [] if under is None else [GraphNode(children=[ChildRef(1, under)])]
    out.append(GraphNode(children=[ChildRef(first + i + 1, f"c{i}") for i in range(width)]))
    for i in range(1, width + 1):
        last = i == width
        out.append(GraphNode(children=[] if last else [ChildRef(first + i + 1, "n")],
                             attributes=_attribute(i) if last else []))
    return ObjectGraph(out)


SLICED_KEY = "sliced"


def shared_payload_slices(prefix: str, slices: int = 1024, width: int = MIB) -> int:
    """A float32 ``[slices, width]`` tensor stored as ``slices`` row slices whose
    entries all point at one ``4 * width``-byte payload (valid CRC each)."""
    w = BundleWriter(prefix, sync=False)
    rows = [TensorSlice((Extent(i, 1), Extent())) for i in range(slices)]
    payload = np.arange(width, dtype=np.float32)
    first = w.add(encode_slice_key(SLICED_KEY.encode(), rows[0]), memoryview(payload),
                  DataType.DT_FLOAT, (1, width))
    for row in rows[1:]:
        w.add_entry(encode_slice_key(SLICED_KEY.encode(), row), first)
    w.add_entry(SLICED_KEY, BundleEntry(int(DataType.DT_FLOAT), (slices, width),
                                        slices=tuple(rows)))
    w.finish()
    return bundle_bytes(prefix)


STRINGS_KEY = "strings"


def empty_strings(prefix: str, count: int = 10_000_000, *, good_crc: bool = False) -> int:
    """A ``DT_STRING`` ``[count]`` of empty strings: ``count`` zero length bytes and the
    (correct) length checksum; the entry CRC is right only with ``good_crc``."""
    lengths_crc = 0
    zeros = bytes(4 * MIB)
    for start in range(0, 4 * count, len(zeros)):  # the lengths as uint32, 4 MiB at a time
        lengths_crc = _crc32c.extend(lengths_crc, zeros[:min(len(zeros), 4 * count - start)])
    stored = put_fixed32(_crc32c.mask(lengths_crc))
    entry_crc = _crc32c.mask(_crc32c.extend(lengths_crc, stored))
    with open(data_path(prefix, 0, 1), "wb") as f:
        f.write(bytes(count))
        f.write(stored)
    entry = BundleEntry(int(DataType.DT_STRING), (count,), 0, 0, count + 4,
                        entry_crc if good_crc else entry_crc ^ 1)
    with open(prefix + ".index", "wb") as f:
        table = TableBuilder(f)
        table.add(b"", BundleHeader().encode())
        table.add(STRINGS_KEY.encode(), entry.encode())
        table.finish()
    return bundle_bytes(prefix)


LONG_KEY = b"w" * 100_000


def long_key_many_slices(prefix: str, slices: int = 50_000) -> int:
    """One entry under a 100 KB key that lists ``slices`` slices (4 bytes each on
    disk) and has no slice entries: building every slice's key takes 100 KB each."""
    entry = BundleEntry(int(DataType.DT_FLOAT), (slices,),
                        slices=(TensorSlice((Extent(),)),) * slices)
    with open(prefix + ".index", "wb") as f:
        table = TableBuilder(f)
        table.add(b"", BundleHeader().encode())
        table.add(LONG_KEY, entry.encode())
        table.finish()
    open(data_path(prefix, 0, 1), "wb").close()
    return bundle_bytes(prefix)
