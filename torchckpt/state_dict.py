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

Speed. Both directions cost about what the format layer's bulk calls
(``BundleWriter.add_many``, ``BundleReader.read_many_into``) cost for the same
tensors: saving walks the structure once, formatting keys from an escaped path
built on the way down, and hands host tensors to ``add_many`` as they are;
loading collects the tensor keys while the JSON is parsed, locates (and, for
``mmap=True``, verifies) all payloads in one :meth:`BundleReader.payload_locations`
call, and makes the mapped tensors with one ``split`` per shard and dtype. The
cyclic GC is kept to new objects meanwhile (:func:`torchckpt.format._io.gc_frozen`).
"""

from __future__ import annotations

import collections
import json
import mmap as _mmap
import os
from typing import Any, Iterator, NamedTuple

import torch

from .adapters.tensors import (
    TF_DTYPES,
    array_to_tensor,
    plain_host_array,
    tensor_to_buffer,
    tf_dtype_of,
    torch_dtype_of,
)
from .errors import CorruptCheckpointError, MismatchError, UntrackableError
from .format import BundleWriter
from .format._fast_entries import PayloadLocation
from .format._io import gc_frozen
from .format.dtypes import FIXED_WIDTH, DataType
from .format.naming import data_path
from .format.records import ENDIAN_LITTLE
from .format.storage import StorageOptions, is_remote, local_path, open_bundle, staged_bundle
from .graph.keys import VARIABLE_VALUE_KEY, escape_local_name, format_key
from .transfer.host import add_tensors, host_tensor
from .transfer.staging import needs_staging, read_to_device, staging_buffers

STRUCTURE_KEY = "_TORCHCKPT_NESTED_STRUCTURE"
FORMAT_VERSION = 1
MAX_DEPTH = 200  # containers nest at most this deep (saving and loading alike)
_ALIGNMENT = 64  # payload alignment: mmap-able for every dtype, cache-line sized
# format_key(path) == path + _KEY_SUFFIX: keys are formatted by concatenation, one per tensor
_KEY_SUFFIX = format_key("")

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
        writer.add_many(_host_items(encoder.direct))
        add_tensors(writer, encoder.staged)
        writer.add_strings(STRUCTURE_KEY, [text.encode("utf-8")], ())
        writer.finish()
    except BaseException:
        writer.abort()
        raise


def _host_items(direct: list[tuple[str, torch.Tensor, DataType]]
                ) -> Iterator[tuple[str, Any, DataType, torch.Size]]:
    """``BundleWriter.add_many`` items of contiguous host tensors, each tensor's numpy view
    made as the writer takes it (50,000 views held at once cost a quarter of the walk)."""
    for key, t, tf_dtype in direct:
        data: object
        try:
            data = t.numpy()
        except RuntimeError:  # a lazy conjugate / negative bit: resolved, in a copy
            data = tensor_to_buffer(host_tensor(t))
        yield key, data, tf_dtype, t.shape


class _Refused(Exception):
    """A value :class:`_Encoder` cannot save; ``place`` collects its place on the way up
    (innermost first), so that places are formatted only for the error message."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.place: list[str] = []


