"""Protobuf message classes built at import time in a private descriptor pool.

No protoc step and no generated ``_pb2`` modules: the schemas below are written
as ``FileDescriptorProto``s and turned into classes in a ``DescriptorPool`` of
our own, under the package ``torchckpt.tf``. Wire bytes do not contain package
names, so these classes read and write exactly what TensorFlow's
``tensorflow.*`` messages do, while TensorFlow's own registrations in the
default pool are never touched (both libraries can live in one process).

Schemas mirror TF 2.21: ``core/protobuf/trackable_object_graph.proto``,
``python/training/checkpoint_state.proto`` and ``core/protobuf/tensor_bundle.proto``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, text_format

try:
    from google.protobuf.message_factory import GetMessageClass as _get_class
except ImportError:  # protobuf < 4.21
    from google.protobuf import message_factory as _mf

    def _get_class(desc: Any) -> Any:
        return _mf.MessageFactory(desc.file.pool).GetPrototype(desc)

_PACKAGE = "torchckpt.tf"
_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING,
    "double": _F.TYPE_DOUBLE, "fixed32": _F.TYPE_FIXED32, "enum": _F.TYPE_ENUM,
}

# message name -> [(field name, number, type or "."-message, repeated?, oneof index)]
_SCHEMA: dict[str, list[tuple[str, int, str, bool]]] = {
    "BoolValue": [("value", 1, "bool", False)],
    "TrackableObjectGraph": [("nodes", 1, ".TrackableObject", True)],
    "TrackableObject": [
        ("children", 1, ".ObjectReference", True),
        ("attributes", 2, ".SerializedTensor", True),
        ("slot_variables", 3, ".SlotVariableReference", True),
        ("registered_saver", 4, ".RegisteredSaver", False),
        ("has_checkpoint_values", 5, ".BoolValue", False),
    ],
    "ObjectReference": [("node_id", 1, "int32", False), ("local_name", 2, "string", False)],
    "SerializedTensor": [("name", 1, "string", False), ("full_name", 2, "string", False),
                         ("checkpoint_key", 3, "string", False)],
    "SlotVariableReference": [("original_variable_node_id", 1, "int32", False),
                              ("slot_name", 2, "string", False),
                              ("slot_variable_node_id", 3, "int32", False)],
    "RegisteredSaver": [("name", 1, "string", False), ("object_name", 2, "string", False)],
    "CheckpointState": [
        ("model_checkpoint_path", 1, "string", False),
        ("all_model_checkpoint_paths", 2, "string", True),
        ("all_model_checkpoint_timestamps", 3, "double", True),
        ("last_preserved_timestamp", 4, "double", False),
    ],
    "VersionDef": [("producer", 1, "int32", False), ("min_consumer", 2, "int32", False),
                   ("bad_consumers", 3, "int32", True)],
    "BundleHeaderProto": [("num_shards", 1, "int32", False), ("endianness", 2, "int32", False),
                          ("version", 3, ".VersionDef", False)],
    "Dim": [("size", 1, "int64", False), ("name", 2, "string", False)],
    "TensorShapeProto": [("dim", 2, ".Dim", True), ("unknown_rank", 3, "bool", False)],
    "Extent": [("start", 1, "int64", False), ("length", 2, "int64", False)],
    "TensorSliceProto": [("extent", 1, ".Extent", True)],
    "BundleEntryProto": [
        ("dtype", 1, "int32", False), ("shape", 2, ".TensorShapeProto", False),
        ("shard_id", 3, "int32", False), ("offset", 4, "int64", False),
        ("size", 5, "int64", False), ("crc32c", 6, "fixed32", False),
        ("slices", 7, ".TensorSliceProto", True),
    ],
}


def _build_pool() -> descriptor_pool.DescriptorPool:
    fdp = descriptor_pb2.FileDescriptorProto(name="torchckpt_tf.proto", package=_PACKAGE,
                                             syntax="proto3")
    for msg_name, fields in _SCHEMA.items():
        msg = fdp.message_type.add(name=msg_name)
        if msg_name == "Extent":  # `length` lives in `oneof has_length`, so presence is kept
            msg.oneof_decl.add(name="has_length")
        for name, number, ftype, repeated in fields:
            f = msg.field.add(name=name, number=number)
            f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if ftype.startswith("."):
                f.type = _F.TYPE_MESSAGE
                f.type_name = f".{_PACKAGE}{ftype}"
            else:
                f.type = _TYPES[ftype]
            if msg_name == "Extent" and name == "length":
                f.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return pool


_POOL = _build_pool()


def _cls(name: str) -> Any:
    return _get_class(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


TrackableObjectGraph = _cls("TrackableObjectGraph")
CheckpointState = _cls("CheckpointState")
BundleHeaderProto = _cls("BundleHeaderProto")
BundleEntryProto = _cls("BundleEntryProto")


def serialize(message: Any) -> bytes:
    """Deterministic wire bytes (map fields sorted; none here, but kept explicit)."""
    data: bytes = message.SerializeToString(deterministic=True)
    return data


def to_text(message: Any) -> str:
    """Text format as ``text_format.MessageToString`` writes it (TF's state file)."""
    text: str = text_format.MessageToString(message)
    return text
