"""Layer 0: TensorFlow's checkpoint bytes (tensor bundle "V2"), with no torch.

Internal, no stability guarantee: the public API is re-exported from
``torchckpt``. This package imports only the standard library, numpy and
protobuf. See ``docs/format.md`` for the on-disk layout.
"""

from .bundle_reader import BundleReader, numel
from .bundle_writer import BundleWriter, write_index
from .dtypes import FIXED_WIDTH, DataType, DTypeInfo, dtype_name, from_numpy_dtype
from .naming import data_path, index_path
from .records import BundleEntry, BundleHeader, Extent, TensorSlice
from .state_file import STATE_FILENAME, CheckpointState, latest_checkpoint, read_state, write_state

__all__ = [
    "BundleReader", "BundleWriter", "write_index", "numel", "FIXED_WIDTH", "DataType",
    "DTypeInfo", "dtype_name", "from_numpy_dtype", "data_path", "index_path", "BundleEntry",
    "BundleHeader", "Extent", "TensorSlice", "STATE_FILENAME", "CheckpointState",
    "latest_checkpoint", "read_state", "write_state",
]
