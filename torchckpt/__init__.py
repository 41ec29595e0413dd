"""torchckpt: PyTorch-native checkpointing in TensorFlow's checkpoint format.

The public API is what ``__all__`` lists; the layer packages (``format``,
``graph``, ``adapters``) are internal, with no stability guarantee.

Names are imported from their modules on first use (PEP 562), so that
``import torchckpt.format`` stays free of torch and ``import torchckpt`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AssignmentMapError,
    CheckpointLockedError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    ChecksumMismatchError,
    ConversionError,
    CorruptCheckpointError,
    InvalidValueError,
    KeyNotFoundError,
    MismatchError,
    OutsideDirectoryError,
    RemoteStorageUnavailableError,
    TorchckptError,
    UnmatchedError,
    UnsupportedFormatError,
    UntrackableError,
)

# Public name -> the module (relative to this package) that defines it.
_LAZY: dict[str, str] = {
    # object-based checkpointing, like tf.train.Checkpoint
    "Checkpoint": "checkpoint",
    "CheckpointOptions": "checkpoint",
    "RestoreStatus": "graph.status",
    "MatchReport": "graph.status",
    # resuming training, like tf.train.CheckpointManager
    "CheckpointManager": "manager",
    "RNGState": "rng",
    # torch.distributed: per-rank state, and the errors of collective saves
    "PerRank": "distributed.per_rank",
    "DistributedCheckpointError": "distributed.errors",
    "CollectiveTimeoutError": "distributed.errors",
    # reader side, like tf.train.load_checkpoint & co.
    "CheckpointReader": "reader",
    "latest_checkpoint": "reader",
    "list_variables": "reader",
    "load_checkpoint": "reader",
    "load_variable": "reader",
    # TF checkpoints into torch modules (torchckpt.convert.load_tf_weights)
    "convert_tf_checkpoint": "convert",
    "ConversionReport": "convert",
    # plain nested state dicts (torch.save / torch.load without pickle)
    "save_state_dict": "state_dict",
    "load_state_dict": "state_dict",
}

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, CheckpointOptions
    from .convert import ConversionReport, convert_tf_checkpoint
    from .distributed.errors import CollectiveTimeoutError, DistributedCheckpointError
    from .distributed.per_rank import PerRank
    from .graph.status import MatchReport, RestoreStatus
    from .manager import CheckpointManager
    from .reader import (
        CheckpointReader,
        latest_checkpoint,
        list_variables,
        load_checkpoint,
        load_variable,
    )
    from .rng import RNGState
    from .state_dict import load_state_dict, save_state_dict

__all__ = [
    # object-based checkpointing
    "Checkpoint", "CheckpointOptions", "RestoreStatus", "MatchReport",
    # resuming training
    "CheckpointManager", "RNGState",
    # torch.distributed
    "PerRank", "DistributedCheckpointError", "CollectiveTimeoutError",
    # reader
    "CheckpointReader", "latest_checkpoint", "list_variables", "load_checkpoint", "load_variable",
    # converter
    "convert_tf_checkpoint", "ConversionReport",
    # errors
    "TorchckptError", "CorruptCheckpointError", "ChecksumMismatchError", "UnsupportedFormatError",
    "CheckpointNotFoundError", "KeyNotFoundError", "MismatchError", "UntrackableError",
    "OutsideDirectoryError", "CheckpointWriteError", "CheckpointLockedError", "InvalidValueError",
    "UnmatchedError", "ConversionError", "AssignmentMapError", "RemoteStorageUnavailableError",
    # plain nested state dicts, like torch.save / torch.load
    "save_state_dict", "load_state_dict",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
