"""The ``TrackableObjectGraph`` wire encoding, written by hand for speed.

A model of 50,000 tensors has 50,000 nodes; building the message through the
protobuf classes costs ~7 us a node (a Python call per field), more than
writing the tensors. This encoder joins precomputed byte pieces instead and
produces exactly the bytes the protobuf serializer produces (fields in number
order, proto3 defaults omitted, ``has_checkpoint_values`` a ``BoolValue``
written even when false); tests compare the two on random graphs.

Field numbers (``tensorflow/core/protobuf/trackable_object_graph.proto``)::

    TrackableObjectGraph   { repeated TrackableObject nodes = 1; }
    TrackableObject        { repeated ObjectReference children = 1;
                             repeated SerializedTensor attributes = 2;
                             repeated SlotVariableReference slot_variables = 3;
                             BoolValue has_checkpoint_values = 5; }
    ObjectReference        { int32 node_id = 1; string local_name = 2; }
    SerializedTensor       { string name = 1; string full_name = 2;
                             string checkpoint_key = 3; }
    SlotVariableReference  { int32 original_variable_node_id = 1;
                             string slot_name = 2; int32 slot_variable_node_id = 3; }
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..format._coding import put_varint

try:  # the optional C codec (setup.py); the Python one below where it is not built
    from . import _wire_native as _native_mod  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build
    _native_mod = None


def accelerator() -> Any:
    """The C codec, unless it is missing or ``TORCHCKPT_NO_NATIVE`` is set now (read on
    each use, as :func:`torchckpt.format._io.accelerator` reads it)."""
    return None if os.environ.get("TORCHCKPT_NO_NATIVE") else _native_mod


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of ``n`` (a negative int32 takes ten bytes, as in protobuf)."""
    return put_varint(n + (1 << 64) if n < 0 else n)


# --- bulk encoding -------------------------------------------------------------------------
# The graph is built as one ``str`` whose characters are bytes (latin-1), then encoded once:
# a %-format per record instead of a dozen bytes concatenations. Names that are not ASCII
# are turned into their UTF-8 bytes as latin-1 characters first.

_ONE_BYTE = [chr(n) for n in range(0x80)]  # the varints of 0-127: one character each


def _v(n: int) -> str:
    return _ONE_BYTE[n] if 0 <= n < 0x80 else varint(n).decode("latin-1")


def _text(s: str) -> str:
    return s if s.isascii() else s.encode("utf-8").decode("latin-1")


def _string(tag: str, s: str) -> str:
    return "%s%s%s" % (tag, _v(len(s)), s) if s else ""


def _child_text(node_id: int, name: str) -> str:
    body = ("\x08" + _v(node_id) if node_id else "") + _string("\x12", name)
    return "\n%s%s" % (_v(len(body)), body)


_HAS_VALUES_TEXT = {True: "\x2a\x02\x08\x01", False: "\x2a\x00", None: ""}


def encode_graph(children: Sequence[Sequence[tuple[int, str]]],
                 attributes: Sequence[Sequence[tuple[str, str, str]]],
                 slots: Sequence[Sequence[tuple[int, str, int]]],
                 has_values: Sequence[bool | None]) -> bytes:
    """The ``TrackableObjectGraph`` of parallel per-node lists: ``(node_id, local_name)``
    children, ``(name, checkpoint_key, full_name)`` attributes, ``(variable node,
    slot name, slot node)`` slot references and ``has_checkpoint_values`` flags.

    The bytes protobuf's serializer produces (fields in number order, proto3
    defaults omitted); the C codec where built, else :func:`encode_graph_python`.
    """
    native = accelerator()
    if native is not None:
        return bytes(native.encode_graph(children, attributes, slots, has_values))
    return encode_graph_python(children, attributes, slots, has_values)


def encode_graph_python(children: Sequence[Sequence[tuple[int, str]]],
                 attributes: Sequence[Sequence[tuple[str, str, str]]],
                 slots: Sequence[Sequence[tuple[int, str, int]]],
                 has_values: Sequence[bool | None]) -> bytes:
    """:func:`encode_graph` in Python: one string operation per record."""
    out: list[str] = []
    append = out.append
    for i, kids in enumerate(children):
        parts = [_child_text(node_id, _text(name)) for node_id, name in kids]
        for name, key, full_name in attributes[i]:
            body = (_string("\n", _text(name)) + _string("\x12", _text(full_name))
                    + _string("\x1a", _text(key)))
            parts.append("\x12%s%s" % (_v(len(body)), body))
        for variable, slot_name, slot_node in slots[i]:
            body = (("\x08" + _v(variable) if variable else "") + _string("\x12", _text(slot_name))
                    + ("\x18" + _v(slot_node) if slot_node else ""))
            parts.append("\x1a%s%s" % (_v(len(body)), body))
        parts.append(_HAS_VALUES_TEXT[has_values[i]])
        body = "".join(parts)
        append("\n%s%s" % (_v(len(body)), body))
    return "".join(out).encode("latin-1")


def decode_graph(data: bytes, node_type: type, child_type: type, attribute_type: type,
                 slot_type: type, *, full_names: bool = True) -> list[Any] | None:
    """The nodes of a serialized graph, decoded by the C codec: ``node_type`` objects
    made without ``__init__``, their ``children``, ``attributes`` and ``slot_variables``
    tuples of the given record types, ``has_checkpoint_values`` and
    ``registered_saver`` (a name) set; attributes' ``full_name`` is ``""`` unless
    ``full_names`` (and then not decoded at all). ``None`` where the codec is not
    built, or leaves the bytes to protobuf (anything malformed or unusual, which
    protobuf then decodes or reports, and graphs that refer to a node that does not
    exist, which :meth:`ObjectGraph.from_bytes` reports)."""
    native = accelerator()
    if native is None:
        return None
    return native.decode_graph(data, node_type, child_type, attribute_type,  # type: ignore[no-any-return]
                               slot_type, full_names)
