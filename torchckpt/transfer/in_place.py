"""Located payloads read straight into the host tensors that will hold them.

A restore (``restoring.py``) and ``load_state_dict(into=...)`` both find, for
many tensors at once, the payload each one takes
(``BundleReader.payload_locations``), then read all of them in one call. Where
the reader can (``BundleReader.can_read_at``: the C accelerator and local
files), each payload is copied to the tensor's memory by address
(``read_at``), which spares the ~2 us numpy view per tensor that is most of
the cost of restoring 50,000 small tensors; elsewhere, into numpy views
(``read_many_into`` with the locations). Either way every checksum is
verified as the bytes are read.

The queue is kept as columns (keys, locations, addresses, tensors), not a
record per read: 50,000 records would be 50,000 more objects for the
garbage collector to scan while the restore runs.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..adapters.tensors import host_addresses_holding, host_array_holding
from ..format._fast_entries import PayloadLocation


class InPlaceReads:
    """The in-place reads of one pass, queued by :meth:`add_many`, done by :meth:`run`."""

    def __init__(self, reader: Any) -> None:
        self._by_address = bool(reader.can_read_at())
        self._clear()

    def _clear(self) -> None:
        # reads by address: the tensors are kept alive until the copy is done
        self._keys: list[str] = []
        self._locations: list[PayloadLocation] = []
        self._addresses: list[int] = []
        self._tensors: list[torch.Tensor] = []
        self._viewed: list[tuple[str, Any, PayloadLocation]] = []  # reads into numpy views

    def add_many(self, keys: Sequence[str], tensors: Sequence[torch.Tensor],
                 locations: Sequence[PayloadLocation | None]) -> list[int]:
        """Queue the read of each location's payload into its tensor where the tensor is a
        plain host tensor of the payload's dtype and shape; returns the indices of those
        not queued (a ``None`` location, or a tensor that cannot take the payload)."""
        rest: Sequence[int] = range(len(keys))
        if self._by_address:
            addresses = host_addresses_holding(tensors, locations)
            if all(addresses):  # the usual case, without a pass per index
                self._keys += keys
                self._locations += locations  # type: ignore[arg-type]  # none is None
                self._addresses += addresses
                self._tensors += tensors
                return []
            taken = [i for i, address in enumerate(addresses) if address]
            self._keys += [keys[i] for i in taken]
            self._locations += [locations[i] for i in taken]  # type: ignore[misc]
            self._addresses += [addresses[i] for i in taken]
            self._tensors += [tensors[i] for i in taken]
            rest = [i for i, address in enumerate(addresses) if not address]
        missed = []
        for i in rest:  # into numpy views, where numpy holds the dtype
            loc = locations[i]
            array = host_array_holding(tensors[i], loc.dtype, loc.shape) \
                if loc is not None else None
            if array is None or loc is None:
                missed.append(i)
            else:
                self._viewed.append((keys[i], array, loc))
        return missed

    def __bool__(self) -> bool:
        return bool(self._keys or self._viewed)

    def run(self, reader: Any, also: list[tuple[str, Any]] | None = None) -> None:
        """Do the queued reads, and ``also``'s ``(key, buffer)`` reads (entries not located
        yet) in the same ``read_many_into`` call; the queue is then empty.

        Raises:
            CorruptCheckpointError: as the reader raises it (checksum, truncation, ...).
        """
        keys, locations, addresses = self._keys, self._locations, self._addresses
        viewed = self._viewed
        try:
            if keys:
                reader.read_at(keys, locations, addresses)
            also = also or []
            if viewed or also:
                reader.read_many_into([*also, *((key, out) for key, out, _ in viewed)],
                                      [None] * len(also) + [loc for _, _, loc in viewed])
        finally:
            self._clear()
