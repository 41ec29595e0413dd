"""Sharded saving and resharded restore across ``torch.distributed`` ranks.

Internal, no stability guarantee (the public entry point is
``torchckpt.Checkpoint``, which calls :func:`write` when a process group with
more than one rank is initialized). See ``docs/distributed.md``.

Saving: every rank writes one data file of the bundle (``prefix.data-r-of-N``)
with what it owns: its chunks of DTensor (FSDP2) parameters and optimizer
state as TF slices of the logical tensors, and a balanced share of the
replicated (DDP) values, each written once. Rank 0 merges the ranks' index
entries as TF's ``MergeBundles`` does and commits ``prefix.index``.

Restoring needs no collectives: each rank reads, for each DTensor it holds,
only the stored slices that overlap its local chunk, on any world size and
mesh; a single process reads the full tensors.

Modules: ``layout`` (DTensor chunks as boxes), ``planning`` (who writes
what), ``shard_writer`` (one rank's data file), ``wire`` (entries as bytes),
``comm`` (tensor collectives), ``merge`` (MergeBundles), ``save`` (the
protocol), ``reshard`` (reading a box of a tensor; DTensor destinations).
"""

from .comm import is_active
from .errors import DistributedCheckpointError
from .layout import is_dtensor
from .save import write

__all__ = ["DistributedCheckpointError", "is_active", "is_dtensor", "write"]
