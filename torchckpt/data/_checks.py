"""Checks of a loader's saved state before it lands (see :mod:`torchckpt.adapters.schema`).

Internal, no stability guarantee.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import IterableDataset

from ..adapters.schema import INT64_MAX, Rule, Schema, as_bool, counter, generator_state


def length_bound(*sized: Any) -> int:
    """The largest ``len()`` of ``sized`` (a bound on any count of items or batches in
    one epoch), or int64's maximum when none has a length."""
    lengths = []
    for obj in sized:
        try:
            lengths.append(len(obj))
        except (TypeError, NotImplementedError):
            pass
    return max(lengths) if lengths else INT64_MAX


def stateful_loader_schema(loader: Any) -> Schema:
    """What torchdata's ``StatefulDataLoader`` state may hold (without asking the live
    loader for its own: that starts worker processes). Counters are ints within one
    epoch's length (a forged 10**30 would be skipped through one item at a time),
    generator states are CPU generator states, and fields that come and go with
    progress and workers may be None."""
    most = INT64_MAX if isinstance(loader.dataset, IterableDataset) else length_bound(
        loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
        loader.dataset)  # an IterableDataset's len() is a hint, not a bound
    fields: dict[str, Rule] = {
        **dict.fromkeys(("_num_yielded", "_sampler_iter_yielded", "samples_yielded", "yielded",
                         "_snapshot_step", "_steps_since_snapshot"), counter(0, most)),
        **dict.fromkeys(("_num_workers", "worker_id", "_last_yielded_worker_id"),
                        counter(0, 2 ** 31 - 1)),
        "_iterator_finished": lambda found, live, field, schema: as_bool(found, field),
        "generator": lambda found, live, field, schema: generator_state(found, field),
    }
    return Schema(fields=fields, none_matches=True)
