"""Sampler-level skipping and per-batch worker seeding for :class:`~.loader.ResumableLoader`.

Internal, no stability guarantee.

``ResumeSampler`` wraps a DataLoader's *index sampler* (its ``batch_sampler``, or
its ``sampler`` when automatic batching is off) and, for each pass, skips the
first ``plan.skip`` items of the wrapped sampler's iteration without handing
them to the DataLoader, so the skipped samples are never fetched.

With worker processes, each item is wrapped in a :class:`Seeded` carrying a
seed derived from the pass's seed and the item's position in the pass;
:class:`SeededDataset` reseeds the worker's generators with it before fetching.
That makes a batch's augmentation randomness a function of (pass seed, batch
position) rather than of which worker fetched it after how many other batches,
which is what lets a run resumed mid-epoch (whose workers start fresh) fetch
bit-identical batches. Without workers, fetching draws from the main process's
generators, which ``RNGState`` restores, so nothing is reseeded.

Both classes are pickled only in memory, to reach worker processes (as torch
does with every index), never to disk.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_NOTHING = object()


def batch_seed(pass_seed: int, position: int) -> int:
    """The 63-bit seed of the item at ``position`` in a pass whose seed is ``pass_seed``.

    blake2b of both numbers (little-endian int64 / uint64): a fixed, documented
    mix, so seeds do not depend on Python's hash randomization.
    """
    digest = hashlib.blake2b(struct.pack("<qQ", pass_seed, position), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def reseed_worker(seed: int) -> None:
    """Seed the three generators torch seeds in a worker (``torch/utils/data/_utils/worker.py``)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32))


@dataclass(frozen=True)
class Seeded:
    """An index (or a batch of indices) sent to a worker with the seed to fetch it under."""

    payload: Any
    seed: int


@dataclass
class PassPlan:
    """What the next ``iter()`` of a :class:`ResumeSampler` does (set before each pass)."""

    skip: int = 0
    pass_seed: int | None = None  # None: do not tag items (no worker processes)


class ResumeSampler:
    """An index sampler that skips the first ``plan.skip`` items of each pass.

    The plan is read when iteration starts, so one instance serves every pass
    of a DataLoader (persistent workers included).
    """

    def __init__(self, inner: Iterable[Any], plan: PassPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.last_iter: ResumeSamplerIter | None = None

    def __iter__(self) -> ResumeSamplerIter:
        self.last_iter = ResumeSamplerIter(self.inner, self.plan.skip, self.plan.pass_seed)
        return self.last_iter

    def __len__(self) -> int:
        return max(len(self.inner) - self.plan.skip, 0)  # type: ignore[arg-type]


class ResumeSamplerIter(Iterator[Any]):
    """One pass: lazily skips, then yields (and tags) the remaining items."""

    def __init__(self, inner: Iterable[Any], skip: int, pass_seed: int | None) -> None:
        self._inner = inner
        self._it: Iterator[Any] | None = None
        self._skip = skip
        self._pass_seed = pass_seed
        self._position = skip
        self._peeked: Any = _NOTHING

    def prime(self) -> None:
        """Start the wrapped iteration: skip, and draw the first item.

        Samplers draw their randomness when iteration starts (``RandomSampler``
        draws its seed on the first ``next``); priming makes that happen now,
        at a point the caller controls. Idempotent.
        """
        if self._it is not None:
            return
        self._it = iter(self._inner)
        for _ in range(self._skip):
            if next(self._it, _NOTHING) is _NOTHING:
                return
        self._peeked = next(self._it, _NOTHING)

    def __next__(self) -> Any:
        self.prime()
        assert self._it is not None  # set by prime(); not data-dependent
        if self._peeked is not _NOTHING:
            item, self._peeked = self._peeked, _NOTHING
        else:
            item = next(self._it)
        position = self._position
        self._position += 1
        if self._pass_seed is None:
            return item
        return Seeded(item, batch_seed(self._pass_seed, position))


class SeededDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A map-style dataset that reseeds the worker before fetching a :class:`Seeded` index.

    Attribute reads fall through to the wrapped dataset, so a ``worker_init_fn``
    that inspects ``get_worker_info().dataset`` still finds its attributes.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, Seeded):
            reseed_worker(index.seed)
            index = index.payload
        return self.dataset[index]

    def __getitems__(self, indices: Any) -> Any:
        if isinstance(indices, Seeded):
            reseed_worker(indices.seed)
            indices = indices.payload
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems:
            return getitems(indices)
        return [self.dataset[i] for i in indices]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset" or name.startswith("__"):  # unpickling: no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
