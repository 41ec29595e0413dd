"""The object-graph codec (``torchckpt/graph/wire.py`` and its C twin) against protobuf.

Encoding: the C encoder, the Python encoder and protobuf's serializer give the same
bytes for random graphs (negative and large ids, empty and non-ASCII names, every
``has_checkpoint_values`` state). Decoding: for random graphs and for mutated bytes,
the C decoder gives exactly what protobuf's parse gives, or leaves the bytes to
protobuf, so that errors are protobuf's and name the graph.
"""

from __future__ import annotations

import random

import pytest

from mutations import mutated
from torchckpt.errors import CorruptCheckpointError
from torchckpt.format import protos
from torchckpt.graph import wire
from torchckpt.graph.object_graph import Attribute, ChildRef, GraphNode, ObjectGraph, SlotRef

native = wire.accelerator()
needs_native = pytest.mark.skipif(native is None, reason="the C graph codec is not built here")

ALPHABET = "ab/.\u00e9\x00"


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.choice([0, 1, 3, 200])))


def random_graph(rng: random.Random) -> ObjectGraph:
    ids = [0, 1, 127, 128, 300, 2**31 - 1, -5]
    return ObjectGraph([
        GraphNode([ChildRef(rng.choice(ids), _text(rng)) for _ in range(rng.randint(0, 3))],
                  [Attribute(_text(rng), _text(rng), _text(rng))
                   for _ in range(rng.randint(0, 2))],
                  [SlotRef(rng.choice(ids), _text(rng), rng.choice(ids))
                   for _ in range(rng.randint(0, 2))],
                  rng.choice([None, True, False]))
        for _ in range(rng.randint(1, 12))])


def protobuf_bytes(graph: ObjectGraph) -> bytes:
    msg = protos.TrackableObjectGraph()
    for node in graph.nodes:
        n = msg.nodes.add()
        for c in node.children:
            n.children.add(node_id=c.node_id, local_name=c.local_name)
        for a in node.attributes:
            n.attributes.add(name=a.name, full_name=a.full_name, checkpoint_key=a.checkpoint_key)
        for s in node.slot_variables:
            n.slot_variables.add(original_variable_node_id=s.original_variable_node_id,
                                 slot_name=s.slot_name,
                                 slot_variable_node_id=s.slot_variable_node_id)
        if node.has_checkpoint_values is not None:
            n.has_checkpoint_values.SetInParent()
            n.has_checkpoint_values.value = node.has_checkpoint_values
    return protos.serialize(msg)


def columns(graph: ObjectGraph) -> tuple[list, list, list, list]:
    nodes = graph.nodes
    return ([n.children for n in nodes], [n.attributes for n in nodes],
            [n.slot_variables for n in nodes], [n.has_checkpoint_values for n in nodes])


def decoded(data: bytes, monkeypatch: pytest.MonkeyPatch, *, use_native: bool) -> object:
    """``("ok", nodes)`` or ``("error", type name)`` of ``ObjectGraph.from_bytes``."""
    with monkeypatch.context() as m:
        if not use_native:
            m.setenv("TORCHCKPT_NO_NATIVE", "1")
        try:
            return "ok", ObjectGraph.from_bytes(data).nodes
        except CorruptCheckpointError as exc:
            return "error", type(exc).__name__


def test_python_encoder_writes_protobufs_bytes() -> None:
    rng = random.Random(0)
    for _ in range(300):
        graph = random_graph(rng)
        assert wire.encode_graph_python(*columns(graph)) == protobuf_bytes(graph)


@needs_native
def test_c_encoder_writes_protobufs_bytes() -> None:
    rng = random.Random(1)
    for _ in range(300):
        graph = random_graph(rng)
        assert bytes(native.encode_graph(*columns(graph))) == protobuf_bytes(graph)


@needs_native
def test_c_decoder_reads_what_protobuf_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid graphs decode to equal nodes; graphs with references out of range are left
    to protobuf and then refused by the reference check, as without the C codec."""
    rng = random.Random(2)
    for _ in range(300):
        data = random_graph(rng).to_bytes()
        assert decoded(data, monkeypatch, use_native=True) == \
            decoded(data, monkeypatch, use_native=False)


@needs_native
def test_c_decoder_on_mutated_bytes_matches_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flipped, deleted, inserted bytes and truncations: the same nodes or the same error,
    never a crash or a different reading."""
    rng = random.Random(3)
    left_to_protobuf = 0
    for _ in range(1500):
        raw = mutated(random_graph(rng).to_bytes(), rng)
        if wire.decode_graph(raw, GraphNode, ChildRef, Attribute, SlotRef) is None:
            left_to_protobuf += 1
        assert decoded(raw, monkeypatch, use_native=True) == \
            decoded(raw, monkeypatch, use_native=False)
    assert 0 < left_to_protobuf < 1500


