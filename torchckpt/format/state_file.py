"""The ``checkpoint`` state file: which prefixes exist in a directory and which is newest.

Mirrors ``tensorflow/python/checkpoint/checkpoint_management.py`` and
``python/training/checkpoint_state.proto``. The file is a ``CheckpointState``
in protobuf *text* format::

    model_checkpoint_path: "ckpt-4"
    all_model_checkpoint_paths: "ckpt-3"
    all_model_checkpoint_paths: "ckpt-4"
    all_model_checkpoint_timestamps: 1795676965.6201236
    all_model_checkpoint_timestamps: 1795676965.679651
    last_preserved_timestamp: 1795676964.5503864

TF2 writes paths relative to the directory (so a moved directory still works);
TF1's Saver writes absolute ones. On read, relative paths are joined to the
directory that holds the file. Writes go to ``checkpoint.tmp<hex>`` then
``os.replace`` (TF's ``atomic_write_string_to_file``).

Containment, unlike TF: every path the file names must lie inside the
directory that holds it, or :func:`read_state` raises
:class:`~torchckpt.errors.OutsideDirectoryError`. Every entry point that
follows a state file (restore, the reader, the CLI, ``CheckpointManager``, which
deletes what the file lists) goes through :func:`read_state`, so nothing is
ever read, written or deleted outside a checkpoint's directory because a file
said so. A copied TF1 run directory, whose file carries the original
directory's absolute paths, is refused with a hint naming the same prefix in
the copy when it exists.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Callable

from google.protobuf import text_format

from ..errors import CheckpointNotFoundError, CorruptCheckpointError, OutsideDirectoryError
from . import protos
from ._files import os_errors_name
from .naming import index_path, prefix_of
from .storage import StorageOptions, is_remote, local_path

STATE_FILENAME = "checkpoint"


@dataclass(frozen=True)
class CheckpointState:
    """A parsed state file; paths are as stored (possibly relative)."""

    model_checkpoint_path: str
    all_model_checkpoint_paths: list[str] = field(default_factory=list)
    all_model_checkpoint_timestamps: list[float] = field(default_factory=list)
    last_preserved_timestamp: float = 0.0


def render_state(state: CheckpointState) -> str:
    """The text TF writes for ``state`` (``text_format.MessageToString``)."""
    msg = protos.CheckpointState(
        model_checkpoint_path=state.model_checkpoint_path,
        all_model_checkpoint_paths=state.all_model_checkpoint_paths,
        all_model_checkpoint_timestamps=state.all_model_checkpoint_timestamps,
        last_preserved_timestamp=state.last_preserved_timestamp)
    return protos.to_text(msg)


def parse_state(text: str, path: str = STATE_FILENAME) -> CheckpointState:
    """Parse state-file text.

    Raises:
        CorruptCheckpointError: unparseable text, or an empty ``model_checkpoint_path``.
    """
    msg = protos.CheckpointState()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise CorruptCheckpointError(path, f"unparseable checkpoint state file: {exc}") from exc
    if not msg.model_checkpoint_path:
        raise CorruptCheckpointError(path, "invalid checkpoint state: "
                                     "model_checkpoint_path is empty")
    return CheckpointState(msg.model_checkpoint_path, list(msg.all_model_checkpoint_paths),
                           list(msg.all_model_checkpoint_timestamps),
                           msg.last_preserved_timestamp)


def contained_path(directory: str, named: str, state_path: str) -> str:
    """``named`` (as a state file stores it) joined to ``directory``, checked to lie inside it.

    The check is lexical (after ``..`` is folded) and, for the parent
    directory of the named prefix, also through symbolic links.

    Raises:
        OutsideDirectoryError: ``named`` is outside ``directory`` (names both).
    """
    full = named if os.path.isabs(named) else os.path.join(directory, named)
    base = os.path.abspath(directory or ".")
    target = os.path.normpath(os.path.join(base, full))
    inside = "\0" not in named and target != base and _is_within(base, target)
    if inside:  # a symlinked subdirectory must not lead out either
        inside = _is_within(os.path.realpath(base), os.path.realpath(os.path.dirname(target)))
    if not inside:
        moved = os.path.join(directory, os.path.basename(target))
        hint = (f"; '{moved}' exists here: pass it explicitly if it is the one you mean"
                if os.path.isfile(index_path(moved)) else "")
        raise OutsideDirectoryError(
            state_path, named, f"it names '{named}', which is outside '{directory or '.'}'; "
            f"torchckpt does not follow a state file out of its directory{hint}")
    return full


def _is_within(base: str, target: str) -> bool:
    """Whether ``target`` is ``base`` or below it (both absolute and normalized)."""
    try:
        return os.path.commonpath([base, target]) == base
    except ValueError:  # different drives (Windows)
        return False


def read_state(directory: str, latest_filename: str = STATE_FILENAME, *,
               storage_options: StorageOptions | None = None) -> CheckpointState | None:
    """The directory's state with resolved paths, or None when there is no state file.

    ``directory`` may be an object-store URL (``remote_state.py``); its paths
    then come back as URLs.

    Raises:
        CorruptCheckpointError: the file is unreadable or malformed.
        OutsideDirectoryError: it names a path outside ``directory`` (see the
            module docstring).
    """
    if is_remote(directory):
        from . import remote_state
        return remote_state.read_state(directory, latest_filename, storage_options)
    directory = local_path(directory)
    path = os.path.join(directory, latest_filename)
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 24)  # a state file is small; never read an unbounded file
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return decode_state(raw, path, lambda named: contained_path(directory, named, path))


def decode_state(raw: bytes, path: str, contain: Callable[[str], str]) -> CheckpointState:
    """Parse state-file bytes read from ``path``; each path it names goes through
    ``contain`` (which joins it to the directory, or raises ``OutsideDirectoryError``).

    Raises:
        CorruptCheckpointError: not UTF-8, or not a valid state file.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(path, "checkpoint state file is not UTF-8 text") from exc
    state = parse_state(text, path)
    return CheckpointState(contain(state.model_checkpoint_path),
                           [contain(p) for p in state.all_model_checkpoint_paths],
                           list(state.all_model_checkpoint_timestamps),
                           state.last_preserved_timestamp)


