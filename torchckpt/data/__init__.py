"""Checkpointable data loading: resume an epoch where it stopped.

``ResumableLoader`` wraps a ``torch.utils.data.DataLoader``; its state (epoch,
batches consumed, the RNG state at the start of the epoch) is saved by
``Checkpoint(data=loader)`` as tensors and JSON, never pickle.
"""

from .loader import ResumableLoader

__all__ = ["ResumableLoader"]
