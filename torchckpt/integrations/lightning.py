"""``TorchckptCheckpointIO``: Lightning checkpoints in TensorFlow's format, without pickle.

``lightning.Trainer(plugins=[TorchckptCheckpointIO()])`` routes every
checkpoint Lightning writes or reads (``ModelCheckpoint``,
``trainer.save_checkpoint``, ``trainer.fit(ckpt_path=...)``) through
:func:`torchckpt.save_state_dict` / :func:`torchckpt.load_state_dict`. The
path Lightning chooses (``epoch=0-step=10.ckpt``) is the checkpoint *prefix*:
the files are ``epoch=0-step=10.ckpt.index`` and
``epoch=0-step=10.ckpt.data-00000-of-00001``, which TensorFlow opens
(``tf.train.load_checkpoint("…/epoch=0-step=10.ckpt")``); pass the same path
as ``ckpt_path``. Paths may be fsspec URLs (``s3://bucket/run/last.ckpt``).

Lightning's checkpoint dictionary must hold only what
:func:`~torchckpt.save_state_dict` stores (dicts with str/int keys,
OrderedDicts, lists, tuples, None, bool, int, float, str, tensors); anything
else, such as an arbitrary object in ``hyper_parameters``, is an
``UntrackableError`` naming its place (``checkpoint['hyper_parameters']['x']``).

The plugin follows Lightning's ``TorchCheckpointIO``: ``save_checkpoint``
refuses Lightning's per-call ``storage_options`` (fsspec options go to the
constructor instead), ``load_checkpoint`` raises ``FileNotFoundError`` (a
``CheckpointNotFoundError``) for a missing checkpoint, and ``remove_checkpoint``
deletes every file of the checkpoint, index first.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

try:
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("torchckpt.integrations.lightning needs the lightning package "
                      "(pip install lightning)") from exc

from ..format import naming, storage
from ..state_dict import load_state_dict, save_state_dict

__all__ = ["TorchckptCheckpointIO"]


class TorchckptCheckpointIO(CheckpointIO):
    """A Lightning ``CheckpointIO`` that writes TensorFlow-format checkpoints.

    Args:
        storage_options: fsspec filesystem arguments for URL paths (credentials
            and endpoints otherwise come from the environment).
        sync: fsync local files before they are renamed into place.
        verify_checksums: verify every tensor's CRC32C on load (default).
    """

    def __init__(self, *, storage_options: Mapping[str, Any] | None = None, sync: bool = True,
                 verify_checksums: bool = True) -> None:
        super().__init__()
        self.storage_options = dict(storage_options) if storage_options is not None else None
        self.sync = sync
        self.verify_checksums = verify_checksums

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any | None = None) -> None:
        """Save Lightning's ``checkpoint`` dictionary as the prefix ``path``.

        Raises:
            TypeError: ``storage_options`` was passed (as Lightning's own plugin).
            UntrackableError: a value that cannot be stored without pickle.
            CheckpointWriteError: a file could not be written.
        """
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` is not supported by "
                f"`{type(self).__name__}`; pass fsspec options as "
                "TorchckptCheckpointIO(storage_options=...)")
        save_state_dict(checkpoint, path, sync=self.sync, storage_options=self.storage_options)

    def load_checkpoint(self, path: str | os.PathLike[str], map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Load the checkpoint at ``path``; nothing is unpickled, whatever ``weights_only``.

        ``map_location`` may be None (CPU), a device or a device string; the
        callables and dicts ``torch.load`` also takes are treated as CPU, where
        Lightning then moves the values itself.

        Raises:
            CheckpointNotFoundError: no checkpoint at ``path`` (a ``FileNotFoundError``).
            CorruptCheckpointError: damaged files.
        """
        import torch
        where = map_location if isinstance(map_location, (str, torch.device)) else None
        return load_state_dict(path, map_location=where,
                               verify_checksums=self.verify_checksums,
                               storage_options=self.storage_options)

    def remove_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Delete every file of the checkpoint ``path``: its index first, then its data."""
        prefix = os.fspath(path)
        if storage.is_remote(prefix):
            storage.remove(storage.bundle_files(prefix, self.storage_options),
                           self.storage_options)
            return
        prefix = storage.local_path(prefix)
        for file in naming.bundle_files(prefix) + naming.temp_files(prefix):
            try:
                os.remove(file)
            except FileNotFoundError:
                pass
