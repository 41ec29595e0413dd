"""``ResumableLoader``: a DataLoader whose position in the epoch is checkpointable.

How a pass (one epoch) runs, and why a resumed one is identical
---------------------------------------------------------------
The wrapped DataLoader is used as a configuration: iteration goes through a
*shadow* DataLoader with the same dataset, collate function, workers and
options, whose index sampler is the original one wrapped in a
:class:`~._sampling.ResumeSampler`. At the start of every pass:

1. the RNG state the pass depends on is recorded (``epoch_start``): torch's,
   numpy's and Python's global generators, and the loader's and sampler's own
   ``torch.Generator`` objects;
2. a 64-bit *pass seed* is drawn from ``loader.generator`` (the global
   generator when it is None), exactly as torch draws its ``_base_seed``, so
   the stream of draws is the one a plain DataLoader makes;
3. the shadow iterator is created and the sampler is *primed*: samplers draw
   their randomness when iteration starts (``RandomSampler`` draws a seed from
   the global generator, or permutes with its ``generator``), and priming makes
   that happen at this point.

Resuming a pass that had yielded ``k`` batches replays steps 2-3 with the
generators set to ``epoch_start`` and the sampler skipping ``k`` items
(batches, or indices without automatic batching) before yielding anything;
skipped items are never sent to the dataset. Afterwards the *global*
generators are put back as they were (``RNGState`` restored them to the moment
of the save), while the loader's own generators keep the advance they had in
the uninterrupted run.

With worker processes, every batch carries a seed derived from the pass seed
and its position in the pass, and the worker reseeds torch, numpy and
``random`` with it before fetching (``_sampling.SeededDataset``). Augmentation
randomness is therefore a function of (pass seed, batch position), independent
of which worker fetched the batch and of how many it fetched before, so
resumed workers, which start fresh, produce the same batches. (A plain
DataLoader instead seeds each worker once with ``base_seed + worker_id``;
batches fetched through a ``ResumableLoader`` with workers therefore differ
from a plain DataLoader's, deterministically.)

Saved state (``state_dict``), tensors and JSON-able values only::

    {"epoch": int,                 # passes completed (the current pass's number)
     "batches_consumed": int,      # batches yielded in the current pass
     "in_epoch": bool,             # a pass is under way; the next iter() resumes it
     "epoch_start": None | {       # RNG state when the current pass began
         "rng": {"torch": uint8[5056], "numpy": {...}, "python": {...}},
         "generators": [uint8 tensor, ...]}}   # loader.generator, sampler generators

Requirements and limits: a map-style dataset (an ``IterableDataset`` has no
sampler to skip in; use torchdata's ``StatefulDataLoader`` with a stateful
dataset); samplers that take their randomness when iteration starts, from the
global generators or from a ``generator`` attribute (all of torch's do); with
``in_order=False`` the batch order depends on timing and cannot be reproduced.
``DistributedSampler.set_epoch`` stays the caller's job (use :attr:`epoch`).
A ``DataLoader`` subclass is iterated as a plain ``DataLoader``.

Per-rank: under ``torch.distributed`` (more than one rank) each rank's loader
is saved under its own child, ``data/rank_<r>_of_<W>/...``, and restored into
the same rank on a world of the same size (``distributed/per_rank.py``). On a
world of another size it is not restored: a ``DistributedSampler`` deals each
epoch's permutation out by the number of ranks, so a rank's position has no
counterpart in the new world. ``RestoreStatus`` reports it, and the loader
starts at its epoch 0: keep the epoch in the replicated state (``ckpt.epoch``)
and restart that epoch, or change the world size at an epoch boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..adapters import default_registry
from ..adapters.schema import as_bool, as_int, check_state, describe, generator_state, refuse
from ..adapters.stateful import StatefulAdapter
from ..distributed.per_rank import per_rank_adapter
from ..errors import InvalidValueError, UntrackableError
from ..rng import HostRNGSnapshot, apply_host_rng, capture_host_rng
from ._checks import length_bound, stateful_loader_schema
from ._sampling import PassPlan, ResumeSampler, SeededDataset

__all__ = ["ResumableLoader"]


@dataclass(frozen=True)
class _EpochStart:
    """The RNG state a pass depends on, taken just before the pass draws anything."""

    rng: HostRNGSnapshot
    generators: tuple[torch.Tensor, ...]

    def to_state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.to_state_dict(), "generators": list(self.generators)}

    @classmethod
    def from_state_dict(cls, sd: Any, live: list[torch.Generator],
                        field: str = "epoch_start") -> _EpochStart:
        """The saved start of a pass, checked: host RNG states (``rng.check_host_rng``) and
        one state per generator, each one a generator of its kind accepts (those past
        ``live``'s count as a CPU generator's; the caller compares the counts).

        Raises:
            InvalidValueError: naming the field, expected and found.
        """
        if not isinstance(sd, dict) or "rng" not in sd \
                or not isinstance(sd.get("generators"), (list, tuple)):
            refuse(field, "a dict with 'rng' and a list of 'generators'", sd)
        rng = HostRNGSnapshot.from_state_dict(sd["rng"], f"{field}.rng")
        devices = [g.device for g in live] + ["cpu"] * max(len(sd["generators"]) - len(live), 0)
        states = tuple(generator_state(g, f"{field}.generators[{i}]", device).contiguous()
                       for i, (g, device) in enumerate(zip(sd["generators"], devices)))
        return cls(rng, states)


def _index_sampler(loader: DataLoader) -> Any:  # type: ignore[type-arg]
    """What the DataLoader iterates for indices (public-attribute twin of ``_index_sampler``)."""
    return loader.batch_sampler if loader.batch_sampler is not None else loader.sampler


def _own_generators(loader: DataLoader) -> list[torch.Generator]:  # type: ignore[type-arg]
    """The distinct ``torch.Generator`` objects a pass draws from, in a fixed order."""
    sampler = _index_sampler(loader)
    found: list[torch.Generator] = []
    for g in (loader.generator, getattr(sampler, "generator", None),
              getattr(getattr(sampler, "sampler", None), "generator", None)):
        if isinstance(g, torch.Generator) and all(g is not seen for seen in found):
            found.append(g)
    return found


def _draw_seed(generator: torch.Generator | None) -> int:
    # The very expression torch uses for ``_BaseDataLoaderIter._base_seed``.
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def _shadow_loader(loader: DataLoader, sampler: ResumeSampler,  # type: ignore[type-arg]
                   generator: torch.Generator) -> DataLoader:  # type: ignore[type-arg]
    """A DataLoader like ``loader`` that iterates ``sampler`` instead of its index sampler."""
    kwargs: dict[str, Any] = dict(
        num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        # The shadow's own base-seed draw must not consume the user's generators:
        # the pass seed is drawn from them instead (see the module docstring).
        generator=generator, prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers)
    if hasattr(loader, "in_order"):
        kwargs["in_order"] = loader.in_order
    if getattr(loader, "pin_memory_device", ""):
        kwargs["pin_memory_device"] = loader.pin_memory_device
    dataset = SeededDataset(loader.dataset) if loader.num_workers > 0 else loader.dataset
    if loader.batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=sampler, **kwargs)
    return DataLoader(dataset, batch_size=None, sampler=sampler, **kwargs)


class _Pass(Iterator[Any]):
    """The iterator of one pass; reports progress to its loader while it is the current pass."""

    def __init__(self, owner: ResumableLoader, inner: Iterator[Any], token: object) -> None:
        self._owner = owner
        self._inner = inner
        self._token = token

    def __next__(self) -> Any:
        try:
            batch = next(self._inner)
        except StopIteration:
            self._owner._pass_finished(self._token)
            raise
        self._owner._batch_yielded(self._token)
        return batch

    def __len__(self) -> int:
        return len(self._inner)  # type: ignore[arg-type]


def _stateful_mid_epoch(state: Any) -> bool:
    """Whether a ``StatefulDataLoader`` state was taken inside an epoch, after its first batch."""
    if not isinstance(state, dict) or state.get("_iterator_finished", True):
        return False
    snapshot = state.get("_snapshot") or {}
    return bool(state.get("_num_yielded") or state.get("_steps_since_snapshot")
                or (isinstance(snapshot, dict) and snapshot.get("_snapshot_step")))


class _Delegate:
    """A loader that saves its own position (torchdata's ``StatefulDataLoader``).

    Its state is stored as it is, plus the states of ``loader.generator`` and
    the sampler's generator at the moment of the save. A ``StatefulDataLoader``
    restored mid-epoch creates a new iterator, which draws a base seed (from
    the global generator when ``generator`` is None) that the uninterrupted run
    drew at the start of the epoch; that second draw would shift every later
    random number (dropout, the next epoch's shuffle). So the first ``iter()``
    after such a restore puts the global generators and the loader's own back
    as they were at the save once the iterator exists.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._undo_draws = False

    def iter(self) -> Iterator[Any]:
        if not self._undo_draws:
            return iter(self.loader)
        self._undo_draws = False
        host = capture_host_rng()
        gens = _own_generators(self.loader)
        states = [g.get_state() for g in gens]
        try:
            return iter(self.loader)
        finally:
            apply_host_rng(host)
            for g, state in zip(gens, states):
                g.set_state(state)

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.loader.state_dict(),
                "generators": [g.get_state() for g in _own_generators(self.loader)]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check the generators' states and the loader's counters
        (:func:`._checks.stateful_loader_schema`), then hand the loader its state and
        set the generators.

        Raises:
            InvalidValueError: a state of the wrong shape, type or range.
        """
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("loader"), dict) \
                or not isinstance(state_dict.get("generators"), (list, tuple)):
            raise InvalidValueError("not a ResumableLoader state of a stateful loader: expected "
                                    "a dict with a 'loader' dict and a 'generators' list, "
                                    f"found {describe(state_dict)}")
        saved = list(state_dict["generators"])
        gens = _own_generators(self.loader)
        _check_generator_count(len(saved), len(gens))
        states = [generator_state(t, f"generators[{i}]", g.device).contiguous()
                  for i, (t, g) in enumerate(zip(saved, gens))]
        inner = check_state(state_dict["loader"], None, stateful_loader_schema(self.loader),
                            "loader")
        self.loader.load_state_dict(inner)
        for g, state in zip(gens, states):
            g.set_state(state)
        self._undo_draws = _stateful_mid_epoch(inner)


def _check_generator_count(saved: int, live: int) -> None:
    if saved != live:
        raise InvalidValueError(
            f"the checkpointed loader drew from {saved} torch.Generator objects (loader.generator "
            f"and sampler generators), this loader has {live}; build the DataLoader the way the "
            "checkpointed run did", field="generators")


class ResumableLoader:
    """Wraps a ``torch.utils.data.DataLoader`` so that a checkpoint can resume it mid-epoch.

    Iterate it exactly like the DataLoader. ``Checkpoint(data=loader)`` saves
    the epoch, the number of batches consumed in it and the RNG state at the
    start of the epoch; after a restore, the next ``iter()`` continues the
    interrupted epoch with the very batches (same indices, same order, same
    worker-side randomness) that an uninterrupted run would have yielded,
    without fetching the ones already consumed. Track ``torchckpt.RNGState()``
    too, so the main process's random draws continue as well.

    A loader with its own ``state_dict()``/``load_state_dict()`` (torchdata's
    ``StatefulDataLoader``) is delegated to: it is iterated and saves its own
    position; ``ResumableLoader`` adds its generators' states and keeps its
    resumed iterator from drawing random numbers the uninterrupted run did not
    (see ``_Delegate``). Its workers restart from their seeds, so random
    augmentation in workers is reproduced only by the non-delegated mode.

    One pass is *current* at a time: calling ``iter()`` again starts a new
    epoch (the abandoned one counts as done) and the older iterator stops
    reporting progress.

    Args:
        loader: the DataLoader, over a map-style dataset.

    Raises:
        UntrackableError: ``loader`` iterates an ``IterableDataset``.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> data = list(range(10))
        >>> g = torch.Generator().manual_seed(0)
        >>> loader = ResumableLoader(DataLoader(data, batch_size=3, shuffle=True, generator=g))
        >>> it = iter(loader)
        >>> first = next(it)
        >>> saved = loader.state_dict()
        >>> rest = [b.tolist() for b in it]
        >>> g2 = torch.Generator().manual_seed(123)     # a fresh process: other state
        >>> again = ResumableLoader(DataLoader(data, batch_size=3, shuffle=True, generator=g2))
        >>> again.load_state_dict(saved)
        >>> [b.tolist() for b in again] == rest
        True
    """

    def __init__(self, loader: DataLoader) -> None:  # type: ignore[type-arg]
        self.loader = loader
        self._delegate = (_Delegate(loader) if callable(getattr(loader, "state_dict", None))
                          and callable(getattr(loader, "load_state_dict", None)) else None)
        if self._delegate is None and isinstance(loader.dataset, IterableDataset):
            raise UntrackableError(
                "ResumableLoader needs a map-style dataset: an IterableDataset has no sampler "
                "to skip in, so resuming would have to fetch the consumed samples again; use "
                "torchdata's StatefulDataLoader with a dataset that has state_dict()")
        self._plan = PassPlan()
        self._sampler: ResumeSampler | None = None
        self._shadow: DataLoader | None = None  # type: ignore[type-arg]
        self._shadow_generator = torch.Generator()
        self._epoch = 0
        self._consumed = 0
        self._start: _EpochStart | None = None  # set while a pass is under way
        self._resume_pending = False
        self._token = object()

    @property
    def epoch(self) -> int:
        """The number of the current pass (0-based), or of the next one between passes
        (always 0 for a delegated ``StatefulDataLoader``, which counts its own)."""
        return self._epoch

    @property
    def batches_consumed(self) -> int:
        """Batches yielded so far in the current pass."""
        return self._consumed

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        if self._delegate is not None:
            return self._delegate.iter()
        if self._resume_pending:
            inner = self._resume_pass()
        else:
            if self._start is not None:  # an abandoned pass counts as an epoch
                self._epoch += 1
            inner = self._fresh_pass()
        self._resume_pending = False
        self._token = object()
        return _Pass(self, inner, self._token)

    def _fresh_pass(self) -> Iterator[Any]:
        self._consumed = 0
        self._start = _EpochStart(capture_host_rng(),
                                  tuple(g.get_state() for g in _own_generators(self.loader)))
        return self._begin(skip=0)

    def _resume_pass(self) -> Iterator[Any]:
        assert self._start is not None  # load_state_dict sets both together
        now = capture_host_rng()
        gens = _own_generators(self.loader)
        _check_generator_count(len(self._start.generators), len(gens))
        apply_host_rng(self._start.rng)
        for g, state in zip(gens, self._start.generators):
            g.set_state(state)
        try:
            return self._begin(skip=self._consumed)
        finally:
            apply_host_rng(now)

    def _begin(self, skip: int) -> Iterator[Any]:
        """Steps 2-3 of the module docstring: draw the pass seed, start, prime."""
        pass_seed = _draw_seed(self.loader.generator)
        if self._sampler is None:
            self._sampler = ResumeSampler(_index_sampler(self.loader), self._plan)
            self._shadow = _shadow_loader(self.loader, self._sampler, self._shadow_generator)
        assert self._shadow is not None
        self._plan.skip = skip
        self._plan.pass_seed = pass_seed if self.loader.num_workers > 0 else None
        self._shadow_generator.manual_seed(pass_seed)
        inner = iter(self._shadow)
        if self._sampler.last_iter is not None:
            self._sampler.last_iter.prime()
        return inner

    def _batch_yielded(self, token: object) -> None:
        if token is self._token:
            self._consumed += 1

    def _pass_finished(self, token: object) -> None:
        if token is self._token:
            self._token = object()
            self._epoch += 1
            self._consumed = 0
            self._start = None

    def state_dict(self) -> dict[str, Any]:
        """The position: epoch, batches consumed, RNG at the epoch start (see the module doc)."""
        if self._delegate is not None:
            return self._delegate.state_dict()
        return {"epoch": self._epoch, "batches_consumed": self._consumed,
                "in_epoch": self._start is not None,
                "epoch_start": None if self._start is None else self._start.to_state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take up a saved position; the next ``iter()`` continues from it.

        The whole state is checked before anything changes: ``epoch`` an int in
        [0, 2**63), ``batches_consumed`` an int in [0, len(loader)] (batches per epoch),
        ``in_epoch`` a bool, ``epoch_start`` valid RNG and generator states.

        Raises:
            InvalidValueError: ``state_dict`` is not a ResumableLoader state, or a value
                is of the wrong type or out of range (the message names the field).
        """
        if self._delegate is not None:
            self._delegate.load_state_dict(state_dict)
            return
        required = ("epoch", "batches_consumed", "in_epoch")
        if not isinstance(state_dict, dict) or any(k not in state_dict for k in required):
            raise InvalidValueError(f"not a ResumableLoader state: expected a dict with "
                                    f"{', '.join(map(repr, required))}, found "
                                    f"{describe(state_dict)}")
        epoch = as_int(state_dict["epoch"], "epoch", 0)
        consumed = as_int(state_dict["batches_consumed"], "batches_consumed", 0,
                          length_bound(self.loader))
        start = None
        if as_bool(state_dict["in_epoch"], "in_epoch"):
            gens = _own_generators(self.loader)
            start = _EpochStart.from_state_dict(state_dict.get("epoch_start"), gens)
            _check_generator_count(len(start.generators), len(gens))  # refused now, not at iter()
        self._epoch, self._consumed, self._start = epoch, consumed, start
        self._resume_pending = start is not None
        self._token = object()  # iterators from before the restore stop reporting


default_registry.register(ResumableLoader, per_rank_adapter(StatefulAdapter))