class _Encoder:
    """Structure -> JSON spec, collecting each distinct tensor for the writer.

    Contiguous host tensors of dtypes numpy can view go to :attr:`direct`, for
    ``BundleWriter.add_many`` straight from their memory; the rest (GPU,
    non-contiguous, bfloat16, ...) to :attr:`staged`, for ``add_tensors``.
    A place's escaped object path (``graph/keys.py``) is built on the way down,
    for containers and tensors only; its text for error messages only on error.
    """

    def __init__(self) -> None:
        self.direct: list[tuple[str, torch.Tensor, DataType]] = []
        self.staged: list[tuple[str, torch.Tensor]] = []
        self.tensors: dict[str, torch.Tensor] = {}  # key -> the tensor itself
        self.nodes: dict[int, dict[str, Any]] = {}  # id(tensor) -> its node (kept alive by obj)
        self.dtypes: dict[torch.dtype, tuple[DataType, bool]] = {}  # -> TF dtype, numpy views it

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
        if t.layout is not torch.strided:
            raise _Refused(f"a {t.layout} tensor cannot be saved; convert it to a dense tensor")
        tf_dtype, viewable = self.dtypes.get(t.dtype) or self._dtype(t)
        key = self._new_key(path)
        self.tensors[key] = t
        if viewable and t.is_cpu and t.is_contiguous():
            self.direct.append((key, t.detach() if t.requires_grad else t, tf_dtype))
        else:
            self.staged.append((key, t))
        if cls is torch.nn.Parameter:
            node = {"parameter": key, "requires_grad": bool(t.requires_grad)}
        else:
            node = {"tensor": key}
        self.nodes[id(t)] = node
        return node

    def _dtype(self, t: torch.Tensor) -> tuple[DataType, bool]:
        """``t.dtype``'s TF dtype, and whether ``Tensor.numpy()`` views it (cached)."""
        if t.is_quantized:
            raise _Refused(f"a quantized {t.dtype} tensor cannot be saved; convert it to a "
                           "dense tensor")
        try:
            tf_dtype = tf_dtype_of(t.dtype)
        except UntrackableError as exc:
            raise _Refused(str(exc)) from exc
        try:
            torch.empty(0, dtype=t.dtype).numpy()
            viewable = True
        except TypeError:  # bfloat16, float8, uint16-64: through a same-width integer view
            viewable = False
        self.dtypes[t.dtype] = found = (tf_dtype, viewable)
        return found

    def _new_key(self, base: str) -> str:
        key = base + _KEY_SUFFIX
        n = 0
        while key in self.tensors:  # "0" the str key and 0 the int key share a path
            n += 1
            key = format_key(base, f"{VARIABLE_VALUE_KEY}_{n}")
        return key


def load_state_dict(prefix: str | os.PathLike[str], *, map_location: Location = None,
                    mmap: bool = False, into: Any = None, verify_checksums: bool = True,
                    storage_options: StorageOptions | None = None) -> Any:
    """Load the structure :func:`save_state_dict` wrote, with the same types.

    With ``into``, a structure laid out like the saved one (``model.state_dict()``
    for a model saved with ``save_state_dict(model.state_dict(), ...)``), each of its
    tensors receives the saved value in place, as
    ``torch.distributed.checkpoint.load`` fills the state dict it is given: no new
    tensor memory, host tensors read straight from the file in one batch. The
    returned structure holds those very tensors (new tensors only for values
    ``into`` has no place for).

    Args:
        prefix: the prefix (or URL) passed to :func:`save_state_dict`.
        map_location: the device of the tensors (default CPU), as
            ``torch.load``'s ``map_location`` takes a device.
        mmap: CPU tensors share pages with the data file, copy-on-write
            (as torch's own mmap loading does): nothing is copied, and nothing is
            read beyond the checksum pass when ``verify_checksums`` (which
            happens here, before anything is returned: a damaged payload is an
            error, never a value). The tensors of one shard and dtype are views
            of one mapping of the file. Local paths only.
        into: a structure whose tensors receive the values in place (any device;
            each must have its saved value's shape and dtype). Not with ``mmap``.
        verify_checksums: verify every tensor's CRC32C (default).
        storage_options: fsspec filesystem arguments for a URL.

    Raises:
        CheckpointNotFoundError: no bundle at ``prefix``.
        CorruptCheckpointError: damaged files, or no structure (not written by
            :func:`save_state_dict`); names the file and key.
        MismatchError: a tensor of ``into`` has another shape or dtype than its
            saved value (names the key; nothing of that tensor is changed).
        ValueError: ``mmap`` with a URL, a non-CPU ``map_location`` or ``into``;
            ``into`` with tensors the checkpoint has no value for.
    """
    prefix = os.fspath(prefix)
    device = torch.device(map_location) if map_location is not None else torch.device("cpu")
    if mmap and (is_remote(prefix) or device.type != "cpu" or into is not None):
        raise ValueError("mmap=True needs a local path, CPU tensors and no 'into'")
    with open_bundle(prefix, verify_checksums=verify_checksums,
                     storage_options=storage_options) as reader, gc_frozen():
        structure = _read_structure(reader)
        keys = list(dict.fromkeys(structure.tensor_keys))
        if into is not None:
            values = _read_in_place(reader, keys, _destinations(into), device)
        elif mmap:
            values = _mapped_tensors(reader, keys)
        else:
            values = _read_tensors(reader, keys, device)
        return _Decoder(values, reader.index_path).decode(structure.root, 0)


