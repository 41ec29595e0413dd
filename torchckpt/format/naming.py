"""File names of a bundle (``tensorflow/core/util/tensor_bundle/naming.cc``).

A checkpoint *prefix* ``P`` names ``P.index`` and ``P.data-SSSSS-of-NNNNN``
(``%05d``). Temporary names carry a random suffix, like TF's ``.tempstate<N>``,
so a crashed save never leaves a file that a reader would take for a real one.
"""

from __future__ import annotations

import os
import secrets

TEMP_INFIX = ".tempstate"


def index_path(prefix: str) -> str:
    return f"{prefix}.index"


def data_path(prefix: str, shard_id: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def temp_path(final_path: str) -> str:
    """A unique sibling of ``final_path`` to write before renaming into place."""
    return f"{final_path}{TEMP_INFIX}{secrets.randbits(63)}"


def is_temp_path(path: str) -> bool:
    return TEMP_INFIX in os.path.basename(path)


def prefix_of(path: str) -> str:
    """The prefix of a bundle file name (``x.index`` or ``x.data-...``), else ``path``."""
    if path.endswith(".index"):
        return path[: -len(".index")]
    base, sep, tail = path.rpartition(".data-")
    if sep and "-of-" in tail:
        return base
    return path
