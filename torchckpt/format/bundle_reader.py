"""``BundleReader``: looks up, validates and reads entries of a bundle.

Mirrors ``tensor_bundle.cc`` (``BundleReader``). The ``.index`` table is read
whole (it holds metadata only); data shards are opened on first use and
memory-mapped, so reading one tensor touches only that tensor's bytes.

Every entry is treated as hostile until checked (code-style P4): the dtype is
known, dimensions are non-negative, ``0 <= shard_id < num_shards``,
``offset + size`` lies inside the shard, ``size == numel * itemsize`` for
fixed-width dtypes, and the CRC32C matches (unless ``verify_checksums=False``).
Any failure is a :class:`~torchckpt.errors.CorruptCheckpointError` naming the
file, the key and the offset.
"""

from __future__ import annotations

import mmap
import os
from typing import Iterator

import numpy as np

from ..errors import (ChecksumMismatchError, CheckpointNotFoundError, CorruptCheckpointError,
                      KeyNotFoundError, UnsupportedFormatError)
from . import _crc32c
from ._coding import DecodeError
from .dtypes import FIXED_WIDTH, DataType, dtype_name
from .naming import data_path, index_path
from .records import ENDIAN_BIG, ENDIAN_LITTLE, BundleEntry, BundleHeader
from .slices import encode_slice_key, slice_bounds
from .strings import decode_strings

