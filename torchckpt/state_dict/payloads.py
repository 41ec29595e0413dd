"""The tensors of a loaded structure: read in one batch, or mapped from the data files."""

from __future__ import annotations

import mmap as _mmap
from typing import Any

import torch

from ..adapters.tensors import array_to_tensor, tensor_to_buffer, tf_dtype_of, torch_dtype_of
from ..errors import UntrackableError
from ..format._fast_entries import PayloadLocation
from ..format.dtypes import FIXED_WIDTH
from ..format.naming import data_path
from ..format.records import ENDIAN_LITTLE
from ..transfer.staging import needs_staging, read_to_device, staging_buffers


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
