"""Plain nested state dicts in TensorFlow's format: ``torch.save`` / ``torch.load`` without pickle.

:func:`save_state_dict` writes a nested structure of dicts, lists, tuples,
scalars, strings and tensors to a TensorFlow bundle ``prefix`` (``.index`` +
``.data-*``), and :func:`load_state_dict` gives the same structure back, with
the same container and value types. Nothing is pickled and nothing on disk is
executed or imported; every tensor is checksummed.

Layout. Each distinct tensor is one bundle entry whose key is its place in the
structure in TensorFlow's key grammar (``state_dict/fc.weight`` ->
``state_dict/fc..weight/.ATTRIBUTES/VARIABLE_VALUE``), so
``tf.train.list_variables`` and ``tf.train.load_checkpoint`` show readable
names. The structure itself is one ``DT_STRING`` scalar under
:data:`STRUCTURE_KEY`: JSON with a typed encoding that tells every type apart::

    null, true/false, 12, "text", [..]   None, bool, int, str, list (as JSON)
    {"float": "0x1.8p+1"}                 float, as float.hex (exact: inf, nan, -0.0)
    {"tuple": [..]}                       tuple
    {"dict": [[key, value], ..]}          dict, in order; keys are str or int
    {"odict": [[key, value], ..]}         collections.OrderedDict
    {"tensor": "<key>"}                   torch.Tensor (entry ``key``)
    {"parameter": "<key>", "requires_grad": true}   torch.nn.Parameter

A tensor object that appears twice is stored once and comes back as one
tensor in both places. Payloads are aligned to 64 bytes, so that
``load_state_dict(..., mmap=True)`` can map them in place.
"""

from __future__ import annotations

import collections
import json
import mmap as _mmap
import os
from typing import Any, Iterator

import torch

from .adapters.tensors import array_to_tensor, tensor_to_buffer, tf_dtype_of, torch_dtype_of
from .errors import CorruptCheckpointError, UntrackableError
from .format import BundleWriter
from .format.dtypes import FIXED_WIDTH, DataType
from .format.naming import data_path
from .format.records import ENDIAN_LITTLE
from .format.storage import StorageOptions, is_remote, local_path, open_bundle, staged_bundle
from .graph.keys import VARIABLE_VALUE_KEY, format_key, object_path
from .staging import needs_staging, read_to_device, staging_buffers
from .transfer import add_tensors

STRUCTURE_KEY = "_TORCHCKPT_NESTED_STRUCTURE"
FORMAT_VERSION = 1
MAX_DEPTH = 200  # containers nest at most this deep (saving and loading alike)
_ALIGNMENT = 64  # payload alignment: mmap-able for every dtype, cache-line sized

