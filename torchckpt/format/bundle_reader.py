"""``BundleReader``: looks up, validates and reads entries of a bundle.

Mirrors ``tensor_bundle.cc`` (``BundleReader``). The ``.index`` table is read
whole (it holds metadata only); data shards are opened on first use and
memory-mapped, so reading one tensor touches only that tensor's bytes.

Every entry is treated as hostile until checked (code-style P4): the dtype is
known before a value is decoded (entries of other dtypes are listed and
checksummed only), dimensions are non-negative, ``0 <= shard_id < num_shards``,
``offset + size`` lies inside the shard, ``size == numel * itemsize`` for
fixed-width dtypes, and the CRC32C matches (unless ``verify_checksums=False``).
Any failure is a :class:`~torchckpt.errors.CorruptCheckpointError` naming the
file, the key and the offset. A sliced tensor's slices are found, checked and
copied by :mod:`.boxes`, through this reader's lookups and payload reads.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import stat
from bisect import bisect_left
from itertools import count, islice
from operator import itemgetter
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import (
    CheckpointNotFoundError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    KeyNotFoundError,
    UnsupportedFormatError,
)
from . import _crc32c
from ._coding import ChecksumDecodeError, DecodeError
from ._fast_entries import (
    HeadCache,
    PayloadLocation,
    decode_plain,
    plain_entry,
    plain_location,
    plain_locations,
    plain_payloads,
)
from ._io import (
    PARALLEL_BYTES,
    Helper,
    ShortReadError,
    accelerator,
    copy_to_addresses,
    gc_frozen,
    read_parallel,
    read_runs,
    read_with_crc,
)
from .boxes import reassemble
from .commit import complete_commit
from .dtypes import FIXED_WIDTH, DataType, dtype_name, enum_name, has_array_form
from .naming import data_path, index_path
from .records import ENDIAN_BIG, ENDIAN_LITTLE, BundleEntry, BundleHeader
from .slices import slice_key_prefix, slice_key_suffix
from .strings import decode_strings
from .variants import variant_crc32c

BUNDLE_VERSION = 1  # tensor_bundle.h kTensorBundleVersion
_BATCH = 8192  # read_many_into works through its pairs this many at a time (bounded memory)
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
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise CorruptCheckpointError(path, "data shard file is missing") from exc
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):  # a directory opens fine and then fails in mmap
            os.close(self.fd)
            self.fd = -1
            raise CorruptCheckpointError(path, "data shard is not a regular file")
        self.size = st.st_size
        self.map: mmap.mmap | bytes = (mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
                                       if self.size else b"")

    @property
    def mapped(self) -> mmap.mmap | None:
        """The whole file mapped, or ``None`` for an empty one."""
        return self.map if isinstance(self.map, mmap.mmap) else None

    def close(self) -> None:
        if isinstance(self.map, mmap.mmap):
            try:
                self.map.close()
            except BufferError:  # a caller still holds a view; the OS frees it at exit
                pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _slice_entry_positions(keys: list[bytes], k: bytes, e: BundleEntry) -> Iterator[int]:
    """Where, in sorted ``keys``, the slice entries of ``k``'s listed slices are."""
    prefix = slice_key_prefix(k)
    suffixes = {slice_key_suffix(s) for s in e.slices}
    i = bisect_left(keys, prefix)
    while i < len(keys) and keys[i].startswith(prefix):
        if keys[i][len(prefix):] in suffixes:
            yield i
        i += 1


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
        buf = self._read_index()
        try:
            self._raw: dict[bytes, bytes] = dict(iter_table(buf))
        except DecodeError as exc:
            cls = (ChecksumMismatchError if isinstance(exc, ChecksumDecodeError)
                   else CorruptCheckpointError)
            raise cls(self.index_path, exc.what, offset=exc.offset) from exc
        self.header = self._decode_header()
        self._entries: dict[bytes, BundleEntry] = {}
        self._shards: dict[int, _Shard] = {}
        self._helper = Helper()  # second reader thread for large payloads, started on first use
        self._heads: HeadCache = {}  # entry heads decoded so far (see _fast_entries)

    def _read_index(self) -> bytes:
        """The bytes of ``.index`` (after completing a commit a crash interrupted)."""
        complete_commit(self.prefix)  # a re-save a crash interrupted (commit.py)
        try:
            with open(self.index_path, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise CheckpointNotFoundError(
                f"no checkpoint at '{self.prefix}': '{self.index_path}' does not exist") from exc

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

    def listed_keys(self) -> list[bytes]:
        """The keys TF's ``list_variables`` shows: every key except the header and the
        slice entries of sliced tensors, in table order (``checkpoint_reader.cc``).

        Decodes every entry. Linear in the index: a sliced tensor's slice entries are
        found as the run of keys that start with its slice-key prefix, never by
        building one key per listed slice (a long key listing many slices would make
        that quadratic).

        Raises:
            CorruptCheckpointError: an entry is malformed.
        """
        keys = list(self._raw)
        hidden: set[int] = set()
        for k in keys:
            e = self.entry(k)
            if e.slices:
                hidden.update(_slice_entry_positions(keys, k, e))
        return [k for i, k in enumerate(keys) if i not in hidden]

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
        plain = decode_plain(raw, self._heads)
        try:
            e = plain_entry(*plain[:6]) if plain is not None else BundleEntry.decode(raw)
        except DecodeError as exc:
            raise CorruptCheckpointError(self.index_path, f"bad entry: {exc.what}", key=k) from exc
        self._validate(k, e)
        self._entries[k] = e
        return e

    def _validate(self, k: bytes, e: BundleEntry) -> None:
        # Any dtype is a valid entry (DT_VARIANT iterator state, unknown values): it is listed
        # and its checksum verified; only reading it as an array is refused (check_decodable).
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

    def check_decodable(self, k: bytes, e: BundleEntry) -> None:
        """Raise ``UnsupportedFormatError`` unless ``e`` holds strings or fixed-width numbers.

        DT_VARIANT (e.g. a ``tf.data`` iterator's state), DT_RESOURCE and dtypes
        newer than this reader have no array form; :meth:`read_raw` still
        verifies their bytes.
        """
        if not has_array_form(e.dtype):
            raise UnsupportedFormatError(
                self.index_path, f"unsupported dtype {enum_name(e.dtype)} ({e.dtype}): its "
                f"{dtype_name(e.dtype)} values have no array form (the entry is listed and its "
                "checksum verified, nothing more)", key=k)

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
        try:
            s = self.shard(e.shard_id)
        except CorruptCheckpointError as exc:  # name the key whose read needed the shard
            raise CorruptCheckpointError(exc.path, exc.what, key=k) from exc
        if e.offset + e.size > s.size:
            raise CorruptCheckpointError(s.path, f"payload (offset {e.offset}, size {e.size}) runs "
                                         f"past the end of the {s.size}-byte file", key=k,
                                         offset=e.offset)
        return s, e

    def read_raw(self, key: str | bytes) -> memoryview:
        """The payload of an unsliced key as a view of the mapped file, checksum verified
        (for DT_VARIANT as :mod:`.variants` describes; strings are checked when decoded)."""
        s, e = self.payload_location(key)
        view = self._payload_bytes(s, e)
        if self.verify_checksums and e.dtype == DataType.DT_VARIANT:
            self._check_variant(self._k(key), e, view, s.path)
        elif self.verify_checksums and e.dtype != DataType.DT_STRING:
            self.check_crc(key, e, view, s.path)
        return view

    def _payload_bytes(self, s: _Shard, e: BundleEntry) -> memoryview:
        """The payload bytes of ``e`` in shard ``s`` (offset and size already checked)."""
        return memoryview(s.map)[e.offset:e.offset + e.size]

    def _check_variant(self, k: bytes, e: BundleEntry, view: memoryview, path: str) -> None:
        try:
            crc = variant_crc32c(view, numel(e.shape))
        except DecodeError as exc:
            cls = (ChecksumMismatchError if isinstance(exc, ChecksumDecodeError)
                   else CorruptCheckpointError)
            raise cls(path, exc.what, key=k, offset=e.offset + exc.offset) from exc
        if _crc32c.mask(crc) != e.crc32c:
            raise ChecksumMismatchError(path, f"checksum mismatch (stored 0x{e.crc32c:08x}, "
                                        f"computed 0x{_crc32c.mask(crc):08x})", key=k,
                                        offset=e.offset)

    def check_crc(self, key: str | bytes, e: BundleEntry, data: object, path: str) -> None:
        """Raise ``ChecksumMismatchError`` unless ``data`` has ``e``'s CRC32C."""
        actual = _crc32c.mask(_crc32c.value(data))  # type: ignore[arg-type]
        if actual != e.crc32c:
            raise ChecksumMismatchError(path, f"checksum mismatch (stored 0x{e.crc32c:08x}, "
                                        f"computed 0x{actual:08x})", key=self._k(key),
                                        offset=e.offset)

    # --- values ----------------------------------------------------------------------------

    def read_array(self, key: str | bytes) -> np.ndarray:
        """A new little-endian numpy array of ``key``'s value (sliced keys reassembled
        by :func:`.boxes.reassemble`).

        Fixed-width values come in their storage dtype (bfloat16 and float8 as
        unsigned bit patterns, see :mod:`.dtypes`); strings as an object array of ``bytes``.
        """
        k = self._k(key)
        e = self.entry(k)
        self.check_decodable(k, e)
        if e.slices:
            return reassemble(self, k)
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
            raise UnsupportedFormatError(self.index_path,
                                         f"cannot hold shape {list(e.shape)}: {exc}",
                                         key=k) from exc
        return arr.astype(info.storage, copy=True)

    def read_into(self, key: str | bytes, out: object) -> None:
        """Read an unsliced fixed-width little-endian payload straight into ``out``.

        ``out`` is a writable C-contiguous buffer of exactly the payload's size
        (a numpy view of the destination tensor). No intermediate copy is made;
        the checksum is computed on ``out`` itself. Payloads of 8 MiB or more
        are read and checksummed in chunks by two threads (see :mod:`._io`).
        """
        s, e = self.payload_location(key)
        self.check_decodable(self._k(key), e)
        dest = memoryview(out).cast("B")  # type: ignore[arg-type]
        if dest.nbytes != e.size:
            raise ValueError(f"destination of {dest.nbytes} bytes for a {e.size}-byte payload")
        try:
            crc = read_with_crc(s.fd, dest, e.offset, self._helper, self.verify_checksums,
                                s.mapped)
        except ShortReadError as exc:
            raise CorruptCheckpointError(s.path, "file shrank while reading", key=self._k(key),
                                         offset=exc.offset) from exc
        if self.verify_checksums and _crc32c.mask(crc) != e.crc32c:
            self.check_crc(key, e, dest, s.path)  # raises, with both CRCs in the message

    def read_chunks(self, key: str | bytes,
                    buffers: Sequence[memoryview]) -> Iterator[tuple[int, memoryview]]:
        """Read an unsliced fixed-width payload piece by piece into ``buffers``, used in
        turn; yields ``(position in the payload, the filled part of the buffer)``.

        For destinations that are not in host memory (GPU tensors, see
        ``torchckpt/transfer/staging.py``): the caller moves each piece on before it asks
        for the piece that reuses the same buffer, so host memory stays at the
        size of ``buffers`` whatever the payload's. The checksum covers the whole
        payload and is verified after the last piece, before the generator ends.

        Raises:
            ChecksumMismatchError: after the last piece, if the payload's CRC32C differs.
            CorruptCheckpointError: the file ended early.
        """
        s, e = self.payload_location(key)
        self.check_decodable(self._k(key), e)
        verify = self.verify_checksums
        crc = pos = 0
        for i in count():
            if pos >= e.size:
                break
            buf = buffers[i % len(buffers)].cast("B")
            part = buf[:min(buf.nbytes, e.size - pos)]
            try:
                c = read_with_crc(s.fd, part, e.offset + pos, self._helper, verify, s.mapped)
            except ShortReadError as exc:
                raise CorruptCheckpointError(s.path, "file shrank while reading", key=self._k(key),
                                             offset=exc.offset) from exc
            crc = _crc32c.combine(crc, c, part.nbytes) if pos else c
            yield pos, part
            pos += part.nbytes
        if verify and _crc32c.mask(crc) != e.crc32c:
            raise ChecksumMismatchError(s.path, f"checksum mismatch (stored 0x{e.crc32c:08x}, "
                                        f"computed 0x{_crc32c.mask(crc):08x})", key=self._k(key),
                                        offset=e.offset)

    def read_many_into(self, pairs: Iterable[tuple[str | bytes, object]],
                       locations: Sequence[PayloadLocation | None] | None = None) -> None:
        """:meth:`read_into` for many ``(key, out)`` pairs at once; same checks, same errors.

        Why: restoring 50,000 small tensors one :meth:`read_into` at a time costs
        a system call and ~10 us of Python each. Here all entries are decoded at
        once (:func:`._fast_entries.plain_locations`), the payloads of each shard
        are read in file order, adjacent small ones with one ``preadv`` straight
        into their destinations, large ones in chunks by two threads, and all
        checksums are compared in one vector operation. The cyclic GC scans only
        new objects meanwhile (:func:`._io.gc_frozen`). Entries that are not plain
        fixed-width payloads go through :meth:`read_into`.

        ``locations``, one per pair, are what :meth:`payload_locations` returned for
        the keys (a caller that checked dtypes and shapes first): entries are then
        not decoded again; a ``None`` takes the path above.

        Raises:
            CorruptCheckpointError: as :meth:`read_into` (checksum, truncation, ...).
            KeyNotFoundError: a key is not in the checkpoint.
            ValueError: a destination's size differs from its payload's.
        """
        it = iter(pairs)
        done = 0
        with gc_frozen():
            while batch := list(islice(it, _BATCH)):  # bounds the bookkeeping memory
                given = None if locations is None else locations[done:done + len(batch)]
                done += len(batch)
                self._read_batch([key if type(key) is bytes else self._k(key) for key, _ in batch],
                                 [out for _, out in batch], given)

    def _read_batch(self, keys: list[bytes], outs: list[object],
                    given: Sequence[PayloadLocation | None] | None = None) -> None:
        """One batch of :meth:`read_many_into`: decode, group by shard, read in file order."""
        cached, raw_get, shards = self._entries, self._raw.get, self._shards
        locs: Sequence[tuple[int, int, int, int] | None]
        if given is not None:
            locs = [None if g is None else (g.shard_id, g.offset, g.size, g.crc32c)
                    for g in given]
        else:
            locs = plain_locations([b"" if k in cached else raw_get(k, b"") for k in keys],
                                   self._heads)
        by_shard: dict[int, list[tuple[int, memoryview, int, bytes]]] = {}
        for k, out, loc in zip(keys, outs, locs):
            if loc is None and k in cached:
                loc = self._plain_location(k)
            dest = memoryview(out)  # type: ignore[arg-type]
            s = shards.get(loc[0]) if loc is not None else None
            if loc is None or s is None or loc[1] + loc[2] > s.size or not dest.c_contiguous:
                self.read_into(k, out)  # the general path: checks, errors, opens the shard
                continue
            shard_id, offset, size, crc = loc
            if dest.nbytes != size:
                raise ValueError(f"destination of {dest.nbytes} bytes for a {size}-byte "
                                 f"payload ({k!r})")
            by_shard.setdefault(shard_id, []).append((offset, dest, crc, k))
        for shard_id, items in by_shard.items():
            items.sort(key=itemgetter(0))
            self._read_sorted(self._shards[shard_id], items)

    def can_read_at(self) -> bool:
        """Whether :meth:`read_at` works here: the C accelerator is loaded (x86-64 with
        AVX2 and VPCLMULQDQ, ``TORCHCKPT_NO_NATIVE`` unset) and the shards are local files."""
        return accelerator() is not None

    def read_at(self, keys: Sequence[str | bytes], locations: Sequence[PayloadLocation],
                addresses: Sequence[int]) -> None:
        """Copy each located payload (:meth:`payload_locations`) to the raw memory at its
        address, every checksum verified as :meth:`read_many_into` verifies it.

        For the torch layer, which holds tensors rather than buffers: a tensor's
        ``data_ptr()`` costs ~0.1 us, a buffer view of it ~2 us, which is most of
        the per-tensor cost of restoring 50,000 small tensors. Copies go through
        the shard's memory map with the CRC in the same pass (see
        :func:`._io.copy_to_addresses`). Only where :meth:`can_read_at`.

        The caller guarantees that each ``[address, address + location.size)`` is
        writable memory it keeps alive during the call.

        Raises:
            ChecksumMismatchError: a payload's CRC32C differs (names file, key, offset).
            CorruptCheckpointError: a shard is not open, or shrank since it was opened.
        """
        shard_ids = sorted({loc.shard_id for loc in locations})
        for shard_id in shard_ids:
            s = self._shards.get(shard_id)
            if not isinstance(s, _Shard):
                raise CorruptCheckpointError(self.index_path, f"data shard {shard_id} is not "
                                             "open for an addressed read")
            # columns in file order (usually the order given), not a record per payload
            mine: Sequence[int] = range(len(locations)) if len(shard_ids) == 1 else \
                [i for i, loc in enumerate(locations) if loc.shard_id == shard_id]
            offsets = [locations[i].offset for i in mine]
            if offsets != sorted(offsets):
                mine = [mine[k] for k in sorted(range(len(mine)), key=offsets.__getitem__)]
                offsets = [locations[i].offset for i in mine]
            sizes = [locations[i].size for i in mine]
            large = [k for k, size in enumerate(sizes) if size >= PARALLEL_BYTES]
            if large:
                small = [k for k, size in enumerate(sizes) if size < PARALLEL_BYTES]
                self._read_at_small(s, keys, locations, addresses, [mine[k] for k in small],
                                    [offsets[k] for k in small], [sizes[k] for k in small])
            else:
                self._read_at_small(s, keys, locations, addresses, mine, offsets, sizes)
            # large payloads by both threads (read_parallel), through views of their memory
            self._read_sorted(s, [(offsets[k], memoryview((ctypes.c_char * sizes[k])
                                                          .from_address(addresses[mine[k]])),
                                   locations[mine[k]].crc32c, self._k(keys[mine[k]]))
                                  for k in large])

    def _read_at_small(self, s: _Shard, keys: Sequence[str | bytes],
                       locations: Sequence[PayloadLocation], addresses: Sequence[int],
                       mine: Sequence[int], offsets: list[int], sizes: list[int]) -> None:
        """:meth:`read_at` of the payloads ``mine`` of shard ``s`` (in file order, at
        ``offsets``, of ``sizes``), copied from the memory map with their CRCs."""
        stored = [locations[i].crc32c for i in mine] if self.verify_checksums else None
        try:
            bad = copy_to_addresses(s.fd, s.mapped, offsets, [addresses[i] for i in mine],
                                    sizes, stored)
        except ShortReadError as exc:
            k = next((keys[i] for i, o, n in zip(mine, offsets, sizes) if o + n > exc.offset),
                     b"")
            raise CorruptCheckpointError(s.path, "file shrank while reading", key=self._k(k),
                                         offset=exc.offset) from exc
        if bad >= 0:
            off, size = offsets[bad], sizes[bad]
            payload = memoryview(s.map)[off:off + size]
            try:  # raises
                self._crc_error(s, (off, payload, locations[mine[bad]].crc32c,
                                    self._k(keys[mine[bad]])))
            finally:
                payload.release()

    def _plain_location(self, k: bytes) -> tuple[int, int, int, int] | None:
        """``(shard_id, offset, size, crc32c)`` of a plain fixed-width entry whose shard is
        open, checked as :meth:`entry` and :meth:`payload_location` check it; else ``None``.

        Makes no :class:`BundleEntry` (see :mod:`._fast_entries`): the bulk
        path's per-entry cost. Anything unusual (sliced, string, cold shard,
        invalid) returns ``None`` and takes the general path.
        """
        e = self._entries.get(k)
        if e is not None:  # decoded and validated before (entry() was called)
            info = FIXED_WIDTH.get(e.dtype)  # type: ignore[call-overload]
            if e.slices or info is None or e.size != numel(e.shape) * info.itemsize:
                return None
            return e.shard_id, e.offset, e.size, e.crc32c
        raw = self._raw.get(k)
        return plain_location(raw, self._heads) if raw is not None else None

    def _read_sorted(self, s: _Shard, items: list[tuple[int, memoryview, int, bytes]]) -> None:
        """Read ``(offset, dest, stored crc, key)`` items of one shard, sorted by offset."""
        verify = self.verify_checksums
        small = [it for it in items if it[1].nbytes < PARALLEL_BYTES]
        big = [it for it in items if it[1].nbytes >= PARALLEL_BYTES]
        try:
            crcs = read_runs(s.fd, [it[0] for it in small], [it[1] for it in small], verify)
            if verify:
                bad = _crc32c.mismatches(crcs, [it[2] for it in small])
                if bad:
                    self._crc_error(s, small[bad[0]])
            if big:  # both threads over all of them: no wait at tensor boundaries
                crcs = read_parallel(s.fd, [(it[1], it[0]) for it in big], self._helper, verify,
                                     s.mapped)
                bad = _crc32c.mismatches(crcs, [it[2] for it in big]) if verify else []
                if bad:
                    self._crc_error(s, big[bad[0]])
        except ShortReadError as exc:
            k = next((k for off, dest, _, k in items if off + dest.nbytes > exc.offset), b"")
            raise CorruptCheckpointError(s.path, "file shrank while reading", key=k,
                                         offset=exc.offset) from exc

    def _crc_error(self, s: _Shard, item: tuple[int, memoryview, int, bytes]) -> None:
        off, dest, stored, k = item
        self.check_crc(k, BundleEntry(0, (), offset=off, crc32c=stored), dest, s.path)  # raises

    def _read_strings(self, k: bytes, e: BundleEntry) -> np.ndarray:
        s, _ = self.payload_location(k)
        raw = self._payload_bytes(s, e)
        try:
            values = decode_strings(raw, numel(e.shape),
                                    big_endian=self.header.endianness == ENDIAN_BIG,
                                    stored_crc=e.crc32c if self.verify_checksums else None)
        except DecodeError as exc:
            cls = (ChecksumMismatchError if isinstance(exc, ChecksumDecodeError)
                   else CorruptCheckpointError)
            raise cls(s.path, exc.what, key=k, offset=e.offset) from exc
        try:
            return values.reshape(e.shape)
        except ValueError as exc:  # numpy holds at most 64 dimensions
            raise UnsupportedFormatError(self.index_path, f"cannot hold shape {list(e.shape)}: "
                                         f"{exc}", key=k) from exc

    def close(self) -> None:
        self._helper.close()
        for s in self._shards.values():
            s.close()
        self._shards.clear()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def payload_locations(self, keys: Sequence[str | bytes], *, checksums: bool = True
                          ) -> list[PayloadLocation | None]:
        """:meth:`payload_location` for many keys of plain fixed-width entries, with
        :meth:`read_raw`'s checksum check where ``checksums`` (and the reader verifies).

        For callers that use payloads in place or read them later: tensors mapped
        from the shard (``load_state_dict(mmap=True)``), or destinations allocated
        before one :meth:`read_many_into` (which verifies as it reads: pass
        ``checksums=False``). Entries are decoded at once
        (:func:`._fast_entries.plain_payloads`) and the CRCs compared in one vector
        operation: ~2 us per key, against ~15 us through the per-key methods.

        Returns:
            Per key, its :class:`PayloadLocation` (checked as :meth:`entry` and
            :meth:`payload_location` check it), or ``None`` where the key is missing,
            is not a plain fixed-width entry (sliced, string, ...), or its shard
            cannot be opened or is too short: the per-key methods read or report
            those, naming the key.

        Raises:
            ChecksumMismatchError: a payload's CRC32C differs (names file, key, offset).
        """
        ks = [key.encode("utf-8") if isinstance(key, str) else key for key in keys]
        locs = plain_payloads([self._raw.get(k) for k in ks], self._heads)
        ends: dict[int, int] = {}  # shard id -> file size, -1 where it cannot be read
        for shard_id in {loc[2] for loc in locs if loc is not None}:
            ends[shard_id] = -1
            if 0 <= shard_id < self.header.num_shards:
                try:
                    ends[shard_id] = self.shard(shard_id).size
                except CorruptCheckpointError:
                    pass  # reported with the key by the per-key methods
        # PayloadLocation: (dtype, shape, shard_id, offset, size, crc32c), read by index
        locs = [loc if loc is not None and loc[3] + loc[4] <= ends[loc[2]] else None
                for loc in locs]
        if checksums and self.verify_checksums:
            maps = {i: memoryview(s.map) for i, s in self._shards.items() if isinstance(s, _Shard)}
            checked: list[bytes] = []
            stored: list[int] = []
            crcs: list[int] = []
            try:
                for k, loc in zip(ks, locs):
                    if loc is None:
                        continue
                    view = maps.get(loc.shard_id)
                    if view is None:  # a shard without a local map (remote): checked by key
                        self.read_raw(k)
                        continue
                    checked.append(k)
                    stored.append(loc.crc32c)
                    crcs.append(_crc32c.value(view[loc.offset:loc.offset + loc.size]))
            finally:
                for view in maps.values():
                    view.release()
            bad = _crc32c.mismatches(crcs, stored)
            if bad:
                s, e = self.payload_location(checked[bad[0]])
                self.check_crc(checked[bad[0]], e, self._payload_bytes(s, e), s.path)  # raises
        return locs
