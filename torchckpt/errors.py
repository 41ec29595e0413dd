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
    """Well-formed bytes that use a feature torchckpt does not read (a dtype, compression, V1).

    A :class:`CorruptCheckpointError` for code that catches every unreadable file,
    but its message says what it is: ``cannot read checkpoint '...': ...``.
    """

    def __init__(self, path: str, what: str, *, key: str | bytes | None = None,
                 offset: int | None = None) -> None:
        super().__init__(path, what, key=key, offset=offset)
        where = f" for {_show_key(key)}" if key is not None else ""
        at = f" at offset {offset}" if offset is not None else ""
        self.args = (f"cannot read checkpoint '{self.path}': {what}{where}{at}",)


class OutsideDirectoryError(CorruptCheckpointError):
    """A ``checkpoint`` state file names a path outside its own directory.

    torchckpt never reads, writes or deletes such a path because a file said so
    (a copied TF1 run directory carries the absolute paths of the original
    one; a forged file could name anything). Pass the prefix explicitly to use it.

    Attributes:
        path: the state file.
        named: the path it names.
    """

    def __init__(self, path: str, named: str, what: str) -> None:
        self.named = named
        super().__init__(path, what)


class CheckpointWriteError(TorchckptError, OSError):
    """Writing, syncing or renaming a checkpoint file failed (disk full, permissions, ...).

    An ``OSError`` too, with ``errno`` and ``filename`` set, so ``except OSError``
    and ``errno.ENOSPC`` checks work; its message names the file.
    """


class RemoteStorageUnavailableError(TorchckptError, ImportError):
    """A URL needs fsspec or a backend for its scheme that is not installed; the message
    names the extra to install (``pip install 'torchckpt[remote]'``)."""


class CheckpointLockedError(TorchckptError):
    """Another :class:`~torchckpt.CheckpointManager` already manages the directory."""


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


class InvalidValueError(TorchckptError, ValueError):
    """A value from a checkpoint that its live owner does not accept (type or range).

    The bytes decoded (checksums matched), so this is not a
    :class:`CorruptCheckpointError`; it is what a forged file, or one written
    for differently configured objects, looks like: an int attribute holding a
    complex number, a NaN learning rate, a loader counter past the end of its
    epoch, a generator state of the wrong size. It is raised at restore, before
    the owner is changed, so the live object keeps its values.

    Attributes:
        what: expected versus found, in words.
        field: where in the owner's state the value sits (``param_groups[0].lr``), if
            the value is part of a structure.
        path: the file it was read from (None when the state did not come from a file,
            e.g. a direct ``load_state_dict`` call).
        key: the checkpoint key it was read from, if any.
    """

    def __init__(self, what: str, *, field: str | None = None, path: str | None = None,
                 key: str | bytes | None = None) -> None:
        self.what = what
        self.field = field
        self.path = None if path is None else str(path)
        self.key = key
        in_file = f" in checkpoint '{self.path}'" if self.path is not None else ""
        for_key = f" for {_show_key(key)}" if key is not None else ""
        at = f" at {field}" if field else ""
        super().__init__(f"invalid value{in_file}{for_key}{at}: {what}")

    def located(self, path: str, key: str | bytes) -> "InvalidValueError":
        """This refusal, naming the file and checkpoint key the state came from."""
        return InvalidValueError(self.what, field=self.field, path=path, key=key)


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