def listed_paths(model_checkpoint_path: str, all_model_checkpoint_paths: list[str] | None
                 ) -> list[str]:
    """``all_model_checkpoint_paths`` ending with the newest, as TF keeps them."""
    paths = list(all_model_checkpoint_paths or [])
    if not paths or paths[-1] != model_checkpoint_path:
        paths = [p for p in paths if p != model_checkpoint_path] + [model_checkpoint_path]
    return paths


def _relative(directory: str, path: str) -> str:
    if not os.path.isabs(path):
        return path
    try:
        rel = os.path.relpath(path, directory)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith(os.pardir) else rel


def write_state(directory: str, model_checkpoint_path: str,
                all_model_checkpoint_paths: list[str] | None = None, *,
                timestamps: list[float] | None = None, last_preserved_timestamp: float = 0.0,
                latest_filename: str = STATE_FILENAME, sync: bool = True,
                storage_options: StorageOptions | None = None) -> None:
    """Atomically (re)write the state file with paths relative to ``directory``
    (for a directory URL: one PUT, see ``remote_state.py``).

    Raises:
        CheckpointWriteError: the write failed (names the file); the previous
            state file is intact.
    """
    if is_remote(directory):
        from . import remote_state
        remote_state.write_state(directory, model_checkpoint_path, all_model_checkpoint_paths,
                                 timestamps=timestamps,
                                 last_preserved_timestamp=last_preserved_timestamp,
                                 latest_filename=latest_filename, storage_options=storage_options)
        return
    directory = local_path(directory)
    model_checkpoint_path = local_path(model_checkpoint_path)
    all_model_checkpoint_paths = [local_path(p) for p in all_model_checkpoint_paths or []]
    paths = listed_paths(model_checkpoint_path, all_model_checkpoint_paths)
    state = CheckpointState(_relative(directory, model_checkpoint_path),
                            [_relative(directory, p) for p in paths],
                            list(timestamps or []), last_preserved_timestamp)
    final = os.path.join(directory, latest_filename)
    tmp = f"{final}.tmp{secrets.token_hex(16)}"
    try:
        with os_errors_name(tmp):
            os.makedirs(directory or ".", exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(render_state(state))
                f.flush()
                if sync:
                    os.fsync(f.fileno())
            os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def state_temp_files(directory: str, latest_filename: str = STATE_FILENAME) -> list[str]:
    """Temporary state files an interrupted :func:`write_state` (or TF's
    ``atomic_write_string_to_file``: ``.tmp`` + 32 hex digits) left in ``directory``."""
    pattern = re.compile(re.escape(latest_filename) + r"\.tmp[0-9a-f]{32}")
    try:
        names = os.listdir(directory or ".")
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(os.path.join(directory, n) for n in names if pattern.fullmatch(n))


def latest_checkpoint(directory: str, latest_filename: str = STATE_FILENAME, *,
                      storage_options: StorageOptions | None = None) -> str | None:
    """``tf.train.latest_checkpoint``: the newest prefix whose ``.index`` exists, else None.

    A dangling prefix yields None; one outside ``directory`` raises
    :class:`~torchckpt.errors.OutsideDirectoryError` (:func:`read_state`). For
    a directory URL the prefix is a URL.
    """
    try:
        return existing_latest(directory, latest_filename, storage_options=storage_options)
    except CheckpointNotFoundError:
        return None


def existing_latest(directory: str, latest_filename: str = STATE_FILENAME, *,
                    storage_options: StorageOptions | None = None) -> str | None:
    """The prefix ``directory``'s state file names as newest; None without a state file.

    Stricter than :func:`latest_checkpoint`: a named prefix without an ``.index``
    is an error, so that a run never silently starts over.

    Raises:
        CheckpointNotFoundError: the named prefix does not exist.
        CorruptCheckpointError, OutsideDirectoryError: see :func:`read_state`.
    """
    if is_remote(directory):
        from . import remote_state
        return remote_state.existing_latest(directory, latest_filename, storage_options)
    state = read_state(directory, latest_filename)
    if state is None:
        return None
    prefix = state.model_checkpoint_path
    if not os.path.isfile(index_path(prefix)):
        raise CheckpointNotFoundError(
            f"the state file '{os.path.join(directory, latest_filename)}' names checkpoint "
            f"'{prefix}', but '{index_path(prefix)}' does not exist")
    return prefix


def resolve_prefix(path: str, *, storage_options: StorageOptions | None = None) -> str:
    """The checkpoint prefix ``path`` stands for: a prefix, a directory (its latest
    checkpoint, as ``tf.train`` takes it) or the name of a bundle file
    (``ckpt-1.index``, ``ckpt-1.data-00000-of-00001``).

    The one resolver of every entry point (restore, the reader, the CLI), so the
    containment rule of :func:`read_state` holds for all of them. An
    object-store URL resolves to a URL (``remote_state.py``); a ``file://`` URL
    to its local path.

    Raises:
        CheckpointNotFoundError: nothing to open at ``path``.
        CorruptCheckpointError, OutsideDirectoryError: a bad state file.
    """
    if is_remote(path):
        from . import remote_state
        return remote_state.resolve_prefix(path, storage_options)
    path = local_path(path)
    if os.path.isfile(index_path(path)):
        return path
    if os.path.isdir(path):
        prefix = existing_latest(path)
        if prefix is None:
            raise CheckpointNotFoundError(f"no checkpoint in directory '{path}': it has no "
                                          f"'{STATE_FILENAME}' state file")
        return prefix
    alt = prefix_of(path)
    if alt != path and os.path.isfile(index_path(alt)):
        return alt
    raise CheckpointNotFoundError(f"no checkpoint at '{path}': '{index_path(path)}' does not exist")
