"""Sharded saving and resharded restore across ``torch.distributed`` ranks.

Internal, no stability guarantee (the public entry points are
``torchckpt.Checkpoint``, which calls :func:`write` when a process group with
more than one rank is initialized and the save is collective, and
``torchckpt.PerRank``). See ``docs/distributed.md``.

Saving: every rank writes one data file of the bundle (``prefix.data-r-of-N``)
with what it owns: its chunks of DTensor (FSDP2) parameters and optimizer
state as TF slices of the logical tensors, and a balanced share of the
replicated (DDP) values, each written once. Rank 0 merges the ranks' index
entries as TF's ``MergeBundles`` does and commits ``prefix.index``.

Restoring needs no collectives: each rank reads, for each DTensor it holds,
only the stored slices that overlap its local chunk, on any world size and
mesh; a single process reads the full tensors.

Per-rank state (RNG streams, data positions, anything wrapped in
``PerRank``) is saved once for each rank and restored into the same rank on a
world of the same size.

Modules: ``layout`` (DTensor chunks as boxes), ``planning`` (who writes
what), ``shard_writer`` (one rank's data file), ``wire`` (entries as bytes),
``comm`` (tensor collectives and the save's opening handshake), ``merge``
(MergeBundles), ``save`` (the protocol), ``per_rank`` (per-rank objects),
``fragments`` (their subtrees in a collective save), ``one_rank`` (which saves
are collective; saving from one rank alone). DTensor destinations are filled
by ``torchckpt/transfer/boxes.py``, on the box read of ``torchckpt/format/boxes.py``.
"""

from .comm import is_active
from .errors import CollectiveTimeoutError, DistributedCheckpointError
from .layout import is_dtensor
from .one_rank import one_rank_plan, saves_collectively
from .per_rank import PerRank
from .save import DEFAULT_TIMEOUT_S, write

__all__ = ["CollectiveTimeoutError", "DEFAULT_TIMEOUT_S", "DistributedCheckpointError",
           "PerRank", "is_active", "is_dtensor", "one_rank_plan", "saves_collectively",
           "write"]