def _destinations(into: Any) -> dict[str, torch.Tensor]:
    """``key -> tensor`` of ``into``: the keys :func:`save_state_dict` gives its tensors."""
    encoder = _Encoder()
    try:
        encoder.encode(into, None, 0)
    except _Refused as exc:
        raise ValueError(f"into{''.join(reversed(exc.place))}: {exc.what}") from exc.__cause__
    return encoder.tensors


def _read_in_place(reader: Any, keys: list[str], destinations: dict[str, torch.Tensor],
                   device: torch.device) -> dict[str, torch.Tensor]:
    """The values of ``keys``: read into their destinations where ``into`` has one (host
    tensors of the saved dtype and shape in one batch, with the entries decoded once;
    others through a host copy), new tensors elsewhere."""
    saved = set(keys)
    unmatched = [key for key in destinations if key not in saved]
    if unmatched:
        raise ValueError(f"into has {len(unmatched)} tensors the checkpoint has no value "
                         f"for, e.g. {unmatched[0]!r}")
    placed = [key for key in keys if key in destinations]
    pairs: list[tuple[str, Any]] = []
    located: list[PayloadLocation] = []
    through_copy: list[str] = []
    for key, loc in zip(placed, reader.payload_locations(placed, checksums=False)):
        dest = destinations[key]
        array = plain_host_array(dest) if loc is not None else None
        if array is not None and loc is not None and loc.dtype == TF_DTYPES.get(dest.dtype) \
                and loc.shape == dest.shape:
            pairs.append((key, array))
            located.append(loc)
        else:
            through_copy.append(key)
    values = _read_tensors(reader, through_copy, torch.device("cpu"))
    for key, value in values.items():  # checked before anything lands
        check_compatible_value(key, value, destinations[key])
    reader.read_many_into(pairs, located)  # verifies every checksum as it reads
    with torch.no_grad():
        for key, value in values.items():
            destinations[key].copy_(value)
    out = {key: destinations[key] for key in placed}
    out.update(_read_tensors(reader, [k for k in keys if k not in destinations], device))
    return out


def check_compatible_value(key: str, value: torch.Tensor, dest: torch.Tensor) -> None:
    """Raise ``MismatchError`` unless ``value`` can land in ``dest`` unchanged."""
    if tuple(value.shape) != tuple(dest.shape):
        raise MismatchError(key, "shape", saved=list(value.shape), live=list(dest.shape))
    if value.dtype != dest.dtype:
        raise MismatchError(key, "dtype", saved=value.dtype, live=dest.dtype)


class _Structure(NamedTuple):
    root: Any  # the spec of the saved object
    tensor_keys: list[str]  # every key a node names, in order, repeats included


def _read_structure(reader: Any) -> _Structure:
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
    keys: list[str] = []

    def collect(node: dict[str, Any], found: Any = keys.append) -> dict[str, Any]:
        """Called by the parser for every JSON object: notes the tensor keys, so that the
        tensors can be made before the structure is decoded (the decoder checks them)."""
        key = node.get("tensor", node.get("parameter"))
        if type(key) is str:
            found(key)
        return node

    try:
        doc = json.loads(raw.decode("utf-8"), object_hook=collect)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(reader.index_path, f"structure is not valid JSON: {exc}",
                                     key=STRUCTURE_KEY) from exc
    if not (isinstance(doc, dict) and doc.get("format") == "torchckpt-nested"
            and doc.get("version") == FORMAT_VERSION and "root" in doc):
        raise CorruptCheckpointError(reader.index_path, "structure has an unknown format or "
                                     f"version (this reader reads version {FORMAT_VERSION})",
                                     key=STRUCTURE_KEY)
    return _Structure(doc["root"], keys)


