"""The ``checkpoint`` state file in an object-store directory (``s3://bucket/run/checkpoint``).

The same text as a local state file (``state_file.py``), with the same rules:
paths are stored relative to the directory (``ckpt-3``), so a downloaded copy
opens with ``tf.train.latest_checkpoint``; on read they are joined to the
directory URL and refused (:class:`~torchckpt.errors.OutsideDirectoryError`)
when they lie outside it. Containment is lexical: object stores have no
symbolic links. The file is written with one PUT, which object stores make
visible whole (there is no temporary name and no rename).
"""

from __future__ import annotations

import re

from ..errors import CheckpointNotFoundError, OutsideDirectoryError
from . import storage
from .naming import index_path, prefix_of
from .state_file import STATE_FILENAME, CheckpointState, decode_state, listed_paths, render_state
from .storage import StorageOptions

_MAX_STATE_BYTES = 1 << 24  # a state file is small; never read an unbounded object


def contained_url(directory: str, named: str, state_url: str) -> str:
    """``named`` (as the state file stores it) as a URL inside ``directory``.

    Raises:
        OutsideDirectoryError: ``named`` lies outside ``directory``.
    """
    base = storage.normalize(directory)
    if storage.is_url(named):
        full = storage.normalize(named)
    elif named.startswith("/") or "\0" in named:
        full = ""
    else:
        full = storage.normalize(storage.join(base, named))
    if not full.startswith(base.rstrip("/") + "/"):
        raise OutsideDirectoryError(
            state_url, named, f"it names '{named}', which is outside '{directory}'; torchckpt "
            "does not follow a state file out of its directory")
    return full


def read_state(directory: str, latest_filename: str = STATE_FILENAME,
               storage_options: StorageOptions | None = None) -> CheckpointState | None:
    """As :func:`.state_file.read_state`, for a directory URL; paths come back as URLs."""
    url = storage.join(directory, latest_filename)
    storage.filesystem(url, storage_options).invalidate_cache(directory)
    raw = storage.read_bytes(url, storage_options, limit=_MAX_STATE_BYTES)
    if raw is None:
        return None
    return decode_state(raw, url, lambda named: contained_url(directory, named, url))


def _relative(directory: str, path: str) -> str:
    base = storage.normalize(directory).rstrip("/") + "/"
    full = storage.normalize(path) if storage.is_url(path) else path
    return full[len(base):] if full.startswith(base) else path


def write_state(directory: str, model_checkpoint_path: str,
                all_model_checkpoint_paths: list[str] | None = None, *,
                timestamps: list[float] | None = None, last_preserved_timestamp: float = 0.0,
                latest_filename: str = STATE_FILENAME,
                storage_options: StorageOptions | None = None) -> None:
    """As :func:`.state_file.write_state`: one PUT of the text, paths relative to ``directory``.

    Raises:
        CheckpointWriteError: the upload failed; the previous state file is intact.
    """
    paths = listed_paths(model_checkpoint_path, all_model_checkpoint_paths)
    state = CheckpointState(_relative(directory, model_checkpoint_path),
                            [_relative(directory, p) for p in paths],
                            list(timestamps or []), last_preserved_timestamp)
    storage.write_bytes(storage.join(directory, latest_filename),
                        render_state(state).encode("utf-8"), storage_options)


def existing_latest(directory: str, latest_filename: str = STATE_FILENAME,
                    storage_options: StorageOptions | None = None) -> str | None:
    """As :func:`.state_file.existing_latest`, for a directory URL."""
    state = read_state(directory, latest_filename, storage_options)
    if state is None:
        return None
    prefix = state.model_checkpoint_path
    if not storage.exists(index_path(prefix), storage_options):
        raise CheckpointNotFoundError(
            f"the state file '{storage.join(directory, latest_filename)}' names checkpoint "
            f"'{prefix}', but '{index_path(prefix)}' does not exist")
    return prefix


def resolve_prefix(path: str, storage_options: StorageOptions | None = None) -> str:
    """As :func:`.state_file.resolve_prefix`, for a URL: a prefix, a directory (its
    latest checkpoint) or the URL of a bundle file."""
    if storage.exists(index_path(path), storage_options):
        return path
    directory = path.rstrip("/")
    if storage.exists(storage.join(directory, STATE_FILENAME), storage_options):
        prefix = existing_latest(directory, storage_options=storage_options)
        if prefix is not None:  # None only if the state file was removed meanwhile
            return prefix
    alt = prefix_of(path)
    if alt != path and storage.exists(index_path(alt), storage_options):
        return alt
    raise CheckpointNotFoundError(f"no checkpoint at '{path}': '{index_path(path)}' does not exist")


def delete_checkpoint(directory: str, prefix: str,
                      storage_options: StorageOptions | None = None) -> None:
    """Delete the objects of ``prefix``, index first (``CheckpointManager``'s deletion).

    Raises:
        OutsideDirectoryError: ``prefix`` is not inside ``directory`` (never deleted).
    """
    contained_url(directory, prefix, storage.join(directory, STATE_FILENAME))
    storage.remove(storage.bundle_files(prefix, storage_options), storage_options)


def remove_leftovers(directory: str, numbered: re.Pattern[str], prefix: str,
                     named: set[str], storage_options: StorageOptions | None = None) -> None:
    """Objects of interrupted saves: data of numbered prefixes that have no index and that
    the state file does not name, and every object of ``prefix`` (about to be written)
    when the state file does not name it."""
    names = storage.list_names(directory, storage_options)
    indexed = {n[: -len(".index")] for n in names if n.endswith(".index")}
    stale = []
    for name in names:
        owner = prefix_of(name)
        if (owner != name and not name.endswith(".index") and numbered.fullmatch(owner)
                and owner not in indexed
                and storage.normalize(storage.join(directory, owner)) not in named):
            stale.append(storage.join(directory, name))
    storage.remove(stale, storage_options)
    if storage.normalize(prefix) not in named:
        delete_checkpoint(directory, prefix, storage_options)
