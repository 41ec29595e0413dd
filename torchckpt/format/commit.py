"""Committing a bundle: temporary files into place, crash-safe even over an existing prefix.

A save writes every file of bundle ``P`` under a temporary name that carries
one token for the whole save (``P.data-00000-of-00001.tempstate<token>``,
``P.index.tempstate<token>``; see ``naming.py``) and fsyncs it. Then
:func:`commit_bundle` renames them:

* **New prefix** (no ``P.index`` yet): the data files, then the index. The
  index is the commit marker (TF's protocol): a crash before its rename leaves
  no checkpoint ``P`` for any reader, and the previous ``latest`` stands.
* **Existing prefix** (``write()`` to a fixed prefix, a manager re-using a
  checkpoint number): renaming a new data file over the old one while the old
  index still names it would leave an index whose checksums fail, and if ``P``
  is the latest checkpoint, no complete latest checkpoint. So first the
  *commit record* ``P.commit`` (``COMMIT_RECORD_MAGIC`` and the token, written
  under a temporary name, fsynced and renamed) declares the new version
  complete; then the renames (data files, then index); then the record goes.
  Whoever opens ``P`` next through torchckpt (:func:`complete_commit`: every
  ``BundleReader``, every ``BundleWriter`` of ``P``, ``CheckpointManager``)
  finishes an interrupted commit first. A crash before the record is durable
  leaves the old version untouched; after, the new one is completed. Either
  way ``P`` is complete, and with ``sync`` that holds across power loss too.

TensorFlow knows nothing of the record: reading a prefix whose commit was
interrupted mid-rename needs one torchckpt open (or ``torchckpt verify``) first.

Data files of ``P`` with another shard count than the new version's are
removed after the commit, so a re-save with fewer shards leaves no stale ones.
"""

from __future__ import annotations

import glob
import os
import re

from ..errors import CorruptCheckpointError
from ._files import fsync_dir, os_errors_name
from .naming import DATA_GLOB, TEMP_INFIX, data_files, data_path, index_path, temp_path

COMMIT_RECORD_SUFFIX = ".commit"
# First bytes of a commit record; the token follows (decimal digits, one line).
COMMIT_RECORD_MAGIC = b"torchckpt-commit "
_RECORD_MAX_BYTES = 256  # a record is ~40 bytes; never read an unbounded file
_TOKEN = re.compile(rb"[0-9]{1,20}")


def record_path(prefix: str) -> str:
    """The commit record of ``prefix`` (present only while a re-save is being committed)."""
    return prefix + COMMIT_RECORD_SUFFIX


def commit_bundle(prefix: str, num_shards: int, token: str, *, sync: bool) -> None:
    """Rename the durable temporary files of one save of ``prefix`` into place.

    REQUIRES: ``P.index`` and every data shard exist, fsynced when ``sync``,
    under ``temp_path(final, token)``.

    Raises:
        CheckpointWriteError: an operation failed; names the file.
    """
    directory = os.path.dirname(prefix)
    record = record_path(prefix) if os.path.isfile(index_path(prefix)) else None
    try:
        if record is not None:
            _write_record(record, token, sync)
        else:  # a new prefix: the index rename is the commit
            _rename_all(prefix, token, sync, directory)
    except BaseException:
        discard_temps(prefix, token)  # nothing refers to them; the old version is intact
        raise
    if record is not None:  # from here on the new version is committed: never discard it
        _rename_all(prefix, token, sync, directory)
    keep = {data_path(prefix, s, num_shards) for s in range(num_shards)}
    for stale in data_files(prefix):
        if stale not in keep:
            with os_errors_name(stale):
                _unlink(stale)
    if record is not None:
        with os_errors_name(record):
            _unlink(record)
        if sync:
            fsync_dir(directory)


def complete_commit(prefix: str) -> bool:
    """Finish a commit of ``prefix`` that a crash interrupted; True if there was one.

    Raises:
        CorruptCheckpointError: the commit record is malformed.
        CheckpointWriteError: the renames failed (a read-only directory, say);
            names the file.
    """
    token = _recorded_token(prefix)
    if token is None:
        return False
    record = record_path(prefix)
    directory = os.path.dirname(prefix)
    _rename_all(prefix, token, True, directory)
    with os_errors_name(record):
        _unlink(record)
    fsync_dir(directory)
    return True


def discard_temps(prefix: str, token: str) -> None:
    """Remove the temporary files of the save ``token`` of ``prefix`` (a failed save),
    unless a commit record already names them: then they are the committed version."""
    if _recorded_token(prefix) == token:
        return
    suffix = glob.escape(TEMP_INFIX + token)
    for temp in glob.glob(glob.escape(prefix) + DATA_GLOB + suffix) + glob.glob(
            glob.escape(index_path(prefix)) + suffix):
        _unlink(temp)


def _recorded_token(prefix: str) -> str | None:
    """The token of ``prefix``'s commit record; None when there is none.

    Raises:
        CorruptCheckpointError: the record is malformed.
    """
    record = record_path(prefix)
    try:
        with open(record, "rb") as f:
            raw = f.read(_RECORD_MAX_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise CorruptCheckpointError(record, f"cannot read the commit record ({exc})") from exc
    token = raw[len(COMMIT_RECORD_MAGIC):].rstrip(b"\n")
    if not raw.startswith(COMMIT_RECORD_MAGIC) or not _TOKEN.fullmatch(token):
        raise CorruptCheckpointError(record, "not a torchckpt commit record (expected "
                                     f"{COMMIT_RECORD_MAGIC!r} and a decimal token)")
    return token.decode("ascii")


def _write_record(record: str, token: str, sync: bool) -> None:
    tmp = temp_path(record)
    with os_errors_name(tmp):
        try:
            with open(tmp, "wb") as f:
                f.write(COMMIT_RECORD_MAGIC + token.encode("ascii") + b"\n")
                f.flush()
                if sync:
                    os.fsync(f.fileno())
            os.replace(tmp, record)
        except BaseException:
            _unlink(tmp)
            raise
    if sync:
        fsync_dir(os.path.dirname(record))


def _rename_all(prefix: str, token: str, sync: bool, directory: str) -> None:
    """Rename ``prefix``'s temporary files of ``token``: data files first, the index last."""
    suffix = TEMP_INFIX + token
    temps = sorted(glob.glob(glob.escape(prefix) + DATA_GLOB + glob.escape(suffix)))
    index_temp = index_path(prefix) + suffix
    for temp in [*temps, index_temp]:
        if not os.path.lexists(temp):
            continue  # renamed before a crash (or, for the index, nothing to do)
        with os_errors_name(temp):
            os.replace(temp, temp[: -len(suffix)])
    if sync:
        fsync_dir(directory)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