BUNDLE_VERSION = 1  # tensor_bundle.h kTensorBundleVersion
MIN_PRODUCER = 0  # tensor_bundle.h kTensorBundleMinProducer


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class _Shard:
    """An open, memory-mapped data file."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise CorruptCheckpointError(path, "data shard file is missing") from exc
        self.size = os.fstat(self.fd).st_size
        self.map: mmap.mmap | bytes = (mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
                                       if self.size else b"")

    def close(self) -> None:
        if isinstance(self.map, mmap.mmap):
            try:
                self.map.close()
            except BufferError:  # a caller still holds a view; the OS frees it at exit
                pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BundleReader:
    """Reads the bundle at ``prefix``.

    Args:
        prefix: checkpoint prefix (``prefix.index`` must exist).
        verify_checksums: verify the CRC32C of every payload read (default).

    Raises:
        CheckpointNotFoundError: no ``prefix.index``.
        CorruptCheckpointError: the index is malformed.
        UnsupportedFormatError: a header version this reader does not accept.
    """

    def __init__(self, prefix: str, *, verify_checksums: bool = True) -> None:
        from .table import iter_table  # local: keeps the module graph flat for readers

        self.prefix = os.fspath(prefix)
        self.index_path = index_path(self.prefix)
        self.verify_checksums = verify_checksums
        try:
            with open(self.index_path, "rb") as f:
                buf = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise CheckpointNotFoundError(
                f"no checkpoint at '{self.prefix}': '{self.index_path}' does not exist") from exc
        try:
            self._raw: dict[bytes, memoryview] = dict(iter_table(buf))
        except DecodeError as exc:
            raise CorruptCheckpointError(self.index_path, exc.what, offset=exc.offset) from exc
        self.header = self._decode_header()
        self._entries: dict[bytes, BundleEntry] = {}
        self._shards: dict[int, _Shard] = {}

    def _decode_header(self) -> BundleHeader:
        raw = self._raw.pop(b"", None)
        if raw is None:
            raise CorruptCheckpointError(self.index_path, "the bundle header (key \"\") is missing")
        try:
            h = BundleHeader.decode(raw)
        except DecodeError as exc:
            raise CorruptCheckpointError(self.index_path, f"bad bundle header: {exc.what}") from exc
        if h.num_shards < 1:
            raise CorruptCheckpointError(self.index_path, f"header has num_shards {h.num_shards}")
        if h.endianness not in (ENDIAN_LITTLE, ENDIAN_BIG):
            raise CorruptCheckpointError(self.index_path, f"unknown endianness {h.endianness}")
        if h.min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in h.bad_consumers \
                or h.producer < MIN_PRODUCER:
            raise UnsupportedFormatError(
                self.index_path, f"bundle version (producer {h.producer}, min consumer "
                f"{h.min_consumer}, bad consumers {list(h.bad_consumers)}) not readable by "
                f"version {BUNDLE_VERSION}")
        return h

    # --- lookups -------------------------------------------------------------------------

    @staticmethod
    def _k(key: str | bytes) -> bytes:
        return key.encode("utf-8") if isinstance(key, str) else bytes(key)

    def keys(self) -> list[bytes]:
        """Every key except the header, in table order (slice keys included)."""
        return list(self._raw)

    def __contains__(self, key: str | bytes) -> bool:
        return self._k(key) in self._raw

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._raw)

    def entry(self, key: str | bytes) -> BundleEntry:
        """The decoded, validated entry of ``key``."""
        k = self._k(key)
        e = self._entries.get(k)
        if e is not None:
            return e
        raw = self._raw.get(k)
        if raw is None:
            raise KeyNotFoundError(self.prefix, k)
        try:
            e = BundleEntry.decode(raw)
        except DecodeError as exc:
            raise CorruptCheckpointError(self.index_path, f"bad entry: {exc.what}", key=k) from exc
        self._validate(k, e)
        self._entries[k] = e
        return e

    def _validate(self, k: bytes, e: BundleEntry) -> None:
        if e.dtype != DataType.DT_STRING and e.dtype not in FIXED_WIDTH:
            raise UnsupportedFormatError(self.index_path, f"unsupported dtype {dtype_name(e.dtype)}"
                                         f" ({e.dtype})", key=k)
        if any(d < 0 for d in e.shape):
            raise CorruptCheckpointError(self.index_path, f"negative dimension in shape {e.shape}",
                                         key=k)
        if e.slices:
            return
        if not 0 <= e.shard_id < self.header.num_shards:
            raise CorruptCheckpointError(self.index_path, f"shard id {e.shard_id} out of range for "
                                         f"{self.header.num_shards} shards", key=k)
        if e.offset < 0 or e.size < 0:
            raise CorruptCheckpointError(self.index_path, f"negative offset {e.offset} or size "
                                         f"{e.size}", key=k)
        info = FIXED_WIDTH.get(e.dtype)  # type: ignore[call-overload]
        if info is not None and e.size != numel(e.shape) * info.itemsize:
            raise CorruptCheckpointError(self.index_path, f"size {e.size} does not match shape "
                                         f"{list(e.shape)} of {info.name}", key=k)

    def shard(self, shard_id: int) -> _Shard:
        s = self._shards.get(shard_id)
        if s is None:
            s = self._shards[shard_id] = _Shard(
                data_path(self.prefix, shard_id, self.header.num_shards))
        return s

    def payload_location(self, key: str | bytes) -> tuple[_Shard, BundleEntry]:
        """The shard and entry of an unsliced key, with ``offset + size`` checked."""
        k = self._k(key)
        e = self.entry(k)
        if e.slices:
            raise ValueError(f"{k!r} is sliced; read it with read_array")
        s = self.shard(e.shard_id)
        if e.offset + e.size > s.size:
            raise CorruptCheckpointError(s.path, f"payload (offset {e.offset}, size {e.size}) runs "
                                         f"past the end of the {s.size}-byte file", key=k,
                                         offset=e.offset)
        return s, e

    def read_raw(self, key: str | bytes) -> memoryview:
        """The payload of an unsliced key as a view of the mapped file, checksum verified."""
        s, e = self.payload_location(key)
        view = memoryview(s.map)[e.offset:e.offset + e.size]
        if self.verify_checksums and e.dtype != DataType.DT_STRING:
            self.check_crc(key, e, view, s.path)
        return view

    def check_crc(self, key: str | bytes, e: BundleEntry, data: object, path: str) -> None:
        """Raise ``ChecksumMismatchError`` unless ``data`` has ``e``'s CRC32C."""
        actual = _crc32c.mask(_crc32c.value(data))  # type: ignore[arg-type]
        if actual != e.crc32c:
            raise ChecksumMismatchError(path, f"checksum mismatch (stored 0x{e.crc32c:08x}, "
                                        f"computed 0x{actual:08x})", key=self._k(key),
                                        offset=e.offset)

    # --- values ----------------------------------------------------------------------------

    def read_array(self, key: str | bytes) -> np.ndarray:
        """A new little-endian numpy array of ``key``'s value (sliced keys reassembled).

        Fixed-width values come in their storage dtype (bfloat16 and float8 as
        unsigned bit patterns, see :mod:`.dtypes`); strings as an object array of ``bytes``.
        """
        k = self._k(key)
        e = self.entry(k)
        if e.slices:
            return self._reassemble(k, e)
        if e.dtype == DataType.DT_STRING:
            return self._read_strings(k, e)
        raw = self.read_raw(k)
        info = FIXED_WIDTH[e.dtype]  # type: ignore[index]
        dt = info.storage
        if self.header.endianness == ENDIAN_BIG:
            dt = dt.newbyteorder(">")
        try:
            arr = np.frombuffer(raw, dtype=dt).reshape(e.shape)
        except ValueError as exc:
            raise UnsupportedFormatError(self.index_path, f"cannot hold shape {list(e.shape)}: {exc}",
                                         key=k) from exc
        return arr.astype(info.storage, copy=True)

    def read_into(self, key: str | bytes, out: object) -> None:
        """Read an unsliced fixed-width little-endian payload straight into ``out``.

        ``out`` is a writable C-contiguous buffer of exactly the payload's size
        (a numpy view of the destination tensor). The checksum is verified on
        ``out`` afterwards, so no intermediate copy is made.
        """
        s, e = self.payload_location(key)
        dest = memoryview(out).cast("B")  # type: ignore[arg-type]
        if dest.nbytes != e.size:
            raise ValueError(f"destination of {dest.nbytes} bytes for a {e.size}-byte payload")
        done = 0
        while done < e.size:
            n = os.preadv(s.fd, [dest[done:]], e.offset + done)
            if n <= 0:
                raise CorruptCheckpointError(s.path, "file shrank while reading", key=self._k(key),
                                             offset=e.offset + done)
            done += n
        if self.verify_checksums:
            self.check_crc(key, e, dest, s.path)

    def _read_strings(self, k: bytes, e: BundleEntry) -> np.ndarray:
        s, _ = self.payload_location(k)
        raw = memoryview(s.map)[e.offset:e.offset + e.size]
        try:
            values = decode_strings(raw, numel(e.shape),
                                    big_endian=self.header.endianness == ENDIAN_BIG,
                                    stored_crc=e.crc32c if self.verify_checksums else None)
        except DecodeError as exc:
            cls = ChecksumMismatchError if "checksum" in exc.what else CorruptCheckpointError
            raise cls(s.path, exc.what, key=k, offset=e.offset) from exc
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out.reshape(e.shape)

    def _reassemble(self, k: bytes, e: BundleEntry) -> np.ndarray:
        regions = []
        for tslice in e.slices:
            try:
                bounds = slice_bounds(tslice, e.shape)
            except ValueError as exc:
                raise CorruptCheckpointError(self.index_path, f"bad slice: {exc}", key=k) from exc
            part_key = encode_slice_key(k, tslice)
            if part_key not in self._raw:
                raise CorruptCheckpointError(self.index_path, "slice entry missing", key=k)
            regions.append((bounds, part_key))
        self._check_cover(k, e, [b for b, _ in regions])
        if e.dtype == DataType.DT_STRING:
            full = np.empty(e.shape, dtype=object)
        else:
            full = np.empty(e.shape, dtype=FIXED_WIDTH[e.dtype].storage)  # type: ignore[index]
        for bounds, part_key in regions:
            part = self.read_array(part_key)
            want = tuple(b - a for a, b in bounds)
            if self.entry(part_key).dtype != e.dtype or part.shape != want:
                raise CorruptCheckpointError(self.index_path, f"slice entry has dtype/shape "
                                             f"{dtype_name(self.entry(part_key).dtype)}"
                                             f"{list(part.shape)}, expected {list(want)}", key=k)
            full[tuple(slice(a, b) for a, b in bounds)] = part
        return full

    def _check_cover(self, k: bytes, e: BundleEntry, boxes: list) -> None:
        """Slices must not overlap and must cover the tensor exactly (tensor_slice_set.cc)."""
        for i, a in enumerate(boxes):
            for b in boxes[:i]:
                if all(max(x0, y0) < min(x1, y1) for (x0, x1), (y0, y1) in zip(a, b)):
                    raise CorruptCheckpointError(self.index_path, "overlapping slices", key=k)
        covered = sum(numel(tuple(b - a for a, b in box)) for box in boxes)
        if covered != numel(e.shape):
            raise CorruptCheckpointError(self.index_path, f"slices cover {covered} of "
                                         f"{numel(e.shape)} elements", key=k)

    def close(self) -> None:
        for s in self._shards.values():
            s.close()
        self._shards.clear()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
