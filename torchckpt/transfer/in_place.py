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
        # key, location, address, and the tensor, kept alive until the copy is done
        self._addressed: list[tuple[str, PayloadLocation, int, torch.Tensor]] = []
        self._viewed: list[tuple[str, Any, PayloadLocation]] = []

    def add_many(self, keys: Sequence[str], tensors: Sequence[torch.Tensor],
                 locations: Sequence[PayloadLocation | None]) -> list[int]:
        """Queue the read of each location's payload into its tensor where the tensor is a
        plain host tensor of the payload's dtype and shape; returns the indices of those
        not queued (a ``None`` location, or a tensor that cannot take the payload)."""
        missed = [i for i, loc in enumerate(locations) if loc is None]
        located = [(i, loc) for i, loc in enumerate(locations) if loc is not None]
        if self._by_address:
            addresses = host_addresses_holding([tensors[i] for i, _ in located],
                                               [loc.dtype for _, loc in located],
                                               [loc.shape for _, loc in located])
            rest = []
            for (i, loc), address in zip(located, addresses):
                if address:
                    self._addressed.append((keys[i], loc, address, tensors[i]))
                else:
                    rest.append((i, loc))
            located = rest
        for i, loc in located:  # into numpy views, where numpy holds the dtype
            array = host_array_holding(tensors[i], loc.dtype, loc.shape)
            if array is None:
                missed.append(i)
            else:
                self._viewed.append((keys[i], array, loc))
        return sorted(missed)

    def __bool__(self) -> bool:
        return bool(self._addressed or self._viewed)

    def run(self, reader: Any, also: list[tuple[str, Any]] | None = None) -> None:
        """Do the queued reads, and ``also``'s ``(key, buffer)`` reads (entries not located
        yet) in the same ``read_many_into`` call; the queue is then empty.

        Raises:
            CorruptCheckpointError: as the reader raises it (checksum, truncation, ...).
        """
        addressed, self._addressed = self._addressed, []
        viewed, self._viewed = self._viewed, []
        if addressed:
            reader.read_at([a[0] for a in addressed], [a[1] for a in addressed],
                           [a[2] for a in addressed])
        also = also or []
        if viewed or also:
            reader.read_many_into([*also, *((key, out) for key, out, _ in viewed)],
                                  [None] * len(also) + [loc for _, _, loc in viewed])
