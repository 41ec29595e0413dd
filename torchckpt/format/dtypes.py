"""TensorFlow ``DataType`` values and how their elements sit in a ``.data`` file.

Mirrors ``tensorflow/core/framework/types.proto``. Each fixed-width type maps to
a numpy *storage* dtype: the dtype whose bytes are the element bytes. numpy has
no bfloat16 or float8, so those are stored as ``<u2``/``u1`` bit patterns and
reinterpreted by the torch adapter (``tensor.view(torch.bfloat16)``). Sub-byte
types (int4, float4, ...) take one byte per element on disk, unpacked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DataType(enum.IntEnum):
    """``tensorflow.DataType`` enum values (types.proto)."""

    DT_INVALID = 0
    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_QINT8 = 11
    DT_QUINT8 = 12
    DT_QINT32 = 13
    DT_BFLOAT16 = 14
    DT_QINT16 = 15
    DT_QUINT16 = 16
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_RESOURCE = 20
    DT_VARIANT = 21
    DT_UINT32 = 22
    DT_UINT64 = 23
    DT_FLOAT8_E5M2 = 24
    DT_FLOAT8_E4M3FN = 25
    DT_FLOAT8_E4M3FNUZ = 26
    DT_FLOAT8_E4M3B11FNUZ = 27
    DT_FLOAT8_E5M2FNUZ = 28
    DT_INT4 = 29
    DT_UINT4 = 30
    DT_INT2 = 31
    DT_UINT2 = 32
    DT_FLOAT4_E2M1FN = 33


@dataclass(frozen=True, slots=True)
class DTypeInfo:
    """How one fixed-width TF dtype is stored.

    Attributes:
        dtype: the TF enum value.
        name: TF's Python name (``tf.DType.name``), e.g. ``"bfloat16"``.
        storage: numpy dtype whose bytes are the element bytes (little-endian).
        exact: True when ``storage`` *is* the element type (False for bit patterns).
        reassemblable: TF can copy slices of this dtype together (tensor_slice_set).
    """

    dtype: DataType
    name: str
    storage: np.dtype
    exact: bool
    reassemblable: bool

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize


def _info(dt: DataType, name: str, storage: str, exact: bool = True,
          reassemblable: bool = True) -> DTypeInfo:
    return DTypeInfo(dt, name, np.dtype(storage), exact, reassemblable)


D = DataType
# TF's reassembly (tensor_slice_util / tensor_slice_set) supports only some dtypes;
# the others may be sliced on disk but TF cannot read them back whole.
FIXED_WIDTH: dict[DataType, DTypeInfo] = {
    i.dtype: i
    for i in (
        _info(D.DT_FLOAT, "float32", "<f4"),
        _info(D.DT_DOUBLE, "float64", "<f8"),
        _info(D.DT_INT32, "int32", "<i4"),
        _info(D.DT_UINT8, "uint8", "u1"),
        _info(D.DT_INT16, "int16", "<i2"),
        _info(D.DT_INT8, "int8", "i1"),
        _info(D.DT_COMPLEX64, "complex64", "<c8"),
        _info(D.DT_INT64, "int64", "<i8"),
        _info(D.DT_BOOL, "bool", "?"),
        _info(D.DT_QINT8, "qint8", "i1"),
        _info(D.DT_QUINT8, "quint8", "u1"),
        _info(D.DT_QINT32, "qint32", "<i4"),
        _info(D.DT_BFLOAT16, "bfloat16", "<u2", exact=False),
        _info(D.DT_QINT16, "qint16", "<i2", reassemblable=False),
        _info(D.DT_QUINT16, "quint16", "<u2", reassemblable=False),
        _info(D.DT_UINT16, "uint16", "<u2", reassemblable=False),
        _info(D.DT_COMPLEX128, "complex128", "<c16"),
        _info(D.DT_HALF, "float16", "<f2", reassemblable=False),
        _info(D.DT_UINT32, "uint32", "<u4", reassemblable=False),
        _info(D.DT_UINT64, "uint64", "<u8", reassemblable=False),
        _info(D.DT_FLOAT8_E5M2, "float8_e5m2", "u1", exact=False, reassemblable=False),
        _info(D.DT_FLOAT8_E4M3FN, "float8_e4m3fn", "u1", exact=False, reassemblable=False),
        _info(D.DT_FLOAT8_E4M3FNUZ, "float8_e4m3fnuz", "u1", exact=False, reassemblable=False),
        _info(D.DT_FLOAT8_E4M3B11FNUZ, "float8_e4m3b11fnuz", "u1", exact=False,
              reassemblable=False),
        _info(D.DT_FLOAT8_E5M2FNUZ, "float8_e5m2fnuz", "u1", exact=False, reassemblable=False),
        _info(D.DT_INT4, "int4", "i1", exact=False),
        _info(D.DT_UINT4, "uint4", "u1", exact=False),
        _info(D.DT_INT2, "int2", "i1", exact=False, reassemblable=False),
        _info(D.DT_UINT2, "uint2", "u1", exact=False, reassemblable=False),
        _info(D.DT_FLOAT4_E2M1FN, "float4_e2m1fn", "u1", exact=False, reassemblable=False),
    )
}
del D

# numpy dtype -> TF dtype for the types numpy holds natively.
_FROM_NUMPY: dict[np.dtype, DataType] = {
    info.storage: info.dtype for info in FIXED_WIDTH.values()
    if info.exact and not info.name.startswith("q")
}


# TF's Python names (``tf.DType.name``) of the dtypes that have no fixed width.
_OTHER_NAMES: dict[int, str] = {DataType.DT_STRING: "string", DataType.DT_VARIANT: "variant",
                                DataType.DT_RESOURCE: "resource", DataType.DT_INVALID: "invalid"}


def dtype_name(dtype: int) -> str:
    """TF's Python name of a dtype value (``tf.DType.name``: ``"float32"``, ``"string"``,
    ``"variant"``), or ``"DT_<n>"`` for a value this version does not know."""
    info: DTypeInfo | None = FIXED_WIDTH.get(dtype)  # type: ignore[call-overload]
    if info is not None:
        return info.name
    other = _OTHER_NAMES.get(dtype)
    return other if other is not None else f"DT_<{dtype}>"


def has_array_form(dtype: int) -> bool:
    """Whether values of ``dtype`` decode to an array: strings and fixed-width types.

    Others (DT_VARIANT such as a ``tf.data`` iterator's state, DT_RESOURCE, values
    newer than this table) are opaque bytes: listed and checksummed, never decoded.
    """
    return dtype == DataType.DT_STRING or dtype in FIXED_WIDTH


def enum_name(dtype: int) -> str:
    """The ``DataType`` enum name (``"DT_FLOAT"``, ``"DT_VARIANT"``), as TF's
    ``debug_string`` and ``inspect_checkpoint`` print it; ``"DT_<n>"`` if unknown."""
    try:
        return DataType(dtype).name
    except ValueError:
        return f"DT_<{dtype}>"


def from_numpy_dtype(dtype: np.dtype) -> DataType:
    """The TF dtype of a numpy dtype; object/bytes arrays are DT_STRING.

    Raises:
        TypeError: numpy dtype with no TF counterpart.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "OS":
        return DataType.DT_STRING
    found = _FROM_NUMPY.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if found is None:
        raise TypeError(f"numpy dtype {dtype} has no TensorFlow counterpart")
    return found