class _DirectTypes:
    """Which payloads are read or mapped straight into a tensor: little-endian bundles,
    TF dtypes whose torch dtype has the same storage (cached per TF dtype)."""

    def __init__(self, reader: Any) -> None:
        self.little = reader.header.endianness == ENDIAN_LITTLE
        self.found: dict[int, torch.dtype | None] = {}

    def of(self, tf_dtype: int) -> torch.dtype | None:
        """The torch dtype of ``tf_dtype``'s payloads, or None for the general path."""
        if tf_dtype in self.found:
            return self.found[tf_dtype]
        dtype: torch.dtype | None = None
        try:
            dtype = torch_dtype_of(tf_dtype)
            if tf_dtype_of(dtype) != tf_dtype:  # quantized / sub-byte types differ in storage
                dtype = None
        except (TypeError, UntrackableError):
            dtype = None  # no tensor form: read_array raises the precise error
        self.found[tf_dtype] = dtype = dtype if self.little else None
        return dtype


def _read_tensors(reader: Any, keys: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Each key's tensor on ``device``: plain payloads read straight into their tensors (one
    bulk read, file order), anything else through ``read_array``."""
    out: dict[str, torch.Tensor] = {}
    direct: list[tuple[str, torch.Tensor]] = []
    types = _DirectTypes(reader)
    locs = reader.payload_locations(keys, checksums=False)  # read_many_into verifies them
    for key, loc in zip(keys, locs):
        dtype = types.of(loc.dtype) if loc is not None else None
        if dtype is not None:
            shape = loc.shape
        else:
            e = reader.entry(key)
            dtype = types.of(e.dtype) if not e.slices else None
            if dtype is None:
                out[key] = array_to_tensor(reader.read_array(key), e.dtype).to(device)
                continue
            reader.payload_location(key)  # in bounds (names the key) before it is allocated
            shape = e.shape
        out[key] = t = torch.empty(shape, dtype=dtype, device=device)
        direct.append((key, t))
    if needs_staging(device):
        with staging_buffers() as buffers:
            for key, t in direct:
                if t.numel():
                    read_to_device(reader, key, t, buffers)
    else:
        reader.read_many_into((key, tensor_to_buffer(t)) for key, t in direct)
    return out


def _mapped_tensors(reader: Any, keys: list[str]) -> dict[str, torch.Tensor]:
    """CPU tensors over copy-on-write maps of the data files, every checksum verified first
    (on the reader's read-only map); unaligned, empty or unusual entries are read instead."""
    groups: dict[tuple[int, int], list[tuple[int, str, PayloadLocation]]] = {}
    rest: list[str] = []
    for key, loc in zip(keys, reader.payload_locations(keys)):
        if loc is None or loc.size == 0:
            rest.append(key)
        else:
            groups.setdefault((loc.shard_id, loc.dtype), []).append((loc.offset, key, loc))
    out: dict[str, torch.Tensor] = {}
    types = _DirectTypes(reader)
    maps: dict[int, _mmap.mmap] = {}
    for (shard_id, tf_dtype), items in groups.items():
        dtype = types.of(tf_dtype)
        if dtype is None:
            rest += [key for _, key, _ in items]
            continue
        itemsize = FIXED_WIDTH[tf_dtype].itemsize  # type: ignore[index]  # located: fixed-width
        aligned = [item for item in items if not item[0] % itemsize]
        if len(aligned) < len(items):  # a tensor cannot start inside one of its elements
            rest += [key for offset, key, _ in items if offset % itemsize]
        if not aligned:
            continue
        m = maps.get(shard_id)
        if m is None:
            m = maps[shard_id] = _private_map(
                data_path(reader.prefix, shard_id, reader.header.num_shards))
        flat = torch.frombuffer(m, dtype=dtype, count=len(m) // itemsize)
        out.update(_views(flat, aligned, itemsize))
    if rest:
        out.update(_read_tensors(reader, rest, torch.device("cpu")))
    return out


def _views(flat: torch.Tensor, items: list[tuple[int, str, PayloadLocation]],
           itemsize: int) -> dict[str, torch.Tensor]:
    """``key -> `` its payload's elements of ``flat``, viewed as its shape, for each
    ``(byte offset, key, location)`` of ``items`` (offsets are multiples of ``itemsize``).

    One ``split`` makes the tensors of all non-overlapping items (the gaps
    between them become pieces that are dropped); 50,000 tensors take ~60 ms
    this way against ~250 ms made one at a time. Items that overlap an
    earlier one (only a forged index has them) are made one at a time.
    """
    items.sort()  # by offset (then key: offsets repeat only in forged indexes)
    sizes: list[int] = []
    picked: list[tuple[int, str, tuple[int, ...]]] = []  # piece index, key, shape
    out: dict[str, torch.Tensor] = {}
    end = 0
    for offset, key, loc in items:
        start, n = offset // itemsize, loc.size // itemsize
        if start < end:
            out[key] = flat[start:start + n].view(loc.shape)
            continue
        if start > end:
            sizes.append(start - end)
        picked.append((len(sizes), key, loc.shape))
        sizes.append(n)
        end = start + n
    if end < len(flat):
        sizes.append(len(flat) - end)
    pieces = flat.split(sizes)
    for i, key, shape in picked:
        t = pieces[i]
        out[key] = t if len(shape) == 1 else t.view(shape)
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

    def decode(self, node: Any, depth: int) -> Any:
        """The value of ``node``, a container ``depth`` levels below the root."""
        t = type(node)
        if node is None or t is str or t is int or t is bool:
            return node
        if t is dict:
            key = node.get("tensor")
            if type(key) is str and len(node) == 1:  # the common case, first
                found = self.tensors.get(key)
                if found is not None:
                    return found
            return self._tagged(node, depth)
        if t is list:
            self._check_depth(depth)
            return [self.decode(v, depth + 1) for v in node]
        raise self.fail(f"unexpected node {str(node)[:80]}")

    def _check_depth(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(f"structure nests deeper than {MAX_DEPTH} levels")

    def _tagged(self, node: dict[str, Any], depth: int) -> Any:
        if len(node) not in (1, 2):
            raise self.fail(f"unexpected node {str(node)[:80]}")
        if "float" in node:
            try:
                return float.fromhex(node["float"])
            except (TypeError, ValueError) as exc:
                raise self.fail(f"bad float {node['float']!r}") from exc
        if "tensor" in node or "parameter" in node:
            return self._tensor(node)
        if "tuple" in node and type(node["tuple"]) is list:
            self._check_depth(depth)
            return tuple([self.decode(v, depth + 1) for v in node["tuple"]])
        for tag, cls in (("dict", dict), ("odict", collections.OrderedDict)):
            if tag in node and type(node[tag]) is list:
                self._check_depth(depth)
                return self._pairs(node[tag], cls(), depth)
        raise self.fail(f"unexpected node {str(node)[:80]}")

    def _tensor(self, node: dict[str, Any]) -> torch.Tensor:
        key = node.get("tensor", node.get("parameter"))
        if type(key) is not str or key not in self.tensors:
            raise self.fail(f"bad tensor reference {str(node)[:80]}")
        t = self.tensors[key]
        if "parameter" not in node or type(t) is torch.nn.Parameter:  # into's own
            return t
        p = self.parameters.get(key)
        if p is None:
            p = self.parameters[key] = torch.nn.Parameter(
                t, requires_grad=bool(node.get("requires_grad", True)))
        return p

    def _pairs(self, items: list[Any], out: dict[Any, Any], depth: int) -> dict[Any, Any]:
        decode, tensors = self.decode, self.tensors
        for pair in items:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) not in (str, int):
                raise self.fail(f"bad dict item {str(pair)[:80]}")
            k, v = pair
            if type(v) is dict and len(v) == 1:  # a state dict's tensors: decode() inlined
                key = v.get("tensor")
                found = tensors.get(key) if type(key) is str else None
                if found is not None:
                    out[k] = found
                    continue
            out[k] = decode(v, depth + 1)
        return out
