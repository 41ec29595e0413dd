"""The torchckpt exception hierarchy.

Every error that torchckpt raises for bad input or a user mistake is a
:class:`TorchckptError`. Messages name the file and, where there is one, the
checkpoint key, so that a failure in a long training run can be traced to the
byte that caused it. This module imports nothing from torchckpt.
"""

from __future__ import annotations


class TorchckptError(Exception):
    """Root of every error torchckpt raises on purpose."""


class CorruptCheckpointError(TorchckptError):
    """A checkpoint file is damaged, truncated or not in TensorFlow's format.

    Attributes:
        path: the file that failed to decode.
        what: what was wrong, in words.
        key: the checkpoint key being decoded, if any.
        offset: the byte offset in ``path`` where the problem was found, if known.
    """

    def __init__(self, path: str, what: str, *, key: str | bytes | None = None,
                 offset: int | None = None) -> None:
        self.path = str(path)
        self.what = what
        self.key = key
        self.offset = offset
        where = f" for {_show_key(key)}" if key is not None else ""
        at = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"corrupt checkpoint '{self.path}': {what}{where}{at}")


class ChecksumMismatchError(CorruptCheckpointError):
    """A stored CRC32C does not match the bytes it covers."""


class UnsupportedFormatError(CorruptCheckpointError):
    """Well-formed bytes that use a feature torchckpt does not read (a dtype, compression, V1)."""


class CheckpointNotFoundError(TorchckptError, FileNotFoundError):
    """No checkpoint exists at the given path or directory."""


class KeyNotFoundError(TorchckptError, KeyError):
    """A tensor key is not in the checkpoint."""

    def __init__(self, path: str, key: str | bytes) -> None:
        self.path = str(path)
        self.key = key
        super().__init__(f"key {_show_key(key)} not found in checkpoint '{self.path}'")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class MismatchError(TorchckptError, ValueError):
    """A checkpoint value does not fit the live object (shape or dtype)."""

    def __init__(self, key: str, what: str, *, saved: object, live: object) -> None:
        self.key = key
        self.saved = saved
        self.live = live
        super().__init__(f"{what} mismatch for {_show_key(key)}: checkpoint has {saved}, "
                         f"live object has {live}")


class UntrackableError(TorchckptError, TypeError):
    """A value handed to ``Checkpoint`` cannot be saved."""


class UnmatchedError(TorchckptError, AssertionError):
    """A restore-status assertion failed; lists what did not match on each side.

    Subclasses ``AssertionError`` only so that code written against TF's status
    objects (which raise ``AssertionError``) keeps working.
    """

    def __init__(self, message: str, *, unused_in_checkpoint: list[str] | None = None,
                 unmatched_live: list[str] | None = None, pending: list[str] | None = None) -> None:
        self.unused_in_checkpoint = list(unused_in_checkpoint or [])
        self.unmatched_live = list(unmatched_live or [])
        self.pending = list(pending or [])
        super().__init__(message)


class ConversionError(UnmatchedError):
    """``load_tf_weights(..., strict=True)`` left names unmatched or found values that do not fit.

    Attributes:
        unused_in_checkpoint: checkpoint keys that fed nothing.
        unmatched_live: torch ``state_dict`` names (and optimizer state) left without a value.
        report: the full :class:`~torchckpt.convert.ConversionReport`.
    """

    def __init__(self, message: str, *, unused_in_checkpoint: list[str] | None = None,
                 unmatched_live: list[str] | None = None, report: object = None) -> None:
        super().__init__(message, unused_in_checkpoint=unused_in_checkpoint,
                         unmatched_live=unmatched_live)
        self.report = report


class AssignmentMapError(TorchckptError, ValueError):
    """An ``assignment_map`` entry is malformed (bad regular expression or target)."""


def _show_key(key: str | bytes) -> str:
    if isinstance(key, bytes):
        try:
            return repr(key.decode("utf-8"))
        except UnicodeDecodeError:
            return repr(key)
    return repr(key)