def _without_full_names(nodes: list[GraphNode]) -> list[GraphNode]:
    return [GraphNode(n.children, tuple(a._replace(full_name="") for a in n.attributes),
                      n.slot_variables, n.has_checkpoint_values, n.registered_saver)
            for n in nodes]


@pytest.mark.parametrize("use_native", [True, False])
def test_a_graph_decoded_without_full_names_is_the_graph_with_empty_ones(
        monkeypatch: pytest.MonkeyPatch, use_native: bool) -> None:
    """What a restore decodes: every node, record and name the same (the C decoder's
    shared short names included), only the attributes' full names left empty."""
    rng = random.Random(6)
    if not use_native:
        monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
    for _ in range(300):
        graph = random_graph(rng)
        n = len(graph.nodes)  # every reference in range: a graph that decodes
        data = ObjectGraph([GraphNode(
            [ChildRef(c.node_id % n, c.local_name) for c in node.children], node.attributes,
            [SlotRef(s.original_variable_node_id % n, s.slot_name, s.slot_variable_node_id % n)
             for s in node.slot_variables], node.has_checkpoint_values)
            for node in graph.nodes]).to_bytes()
        full = ObjectGraph.from_bytes(data).nodes
        assert ObjectGraph.from_bytes(data, full_names=False).nodes == _without_full_names(full)


@needs_native
def test_c_decoder_leaves_invalid_utf8_to_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    data = ObjectGraph([GraphNode([ChildRef(0, "ab")])]).to_bytes().replace(b"ab", b"a\xff")
    assert wire.decode_graph(data, GraphNode, ChildRef, Attribute, SlotRef) is None
    assert decoded(data, monkeypatch, use_native=True) == ("error", "CorruptCheckpointError")


@needs_native
def test_c_decoder_merges_repeated_fields_as_protobuf_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node id written twice (last wins), two has_checkpoint_values messages (merged)."""
    child = b"\x0a\x06\x08\x05\x08\x01\x12\x00"  # node_id 5 then 1
    flags = b"\x2a\x02\x08\x01\x2a\x00"  # true, then an empty BoolValue: stays true
    node0 = child + flags
    data = b"\x0a" + bytes([len(node0)]) + node0 + b"\x0a\x00"
    ok, nodes = decoded(data, monkeypatch, use_native=True)
    assert ok == "ok" and nodes == decoded(data, monkeypatch, use_native=False)[1]
    assert nodes[0].children == (ChildRef(1, ""),) and nodes[0].has_checkpoint_values is True


def test_saved_graph_decodes_to_the_plan(tmp_path) -> None:
    """A model's graph written by a save and read back: same nodes, with either codec."""
    import torch

    import torchckpt
    from torchckpt.format import BundleReader
    from torchckpt.graph.keys import OBJECT_GRAPH_PROTO_KEY

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    prefix = str(tmp_path / "ckpt")
    torchckpt.Checkpoint(model=model, optimizer=opt).write(prefix)
    with BundleReader(prefix) as reader:
        data = reader.read_array(OBJECT_GRAPH_PROTO_KEY).item()
    graph = ObjectGraph.from_bytes(data)
    assert protobuf_bytes(graph) == data
    assert [n.attributes for n in graph.nodes if n.slot_variables]  # the optimizer node


def test_c_codec_is_built_where_the_test_command_requires_it(monkeypatch) -> None:
    """``scripts/test.sh`` sets TORCHCKPT_REQUIRE_NATIVE: the portable graph codec must
    have been compiled by the install; ``TORCHCKPT_NO_NATIVE`` turns it off when read."""
    import os

    if os.environ.get("TORCHCKPT_REQUIRE_NATIVE"):
        from torchckpt.graph import _wire_native  # noqa: F401  # raises if it was not built
    monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
    assert wire.accelerator() is None
    monkeypatch.delenv("TORCHCKPT_NO_NATIVE")
    assert wire.accelerator() is wire._native_mod


def test_values_below_equal_the_walk_up_reversed_edges_on_any_graph() -> None:
    """The one-pass answer for breadth-first numbered graphs equals the general walk on
    graphs with forward edges only, shared children, back edges and cycles."""
    import random

    from torchckpt.graph.object_graph import _holds_values_below_by_parents, holds_values_below

    rng = random.Random(3)
    for trial in range(300):
        n = rng.randrange(1, 40)
        back = trial % 3  # 0: forward edges only, 1: a few back edges, 2: many
        children = [[(j, str(j)) for j in range(n) if rng.random() < 0.1
                     and (j > i or back and rng.random() < 0.2 * back)] for i in range(n)]
        attributes = [["v"] if rng.random() < 0.2 else [] for _ in range(n)]
        slots = [["s"] if rng.random() < 0.05 else [] for _ in range(n)]
        assert holds_values_below(children, attributes, slots) == \
            _holds_values_below_by_parents(children, attributes, slots)
