"""Read any TensorFlow checkpoint by key, without building objects.

The torch counterpart of ``tf.train.load_checkpoint`` / ``list_variables`` /
``load_variable`` / ``latest_checkpoint`` (TF's ``checkpoint_utils.py`` and
``c/checkpoint_reader.cc``). It reads name-based (TF1 ``Saver``) and
object-based (``tf.train.Checkpoint``) checkpoints alike: keys are the bundle's
keys, e.g. ``net/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``.

Differences from TensorFlow, all deliberate:

* numeric values are ``torch.Tensor`` (a 0-d tensor for a scalar, where TF
  returns a numpy scalar); strings are numpy object arrays of ``bytes`` (a
  plain ``bytes`` for a scalar string), as in TF.
* :meth:`CheckpointReader.get_variable_to_dtype_map` maps to ``torch.dtype``,
  or to TF's dtype name (a ``str``: ``"string"``, ``"int4"``, ...) where torch
  has no such type; see :mod:`torchckpt.adapters.tensors`.
* errors are :class:`~torchckpt.errors.TorchckptError` subclasses naming the
  file and key; a directory whose ``checkpoint`` state file names a missing
  prefix, or one outside the directory, is an error rather than "no checkpoint".

Each tensor is read on demand from memory-mapped data files, with its CRC32C
verified; opening a checkpoint reads only the ``.index`` file.

Example (``prefix`` names a checkpoint holding a 2x3 float tensor ``w`` and a
string ``note``)::

    >>> import torchckpt
    >>> with torchckpt.load_checkpoint(prefix) as reader:
    ...     reader.get_variable_to_shape_map()
    {'note': [], 'w': [2, 3]}
    >>> torchckpt.load_variable(prefix, "w:0")
    tensor([[0., 1., 2.],
            [3., 4., 5.]])
    >>> torchckpt.list_variables(prefix)
    [('note', []), ('w', [2, 3])]
    >>> torchckpt.load_variable(prefix, "note")
    b'hello'
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

from .adapters.tensors import array_to_tensor, torch_dtype_or_name
from .errors import CorruptCheckpointError
from .format.dtypes import FIXED_WIDTH, DataType, enum_name
from .format.naming import data_path
from .format.records import ENDIAN_LITTLE, BundleEntry
from .format.state_file import STATE_FILENAME, existing_latest, resolve_prefix
from .format.storage import StorageOptions, is_remote, open_bundle

PathLike = Union[str, "os.PathLike[str]"]
Key = Union[str, bytes]
#: What :meth:`CheckpointReader.get_tensor` returns.
Value = Union[torch.Tensor, np.ndarray, bytes]

__all__ = ["CheckpointReader", "latest_checkpoint", "list_variables", "load_checkpoint",
           "load_variable"]


def _key_bytes(key: Key) -> bytes:
    # surrogateescape: a key that is not UTF-8 round-trips through the str the maps show.
    return key.encode("utf-8", "surrogateescape") if isinstance(key, str) else bytes(key)


def _key_str(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


class CheckpointReader:
    """Reads tensors of one checkpoint by key (TF's ``CheckpointReader``).

    Create it with :func:`load_checkpoint`. Keys may be ``str`` (UTF-8 encoded)
    or the exact ``bytes`` of the bundle key. Use it as a context manager, or
    call :meth:`close`, to release the memory-mapped data files; values already
    returned stay valid (they are copies).

    Thread-safety: concurrent :meth:`get_tensor` calls are safe; :meth:`close`
    must not race with them.

    Args:
        prefix: checkpoint prefix (``prefix.index`` exists).
        verify_checksums: verify each tensor's CRC32C when it is read.

    Raises:
        CheckpointNotFoundError: no ``prefix.index``.
        CorruptCheckpointError: the index is malformed, or a data shard it
            names is missing.
        UnsupportedFormatError: a bundle version this reader does not accept.
    """

    def __init__(self, prefix: PathLike, *, verify_checksums: bool = True,
                 storage_options: StorageOptions | None = None) -> None:
        self._bundle = open_bundle(os.fspath(prefix), verify_checksums=verify_checksums,
                                   storage_options=storage_options)
        self.prefix = self._bundle.prefix
        try:
            self._check_shards()
        except BaseException:
            self._bundle.close()
            raise

    def _check_shards(self) -> None:
        # code-style P7: trust a prefix only when every shard its header names exists.
        n = self._bundle.header.num_shards
        if is_remote(self.prefix):  # one size request per shard, which later reads reuse
            for shard in range(n):
                self._bundle.shard(shard)
            return
        for shard in range(n):  # stops at the first gap, so a forged count costs nothing
            path = data_path(self.prefix, shard, n)
            if not os.path.isfile(path):
                raise CorruptCheckpointError(path, f"data shard file is missing (the index "
                                             f"'{self._bundle.index_path}' names {n} shards)")

    # --- values ------------------------------------------------------------------------

    def get_tensor(self, key: Key) -> Value:
        """The value stored under ``key``; sliced (partitioned) tensors are reassembled.

        Returns:
            a ``torch.Tensor`` of the matching dtype for numeric values (0-d for
            scalars; quantized types as plain integers; int4/int2 sign-extended
            to int8, uint4/uint2 as uint8, float4_e2m1fn and
            float8_e4m3b11fnuz as uint8 bit patterns); for ``DT_STRING`` a
            numpy object array of ``bytes``, or ``bytes`` for a scalar.

        Raises:
            KeyNotFoundError: ``key`` is not in the checkpoint (also a ``KeyError``).
            ChecksumMismatchError: the stored bytes do not match their CRC32C.
            CorruptCheckpointError: the entry or its payload is malformed.
            UnsupportedFormatError: a dtype or shape this reader cannot hold (DT_VARIANT,
                e.g. a ``tf.data`` iterator's state; DT_RESOURCE; unknown dtypes): the
                message names the key and the dtype.
        """
        k = _key_bytes(key)
        e = self._bundle.entry(k)
        self._bundle.check_decodable(k, e)
        if e.dtype == DataType.DT_STRING:
            array = self._bundle.read_array(k)
            return array.item() if array.ndim == 0 else array
        return array_to_tensor(self._read_numeric(k, e), e.dtype)

    def _read_numeric(self, k: bytes, e: BundleEntry) -> np.ndarray:
        if e.slices or self._bundle.header.endianness != ENDIAN_LITTLE or e.size == 0:
            return self._bundle.read_array(k)
        self._bundle.payload_location(k)  # bounds-checks before allocating
        try:
            out = np.empty(e.shape, dtype=FIXED_WIDTH[e.dtype].storage)  # type: ignore[index]
        except ValueError:  # e.g. rank above numpy's 64: let read_array raise the error
            return self._bundle.read_array(k)
        self._bundle.read_into(k, out)  # straight from the file into the result, CRC checked
        return out

    def has_tensor(self, key: Key) -> bool:
        """Whether ``key`` is a key of the checkpoint (slice keys included, header excluded)."""
        return _key_bytes(key) in self._bundle

    # --- maps ------------------------------------------------------------------------------

    def _listed(self) -> list[tuple[bytes, BundleEntry]]:
        """Every key with its entry, except the slice entries of sliced tensors."""
        return [(k, self._bundle.entry(k)) for k in self._bundle.listed_keys()]

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        """``{key: shape}`` for every tensor, as TF lists them.

        Includes ``_CHECKPOINTABLE_OBJECT_GRAPH``; a sliced tensor appears once,
        under its own key with its full shape; slice keys and the header do not
        appear. Keys that are not UTF-8 are decoded with ``surrogateescape``.

        Raises:
            CorruptCheckpointError: an entry is malformed.
        """
        return {_key_str(k): list(e.shape) for k, e in self._listed()}

    def get_variable_to_dtype_map(self) -> dict[str, torch.dtype | str]:
        """``{key: dtype}`` over the same keys as :meth:`get_variable_to_shape_map`.

        A value is the ``torch.dtype`` that :meth:`get_tensor` returns, or a
        ``str`` naming the TF dtype where torch has none: ``"string"`` for
        ``DT_STRING``, ``"variant"`` for ``DT_VARIANT`` (iterator state, which
        :meth:`get_tensor` cannot return), ``"resource"``, ``"int4"``, ``"uint4"``,
        ``"int2"``, ``"uint2"``, ``"float4_e2m1fn"``, ``"float8_e4m3b11fnuz"``, and
        ``"DT_<n>"`` for a dtype value this version does not know.

        Raises:
            CorruptCheckpointError: an entry is malformed.
        """
        return {_key_str(k): torch_dtype_or_name(e.dtype) for k, e in self._listed()}

    def debug_string(self) -> bytes:
        """TF's ``debug_string()``: ``b"<key> (DT_FLOAT) [2,3]\\n"`` per entry, in key order.

        Like TF it lists slice keys (raw bytes) and skips the full entries of
        sliced tensors.

        Raises:
            CorruptCheckpointError: an entry is malformed.
        """
        lines = []
        for k in self._bundle.keys():
            e = self._bundle.entry(k)
            if e.slices:
                continue
            dims = ",".join(str(d) for d in e.shape)
            lines.append(b"%s (%s) [%s]\n" % (k, enum_name(e.dtype).encode(), dims.encode()))
        return b"".join(lines)

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the data files (idempotent)."""
        self._bundle.close()

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointReader({self.prefix!r})"


def latest_checkpoint(directory: PathLike, latest_filename: str = STATE_FILENAME, *,
                      storage_options: StorageOptions | None = None) -> str | None:
    """The newest checkpoint prefix named by ``directory``'s state file.

    Like ``tf.train.latest_checkpoint``, relative paths in the state file are
    joined to ``directory`` and ``None`` means there is no state file. Unlike
    it, a state file that names a prefix without a ``.index`` file, or a path
    outside ``directory`` (e.g. an absolute TF1 path after the folder was moved),
    is an error rather than ``None``: a run must not silently start over, and
    nothing outside the directory is followed. A directory URL
    (``s3://bucket/run``) gives a URL.

    Raises:
        CheckpointNotFoundError: the named prefix does not exist.
        CorruptCheckpointError: the state file is unreadable or has no
            ``model_checkpoint_path``.
        OutsideDirectoryError: it names a path outside ``directory``.
    """
    return existing_latest(os.fspath(directory), latest_filename, storage_options=storage_options)


def load_checkpoint(path: PathLike, *, verify_checksums: bool = True,
                    storage_options: StorageOptions | None = None) -> CheckpointReader:
    """Open the checkpoint at ``path`` (``tf.train.load_checkpoint``).

    Args:
        path: a checkpoint prefix (``.../ckpt-3``), or a directory, meaning the
            latest checkpoint its ``checkpoint`` state file names. The name of
            the prefix's ``.index`` or ``.data-*`` file is accepted too.
        verify_checksums: verify each tensor's CRC32C when it is read.
        storage_options: fsspec filesystem arguments when ``path`` is a URL
            (``s3://bucket/run``); opening reads only the index, and each
            tensor read fetches only that tensor's bytes.

    Raises:
        CheckpointNotFoundError: nothing to open at ``path``.
        CorruptCheckpointError: the state file, the index or the shard set is damaged.
        UnsupportedFormatError: a bundle version this reader does not accept.
        RemoteStorageUnavailableError: a URL without the ``remote`` extra installed.
    """
    prefix = resolve_prefix(os.fspath(path), storage_options=storage_options)
    return CheckpointReader(prefix, verify_checksums=verify_checksums,
                            storage_options=storage_options)


def list_variables(path: PathLike) -> list[tuple[str, list[int]]]:
    """Sorted ``(key, shape)`` pairs of the checkpoint at ``path`` (``tf.train.list_variables``).

    Raises:
        the errors of :func:`load_checkpoint` and of
        :meth:`CheckpointReader.get_variable_to_shape_map`.
    """
    with load_checkpoint(path) as reader:
        return sorted(reader.get_variable_to_shape_map().items())


def load_variable(path: PathLike, name: str) -> Value:
    """The value of ``name`` in the checkpoint at ``path`` (``tf.train.load_variable``).

    A trailing ``":0"`` (a TF variable's tensor name) is ignored.

    Raises:
        the errors of :func:`load_checkpoint` and of :meth:`CheckpointReader.get_tensor`.
    """
    if name.endswith(":0"):
        name = name[:-2]
    with load_checkpoint(path) as reader:
        return reader.get_tensor(name)
