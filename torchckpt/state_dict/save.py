"""Saving a nested structure: one walk gives the JSON spec and every tensor's key."""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import torch

from ..adapters.tensors import tf_dtype_of
from ..errors import UntrackableError
from ..format import BundleWriter
from ..format._io import gc_frozen
from ..format.storage import StorageOptions, is_remote, local_path, staged_bundle
from ..graph.keys import VARIABLE_VALUE_KEY, escape_local_name, format_key
from ..transfer.host import add_tensors
from .spec import _ALIGNMENT, _KEY_SUFFIX, FORMAT_VERSION, MAX_DEPTH, STRUCTURE_KEY, _Refused


def save_state_dict(obj: Any, prefix: str | os.PathLike[str], *, sync: bool = True,
                    storage_options: StorageOptions | None = None) -> str:
    """Save the nested structure ``obj`` as the TensorFlow bundle ``prefix``.

    ``obj`` may nest dicts (``str`` and ``int`` keys), ``OrderedDict``\\ s,
    lists, tuples, ``None``, bools, ints, floats, strings and tensors of any
    rank and device (GPU tensors are staged through pinned buffers). The
    write is atomic: ``prefix`` is the old version or the new one, whole.

    Example:
        >>> import tempfile, torch, torchckpt
        >>> d = tempfile.mkdtemp()
        >>> sd = {"w": torch.arange(3.0), "step": 7, "lr": 0.1}
        >>> p = torchckpt.save_state_dict(sd, d + "/sd")
        >>> torchckpt.load_state_dict(p)["step"]
        7

    Args:
        obj: the structure to save.
        prefix: a path or URL (``s3://bucket/run/model``; see ``storage.py``).
        sync: fsync before the files are renamed into place.
        storage_options: fsspec filesystem arguments for a URL.

    Returns:
        ``prefix``, as given (a URL stays a URL).

    Raises:
        UntrackableError: a value of another type, or a dict key that is not
            ``str``/``int``; the message names its place (``obj['hparams']['x']``).
        CheckpointWriteError: a file could not be written (names it).
    """
    prefix = os.fspath(prefix)
    encoder = _Encoder()
    with gc_frozen():
        try:
            spec = encoder.encode(obj, None, 0)
        except _Refused as exc:
            raise UntrackableError(f"obj{''.join(reversed(exc.place))}: {exc.what}") \
                from exc.__cause__
        text = json.dumps({"format": "torchckpt-nested", "version": FORMAT_VERSION, "root": spec},
                          ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if is_remote(prefix):
        with staged_bundle(prefix, storage_options) as staged:
            _write(staged.prefix, encoder, text, sync=False)
    else:
        _write(local_path(prefix), encoder, text, sync=sync)
    return prefix


def _write(prefix: str, encoder: _Encoder, text: str, *, sync: bool) -> None:
    writer = BundleWriter(prefix, data_alignment=_ALIGNMENT, sync=sync)
    try:
        add_tensors(writer, encoder.tensors.items())  # host tensors from their own memory
        writer.add_strings(STRUCTURE_KEY, [text.encode("utf-8")], ())
        writer.finish()
    except BaseException:
        writer.abort()
        raise


_STRIDED = torch.strided


class _Encoder:
    """Structure -> JSON spec, collecting each distinct tensor for the writer.

    :attr:`tensors` maps each tensor's key to the tensor, in the order met, for
    ``add_tensors`` (which writes host tensors from their own memory). A place's
    escaped object path (``graph/keys.py``) is built on the way down, for
    containers and tensors only; its text for error messages only on error.
    """

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}  # key -> the tensor itself
        self.nodes: dict[int, dict[str, Any]] = {}  # id(tensor) -> its node (kept alive by obj)
        self.dtypes: set[torch.dtype] = set()  # dtypes checked to have a TF dtype

    def encode(self, value: Any, path: str | None, depth: int) -> Any:
        """The spec of ``value``, whose escaped object path is ``path`` (None: the root)."""
        t = type(value)
        if value is None or t is bool or t is int or t is str:
            return value
        if t is float:
            return {"float": value.hex()}
        if t is dict or t is collections.OrderedDict:
            return {"dict" if t is dict else "odict": self._pairs(value, path, depth)}
        if t is list:
            return self._items(value, path, depth)
        if t is tuple:
            return {"tuple": self._items(value, path, depth)}
        if isinstance(value, torch.Tensor):
            return self._tensor(value, "" if path is None else path)
        raise _Refused(
            f"a value of type {t.__module__}.{t.__qualname__} cannot be saved without pickle; "
            "supported: dict, OrderedDict, list, tuple, None, bool, int, float, str and "
            "torch.Tensor (convert it to one of these first)")

    def _pairs(self, value: dict[Any, Any], path: str | None, depth: int) -> list[list[Any]]:
        if depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        pairs: list[list[Any]] = []
        append, tensor, encode = pairs.append, self._tensor, self.encode
        for k, v in value.items():
            tk = type(k)
            if tk is not str and tk is not int:
                raise _Refused(f"key {k!r} of type {tk.__name__} cannot be saved (dict keys "
                               "must be str or int)")
            tv = type(v)
            if v is None or tv is str or tv is int or tv is bool:
                append([k, v])
                continue
            name = escape_local_name(k if tk is str else str(k))
            child = name if path is None else f"{path}/{name}"
            try:
                append([k, tensor(v, child) if tv is torch.Tensor
                        else encode(v, child, depth + 1)])
            except _Refused as exc:
                exc.place.append(f"[{k!r}]")
                raise
        return pairs

    def _items(self, value: list[Any] | tuple[Any, ...], path: str | None,
               depth: int) -> list[Any]:
        if depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        items: list[Any] = []
        append, tensor, encode = items.append, self._tensor, self.encode
        for i, v in enumerate(value):
            tv = type(v)
            if v is None or tv is str or tv is int or tv is bool:
                append(v)
                continue
            child = str(i) if path is None else f"{path}/{i}"  # digits need no escaping
            try:
                append(tensor(v, child) if tv is torch.Tensor else encode(v, child, depth + 1))
            except _Refused as exc:
                exc.place.append(f"[{i}]")
                raise
        return items

    def _tensor(self, t: torch.Tensor, path: str) -> dict[str, Any]:
        """The node of tensor ``t`` at escaped object path ``path``; ``t`` is recorded for
        the writer on first sight (a tensor met twice is stored once)."""
        node = self.nodes.get(id(t))
        if node is not None:
            return node
        cls = type(t)
        if cls is not torch.Tensor and cls is not torch.nn.Parameter:
            raise _Refused(f"tensor subclass {cls.__qualname__} cannot be saved as a plain "
                           "tensor; save its plain value instead")
        if t.layout is not _STRIDED:
            raise _Refused(f"a {t.layout} tensor cannot be saved; convert it to a dense tensor")
        if t.dtype not in self.dtypes:
            self._check_dtype(t)
        key = path + _KEY_SUFFIX
        if key in self.tensors:  # "0" the str key and 0 the int key share a path
            key = self._new_key(path)
        self.tensors[key] = t
        if cls is torch.nn.Parameter:
            node = {"parameter": key, "requires_grad": bool(t.requires_grad)}
        else:
            node = {"tensor": key}
        self.nodes[id(t)] = node
        return node

    def _check_dtype(self, t: torch.Tensor) -> None:
        """Refuse a dtype TensorFlow has no type for (checked once per dtype)."""
        if t.is_quantized:
            raise _Refused(f"a quantized {t.dtype} tensor cannot be saved; convert it to a "
                           "dense tensor")
        try:
            tf_dtype_of(t.dtype)
        except UntrackableError as exc:
            raise _Refused(str(exc)) from exc
        self.dtypes.add(t.dtype)

    def _new_key(self, base: str) -> str:
        key = base + _KEY_SUFFIX
        n = 0
        while key in self.tensors:
            n += 1
            key = format_key(base, f"{VARIABLE_VALUE_KEY}_{n}")
        return key
