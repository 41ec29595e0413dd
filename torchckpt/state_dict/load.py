"""Loading a nested structure: the JSON spec checked and decoded, its tensors made,
mapped or filled in place (``into``)."""

from __future__ import annotations

import collections
import json
import os
from typing import Any, NamedTuple

import torch

from ..errors import CorruptCheckpointError, MismatchError
from ..format._io import gc_frozen
from ..format.dtypes import DataType
from ..format.storage import StorageOptions, is_remote, open_bundle
from ..transfer.in_place import InPlaceReads
from .payloads import _mapped_tensors, _read_tensors
from .save import _Encoder
from .spec import FORMAT_VERSION, MAX_DEPTH, STRUCTURE_KEY, Location, _Refused


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
    ``into`` has no place for). Tensors are paired by their place in the structure.

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
            destinations = _destinations_by_place(structure.root, into)
            if destinations is None:
                destinations = _destinations(into)
            values = _read_in_place(reader, keys, destinations, device)
        elif mmap:
            values = _mapped_tensors(reader, keys)
        else:
            values = _read_tensors(reader, keys, device)
        return _Decoder(values, reader.index_path).decode(structure.root, 0)


def _destinations_by_place(spec: Any, into: Any) -> dict[str, torch.Tensor] | None:
    """``key -> tensor``: each tensor of ``into`` paired with the saved tensor at the same
    place of the structure, in one walk of the saved spec beside ``into``; ``None``
    where that pairs some tensor of ``into`` with no key or with two (a tensor the
    checkpoint has no value for, or one shared where the saved ones were not), for
    :func:`_destinations` to decide by key, and name the culprit.

    Why: keys are made from places, so both pair alike, but computing the keys of
    ``into`` as a save does costs ~2 us a tensor, most of loading 50,000 in place.
    The spec is the file's: anything unexpected in it is left unpaired here, for
    the decoder to report.
    """
    out: dict[str, torch.Tensor] = {}
    stack = [(spec, into)]
    while stack:
        node, live = stack.pop()
        kind = type(node)
        if kind is list:
            if type(live) in _SEQUENCES:
                stack.extend(zip(node, live))
        elif kind is dict:
            inner = node.get("dict", node.get("odict", node.get("tuple")))
            if type(inner) is not list:
                key = node.get("tensor", node.get("parameter"))
                if type(key) is str and isinstance(live, torch.Tensor):
                    out.setdefault(key, live)
            elif "tuple" in node:
                if type(live) in _SEQUENCES:
                    stack.extend(zip(inner, live))
            elif isinstance(live, dict):
                _pair_items(inner, live, out, stack)
    paired = {id(t) for t in out.values()}
    if len(paired) != len(out) or paired != _tensor_ids(into):
        return None
    return out


def _pair_items(items: list[Any], live: dict[Any, Any], out: dict[str, torch.Tensor],
                stack: list[tuple[Any, Any]]) -> None:
    """The saved dict items ``items`` beside ``live``: tensors paired at once (a state
    dict's), containers pushed on ``stack``."""
    get = live.get
    for pair in items:
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) not in _KEYS:
            continue
        k, v = pair
        if type(v) is dict and len(v) == 1:
            key = v.get("tensor")
            if type(key) is str:
                t = get(k)
                if isinstance(t, torch.Tensor):
                    out.setdefault(key, t)
                continue
        stack.append((v, get(k)))


_SEQUENCES = (list, tuple)
_KEYS = (str, int)


def _tensor_ids(into: Any) -> set[int] | None:
    """The ids of the tensors in ``into``; ``None`` where a save would refuse ``into``
    (a structure deeper than a save takes, a cycle included, or a value of another
    type), for :func:`_destinations` to name the culprit."""
    ids: set[int] = set()
    stack = [(into, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, torch.Tensor):
            ids.add(id(value))
        elif isinstance(value, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                return None
            for v in value.values() if isinstance(value, dict) else value:
                if type(v) in _PLAIN_TENSORS:  # the common case, not pushed
                    ids.add(id(v))
                else:
                    stack.append((v, depth + 1))
        elif value is not None and type(value) not in _SCALARS:
            return None
    return ids


_SCALARS = (bool, int, float, str)


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


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
    in_place = InPlaceReads(reader)
    missed = in_place.add_many(placed, [destinations[key] for key in placed],
                               reader.payload_locations(placed, checksums=False))
    through_copy = [placed[i] for i in missed]
    values = _read_tensors(reader, through_copy, torch.device("cpu"))
    for key, value in values.items():  # checked before anything lands
        check_compatible_value(key, value, destinations[key])
    in_place.run(reader)  # verifies every checksum as it reads
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
