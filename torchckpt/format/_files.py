"""File-system helpers of the commit protocols: durable renames and errors that name the file."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from ..errors import CheckpointWriteError


def fsync_dir(path: str) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def os_errors_name(path: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into a :class:`CheckpointWriteError` naming ``path``.

    Why: ``os.write`` and ``os.fsync`` on a full disk raise ``OSError(ENOSPC)``
    with no file name, which in a training log says nothing about which
    checkpoint failed. The result is still an ``OSError`` with the same errno.
    """
    try:
        yield
    except CheckpointWriteError:
        raise
    except OSError as exc:
        where = exc.filename if exc.filename is not None else path
        raise CheckpointWriteError(exc.errno, f"checkpoint file operation failed "
                                   f"({exc.strerror or exc})", where) from exc