Location = torch.device | str | None


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
    tensors: list[tuple[str, torch.Tensor]] = []
    spec = _Encoder(tensors).encode(obj)
    text = json.dumps({"format": "torchckpt-nested", "version": FORMAT_VERSION, "root": spec},
                      ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if is_remote(prefix):
        with staged_bundle(prefix, storage_options) as staged:
            _write(staged.prefix, tensors, text, sync=False)
    else:
        _write(local_path(prefix), tensors, text, sync=sync)
    return prefix


def _write(prefix: str, tensors: list[tuple[str, torch.Tensor]], text: str, *,
           sync: bool) -> None:
    writer = BundleWriter(prefix, data_alignment=_ALIGNMENT, sync=sync)
    try:
        add_tensors(writer, tensors)
        writer.add_strings(STRUCTURE_KEY, [text.encode("utf-8")], ())
        writer.finish()
    except BaseException:
        writer.abort()
        raise


class _Encoder:
    """Structure -> JSON spec, collecting ``(key, tensor)`` for each distinct tensor."""

    def __init__(self, tensors: list[tuple[str, torch.Tensor]]) -> None:
        self.tensors = tensors
        self.keys: set[str] = set()
        self.seen: dict[int, str] = {}  # id(tensor) -> its key

    def encode(self, value: Any, names: tuple[str, ...] = (), where: str = "obj") -> Any:
        if len(names) > MAX_DEPTH:
            raise UntrackableError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        t = type(value)
        if value is None or t in (bool, int, str):
            return value
        if t is float:
            return {"float": value.hex()}
        if isinstance(value, torch.Tensor):
            return self._tensor(value, names, where)
        if t is list or t is tuple:
            items = [self.encode(v, names + (str(i),), f"{where}[{i}]")
                     for i, v in enumerate(value)]
            return items if t is list else {"tuple": items}
        if t is dict or t is collections.OrderedDict:
            pairs = []
            for k, v in value.items():
                if type(k) not in (str, int):
                    raise UntrackableError(
                        f"{where}: key {k!r} of type {type(k).__name__} cannot be saved (dict keys "
                        "must be str or int)")
                pairs.append([k, self.encode(v, names + (str(k),), f"{where}[{k!r}]")])
            return {"dict" if t is dict else "odict": pairs}
        raise UntrackableError(
            f"{where}: a value of type {t.__module__}.{t.__qualname__} cannot be saved without "
            "pickle; supported: dict, OrderedDict, list, tuple, None, bool, int, float, str and "
            "torch.Tensor (convert it to one of these first)")

    def _tensor(self, t: torch.Tensor, names: tuple[str, ...], where: str) -> dict[str, Any]:
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise UntrackableError(f"{where}: tensor subclass {type(t).__qualname__} cannot be "
                                   "saved as a plain tensor; save its plain value instead")
        if t.layout != torch.strided or t.is_quantized:
            raise UntrackableError(f"{where}: a {t.layout} tensor (quantized: {t.is_quantized}) "
                                   "cannot be saved; convert it to a dense tensor")
        try:
            tf_dtype_of(t.dtype)
        except UntrackableError as exc:
            raise UntrackableError(f"{where}: {exc}") from exc
        key = self.seen.get(id(t))
        if key is None:
            key = self._new_key(names)
            self.seen[id(t)] = key
            self.tensors.append((key, t))
        if type(t) is torch.nn.Parameter:
            return {"parameter": key, "requires_grad": bool(t.requires_grad)}
        return {"tensor": key}

    def _new_key(self, names: tuple[str, ...]) -> str:
        base = object_path(names) if names else ""
        key = format_key(base)
        n = 0
        while key in self.keys:  # "0" the str key and 0 the int key share a path
            n += 1
            key = format_key(base, f"{VARIABLE_VALUE_KEY}_{n}")
        self.keys.add(key)
        return key


def load_state_dict(prefix: str | os.PathLike[str], *, map_location: Location = None,
                    mmap: bool = False, verify_checksums: bool = True,
                    storage_options: StorageOptions | None = None) -> Any:
    """Load the structure :func:`save_state_dict` wrote, with the same types.

    Args:
        prefix: the prefix (or URL) passed to :func:`save_state_dict`.
        map_location: the device of the tensors (default CPU), as
            ``torch.load``'s ``map_location`` takes a device.
        mmap: CPU tensors share pages with the data file, copy-on-write
            (as torch's own mmap loading does): nothing is read until used, beyond
            the checksum pass when ``verify_checksums``. Local paths only.
        verify_checksums: verify every tensor's CRC32C (default).
        storage_options: fsspec filesystem arguments for a URL.

    Raises:
        CheckpointNotFoundError: no bundle at ``prefix``.
        CorruptCheckpointError: damaged files, or no structure (not written by
            :func:`save_state_dict`); names the file and key.
        ValueError: ``mmap`` with a URL or a non-CPU ``map_location``.
    """
    prefix = os.fspath(prefix)
    device = torch.device(map_location) if map_location is not None else torch.device("cpu")
    if mmap and (is_remote(prefix) or device.type != "cpu"):
        raise ValueError("mmap=True needs a local path and CPU tensors")
    with open_bundle(prefix, verify_checksums=verify_checksums,
                     storage_options=storage_options) as reader:
        root = _read_structure(reader)
        keys = list(dict.fromkeys(_tensor_keys(root, reader.index_path)))
        if mmap:
            values = _mapped_tensors(reader, keys)
        else:
            values = _read_tensors(reader, keys, device)
        return _Decoder(values, reader.index_path).decode(root)


def _read_structure(reader: Any) -> Any:
    if STRUCTURE_KEY not in reader:
        raise CorruptCheckpointError(
            reader.index_path, "no nested structure: not written by save_state_dict (read its "
            "tensors with torchckpt.load_checkpoint, or restore it with torchckpt.Checkpoint)",
            key=STRUCTURE_KEY)
    e = reader.entry(STRUCTURE_KEY)
    if e.dtype != DataType.DT_STRING or e.shape != ():
        raise CorruptCheckpointError(reader.index_path, "structure is not a scalar string",
                                     key=STRUCTURE_KEY)
    raw = reader.read_array(STRUCTURE_KEY).item()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(reader.index_path, f"structure is not valid JSON: {exc}",
                                     key=STRUCTURE_KEY) from exc
    if not (isinstance(doc, dict) and doc.get("format") == "torchckpt-nested"
            and doc.get("version") == FORMAT_VERSION and "root" in doc):
        raise CorruptCheckpointError(reader.index_path, "structure has an unknown format or "
                                     f"version (this reader reads version {FORMAT_VERSION})",
                                     key=STRUCTURE_KEY)
    return doc["root"]


def _tensor_keys(spec: Any, path: str) -> Iterator[str]:
    """Every tensor key the spec names (iteratively: depth is the file's to choose)."""
    stack = [(spec, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CorruptCheckpointError(path, f"structure nests deeper than {MAX_DEPTH} levels",
                                         key=STRUCTURE_KEY)
        if isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, dict):
            key = node.get("tensor", node.get("parameter"))
            if isinstance(key, str):
                yield key
            for tag in ("tuple", "dict", "odict"):
                items = node.get(tag)
                if isinstance(items, list):
                    stack.extend((v, depth + 1) for v in items)


def _read_tensors(reader: Any, keys: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Each key's tensor on ``device``: plain payloads read straight into their tensors (one
    bulk read, file order), anything else through ``read_array``."""
    out: dict[str, torch.Tensor] = {}
    direct: list[tuple[str, torch.Tensor]] = []
    for key in keys:
        e = reader.entry(key)
        dtype = _direct_dtype(reader, e)
        if dtype is None:
            out[key] = array_to_tensor(reader.read_array(key), e.dtype).to(device)
        else:
            out[key] = t = torch.empty(e.shape, dtype=dtype, device=device)
            direct.append((key, t))
    if needs_staging(device):
        with staging_buffers() as buffers:
            for key, t in direct:
                if t.numel():
                    read_to_device(reader, key, t, buffers)
    else:
        reader.read_many_into((key, tensor_to_buffer(t)) for key, t in direct)
    return out


def _direct_dtype(reader: Any, e: Any) -> torch.dtype | None:
    """The torch dtype to read ``e``'s payload straight into, or None for the general path."""
    if e.slices or reader.header.endianness != ENDIAN_LITTLE:
        return None
    try:
        dtype = torch_dtype_of(e.dtype)
    except TypeError:
        return None  # no tensor form: read_array raises the precise error
    try:
        same = tf_dtype_of(dtype) == e.dtype  # quantized / sub-byte types differ in storage
    except UntrackableError:
        return None
    return dtype if same else None


def _mapped_tensors(reader: Any, keys: list[str]) -> dict[str, torch.Tensor]:
    """CPU tensors over copy-on-write maps of the data files (checksums verified on the
    reader's read-only map first); unaligned or unusual entries are read instead."""
    maps: dict[int, _mmap.mmap] = {}
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        e = reader.entry(key)
        dtype = _direct_dtype(reader, e)
        itemsize = FIXED_WIDTH[e.dtype].itemsize if dtype is not None else 0
        if dtype is None or e.size == 0 or e.offset % itemsize:
            out[key] = _read_tensors(reader, [key], torch.device("cpu"))[key]
            continue
        reader.read_raw(key)  # bounds and checksum (verify_checksums), on the shared map
        m = maps.get(e.shard_id)
        if m is None:
            m = maps[e.shard_id] = _private_map(
                data_path(reader.prefix, e.shard_id, reader.header.num_shards))
        flat = torch.frombuffer(m, dtype=dtype, count=e.size // itemsize, offset=e.offset)
        out[key] = flat.view(e.shape)
    return out


def _private_map(path: str) -> _mmap.mmap:
    with open(path, "rb") as f:
        return _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)


class _Decoder:
    """JSON spec -> structure, every node's type checked (the file is untrusted)."""

    def __init__(self, tensors: dict[str, torch.Tensor], path: str) -> None:
        self.tensors = tensors
        self.path = path
        self.parameters: dict[str, torch.nn.Parameter] = {}  # one Parameter per stored key

    def fail(self, what: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(self.path, f"bad structure: {what}", key=STRUCTURE_KEY)

    def decode(self, node: Any) -> Any:
        if node is None or type(node) in (bool, int, str):
            return node
        if type(node) is list:
            return [self.decode(v) for v in node]
        if type(node) is not dict or len(node) not in (1, 2):
            raise self.fail(f"unexpected node {str(node)[:80]}")
        if "float" in node:
            try:
                return float.fromhex(node["float"])
            except (TypeError, ValueError) as exc:
                raise self.fail(f"bad float {node['float']!r}") from exc
        if "tensor" in node or "parameter" in node:
            key = node.get("tensor", node.get("parameter"))
            if type(key) is not str or key not in self.tensors:
                raise self.fail(f"bad tensor reference {str(node)[:80]}")
            t = self.tensors[key]
            if "parameter" not in node:
                return t
            p = self.parameters.get(key)
            if p is None:
                p = self.parameters[key] = torch.nn.Parameter(
                    t, requires_grad=bool(node.get("requires_grad", True)))
            return p
        if "tuple" in node and type(node["tuple"]) is list:
            return tuple(self.decode(v) for v in node["tuple"])
        for tag, cls in (("dict", dict), ("odict", collections.OrderedDict)):
            if tag in node and type(node[tag]) is list:
                return cls(self._pair(p) for p in node[tag])
        raise self.fail(f"unexpected node {str(node)[:80]}")

    def _pair(self, pair: Any) -> tuple[Any, Any]:
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) not in (str, int):
            raise self.fail(f"bad dict item {str(pair)[:80]}")
        return pair[0], self.decode(pair[1])
