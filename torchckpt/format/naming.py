"""File names of a bundle (``tensorflow/core/util/tensor_bundle/naming.cc``).

A checkpoint *prefix* ``P`` names ``P.index`` and ``P.data-SSSSS-of-NNNNN``
(``%05d``). Temporary names carry a random suffix, like TF's ``.tempstate<N>``,
so a crashed save never leaves a file that a reader would take for a real one.
"""

from __future__ import annotations

import glob
import os
import secrets

TEMP_INFIX = ".tempstate"
# What follows a prefix in the name of any of its data files (glob syntax).
DATA_GLOB = ".data-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"


def index_path(prefix: str) -> str:
    return f"{prefix}.index"


def data_path(prefix: str, shard_id: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def new_token() -> str:
    """A fresh random token for the temporary names of one save."""
    return str(secrets.randbits(63))


def temp_path(final_path: str, token: str | None = None) -> str:
    """The sibling of ``final_path`` to write before renaming into place.

    The files of one bundle save share ``token``, so that an interrupted commit
    can find them (``commit.py``); without one, a fresh token makes the name unique.
    """
    return f"{final_path}{TEMP_INFIX}{token if token is not None else new_token()}"


def prefix_of(path: str) -> str:
    """The prefix of a bundle file name (``x.index`` or ``x.data-...``), else ``path``."""
    if path.endswith(".index"):
        return path[: -len(".index")]
    base, sep, tail = path.rpartition(".data-")
    if sep and "-of-" in tail:
        return base
    return path


def final_path_of_temp(path: str) -> str | None:
    """The file a :func:`temp_path` name stands for (``x.index.tempstate12`` -> ``x.index``)."""
    base, sep, tail = path.rpartition(TEMP_INFIX)
    return base if sep and tail.isdigit() and os.sep not in tail else None


def bundle_files(prefix: str) -> list[str]:
    """The files of ``prefix`` that exist: ``.index`` first, then data shards in order.

    That is the order to delete them in: without its index a prefix no longer
    exists for any reader (TF's ``CheckpointManager`` deletes in this order too).
    """
    index = [index_path(prefix)] if os.path.isfile(index_path(prefix)) else []
    return index + data_files(prefix)


def data_files(prefix: str) -> list[str]:
    """Every data file of ``prefix`` that exists, whatever its shard count, in order."""
    return sorted(glob.glob(glob.escape(prefix) + DATA_GLOB))


def temp_files(prefix: str) -> list[str]:
    """Temporary files an interrupted write of ``prefix`` left behind (never read by anyone)."""
    pattern = glob.escape(prefix) + "*" + TEMP_INFIX + "*"
    return sorted(p for p in glob.glob(pattern)
                  if (final := final_path_of_temp(p)) is not None and prefix_of(final) == prefix)
