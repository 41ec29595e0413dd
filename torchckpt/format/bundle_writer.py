"""``BundleWriter``: streams tensors into ``.data`` shards, then writes the ``.index``.

Mirrors ``tensorflow/core/util/tensor_bundle/tensor_bundle.cc`` (``BundleWriter``).
Commit protocol (TF's, plus fsync, plus a commit record for re-saves): every
data shard and then the index are written under temporary names that share one
token and fsynced; then ``commit.commit_bundle`` renames them into place, data
first. The index is the commit marker: a prefix without ``.index`` does not
exist for any reader. Re-writing an existing prefix is crash-safe too (the old
version stays complete until the new one is: see ``commit.py``). Every
``OSError`` becomes a :class:`~torchckpt.errors.CheckpointWriteError` naming
the file. See ``docs/format.md`` for the whole file set.

Tensor bytes go from the caller's buffer to the file with no intermediate copy:
large buffers are written as they are, small ones are gathered into one
``writev`` call, and the CRC32C is computed on the same buffer. Peak memory is
therefore independent of the checkpoint's size; only the index entries (a few
dozen bytes per tensor) are kept until :meth:`finish`.

Thread-safety: one writer must be driven by one thread at a time.
"""

from __future__ import annotations

import ctypes
import math
import os
from typing import Iterable, Mapping, Sequence

from . import _crc32c
from ._fast_entries import plain_entry
from ._files import os_errors_name
from ._io import (
    IOV_MAX,
    Helper,
    accelerator,
    gather,
    gc_frozen,
    write_all,
    write_with_crc,
)
from .commit import commit_bundle, complete_commit, discard_temps
from .dtypes import FIXED_WIDTH, DataType
from .naming import data_path, index_path, new_token, temp_path
from .records import BundleEntry, BundleHeader, PlainRecord, TensorSlice, encode_entries
from .slices import encode_slice_key, slice_bounds
from .strings import encode_strings
from .table import TableBuilder

_GATHER_BYTES = 4 << 20  # small payloads are gathered up to this many bytes per writev
_DIRECT_BYTES = 1 << 20  # payloads this large are written straight from their buffer
# dtype -> (plain int value, itemsize, name): one lookup per tensor instead of three.
_FIXED: dict[int, tuple[int, int, str]] = {
    d: (int(d), info.itemsize, info.name) for d, info in FIXED_WIDTH.items()}


def _plain_head(dtype: int, shape: Sequence[int]) -> tuple[int, tuple[int, ...], int]:
    """``(dtype, shape, nbytes)`` of a fixed-width payload: the dtype as a plain int, the
    shape as a tuple of ints, the bytes its values take.

    Raises:
        ValueError: ``dtype`` is not a fixed-width TensorFlow dtype.
    """
    fixed = _FIXED.get(dtype)
    if fixed is None:
        raise ValueError(f"dtype {dtype} is not a fixed-width TensorFlow dtype")
    shape = tuple(map(int, shape))
    return fixed[0], shape, math.prod(shape) * fixed[1]


def _check_size(k: bytes, n: int, head: tuple[int, tuple[int, ...], int]) -> None:
    """Refuse ``n`` payload bytes for key ``k`` unless they are what ``head``
    (:func:`_plain_head`) needs."""
    if n != head[2]:
        raise ValueError(f"{k!r}: {n} bytes for shape {head[1]} of {_FIXED[head[0]][2]}")


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class _DataFile:
    """One data shard being written under a temporary name (renamed by ``commit_bundle``)."""

    def __init__(self, final: str, alignment: int, token: str) -> None:
        self.final = final
        self.temp = temp_path(final, token)
        with os_errors_name(self.temp):
            self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC, 0o644)
        self.offset = 0  # logical end of file, including gathered bytes not yet written
        self.alignment = alignment
        self._iov: list[memoryview] = []
        self._iov_bytes = 0

    def append(self, buf: memoryview) -> int:
        """Queue a small payload for one gathered ``writev``; returns its offset in the file."""
        at = self.offset
        n = buf.nbytes
        if n:
            self._iov.append(buf)
            self._iov_bytes += n
            if len(self._iov) >= IOV_MAX or self._iov_bytes >= _GATHER_BYTES:
                self.flush()
        self.offset = at + n
        if self.alignment > 1:
            self._pad()
        return at

    def write_direct(self, buf: memoryview, helper: Helper) -> tuple[int, int]:
        """Write a large payload now, checksummed beside the write: ``(offset, crc)``.

        The CRC32C (unmasked) is computed on the helper thread from the same
        buffer while this thread is in ``write``.
        """
        self.flush()
        at = self.offset
        with os_errors_name(self.temp):
            crc = write_with_crc(self.fd, buf, helper)
        self.offset = at + buf.nbytes
        self._pad()
        return at, crc

    def write_chunks(self, chunks: Iterable[memoryview], helper: Helper) -> tuple[int, int, int]:
        """Write a payload that arrives in pieces now: ``(offset, size, crc)``.

        Each piece is written as it comes (checksummed beside the write, as
        :meth:`write_direct`); the piece CRCs are joined with
        :func:`._crc32c.combine`. The caller may reuse a piece's memory as soon as
        the next one is asked for.
        """
        self.flush()
        at = self.offset
        crc = size = 0
        for chunk in chunks:
            piece = as_bytes_view(chunk)
            with os_errors_name(self.temp):
                part = write_with_crc(self.fd, piece, helper)
            crc = _crc32c.combine(crc, part, piece.nbytes) if size else part
            size += piece.nbytes
            self.offset += piece.nbytes
        self._pad()
        return at, size, crc

    def _pad(self) -> None:
        pad = -self.offset % self.alignment
        if pad:
            self.append(memoryview(b"\0" * pad))

    def flush(self) -> None:
        if self._iov:
            iov, nbytes, self._iov, self._iov_bytes = self._iov, self._iov_bytes, [], 0
            with os_errors_name(self.temp):
                write_all(self.fd, iov, nbytes)

    def seal(self, sync: bool) -> None:
        """Write what is gathered, fsync and close; the file keeps its temporary name."""
        with os_errors_name(self.temp):
            self.flush()
            if sync:
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass


def as_bytes_view(data: object) -> memoryview:
    """A flat byte view of a C-contiguous buffer (numpy array, bytes, tensor numpy view)."""
    mv = memoryview(data)  # type: ignore[arg-type]
    if not mv.c_contiguous:
        raise ValueError("tensor data must be C-contiguous")
    if mv.nbytes == 0:
        return memoryview(b"")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


class BundleWriter:
    """Writes one bundle ``prefix.index`` + ``prefix.data-*``.

    Call order: any number of :meth:`add` / :meth:`add_strings` /
    :meth:`add_sliced`, then :meth:`finish` (or :meth:`abort`). Keys are unique;
    their order does not matter (the index is sorted at the end).

    Args:
        prefix: checkpoint prefix; its directory is created if missing.
        num_shards: number of data files this bundle has. Use ``shard=`` on the
            ``add`` calls to place tensors; a shard that receives nothing is an
            empty file.
        data_alignment: pad each payload to a multiple of this many bytes.
        sync: fsync files and directory before renaming (crash safety).
        token: the token of this save's temporary names; the processes writing
            one bundle together pass the same one (default: a fresh token).

    Raises:
        CheckpointWriteError: the directory cannot be created, or an interrupted
            commit of ``prefix`` cannot be completed (names the file).
    """

    def __init__(self, prefix: str, *, num_shards: int = 1, data_alignment: int = 1,
                 sync: bool = True, token: str | None = None) -> None:
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self.prefix = os.fspath(prefix)
        self.num_shards = num_shards
        self.token = token if token is not None else new_token()
        self._alignment = data_alignment
        self._sync = sync
        directory = os.path.dirname(self.prefix)
        if directory:
            with os_errors_name(directory):
                os.makedirs(directory, exist_ok=True)
        complete_commit(self.prefix)  # never start a new version over a half-renamed one
        self._files: dict[int, _DataFile] = {}
        # BundleEntry, or for add_many_at's payloads the PlainRecord of its fields (made
        # ~10x faster; entries made of them on demand: _materialized)
        self._entries: dict[bytes, BundleEntry | PlainRecord] = {}
        self._helper = Helper()  # second thread for CRCs of large payloads, started on first use
        self._done = False

    def _file(self, shard: int) -> _DataFile:
        f = self._files.get(shard)
        if f is None:
            if not 0 <= shard < self.num_shards:
                raise ValueError(f"shard {shard} out of range for {self.num_shards} shards")
            f = self._files[shard] = _DataFile(data_path(self.prefix, shard, self.num_shards),
                                              self._alignment, self.token)
        return f

    def _claim(self, key: str | bytes) -> bytes:
        k = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if not k:
            raise ValueError("the empty key is reserved for the bundle header")
        if k in self._entries:
            raise ValueError(f"duplicate checkpoint key {k!r}")
        return k

    def add(self, key: str | bytes, data: object, dtype: int, shape: Sequence[int], *,
            shard: int = 0) -> BundleEntry:
        """Append a fixed-width tensor whose element bytes are ``data`` (any buffer).

        Payloads of 1 MiB or more are written before this returns, with their
        CRC32C computed on a helper thread during the write; smaller ones are
        gathered into one ``writev`` (the caller must not modify ``data`` until
        :meth:`finish`). For many small tensors :meth:`add_many` is faster.
        """
        return self._add(self._claim(key), data, dtype, shape, self._file(shard), shard)

    def add_many(self, items: Iterable[tuple[str | bytes, object, int, Sequence[int]]], *,
                 shard: int = 0) -> None:
        """:meth:`add` each ``(key, data, dtype, shape)`` of ``items`` into ``shard``.

        Same checks, same bytes. Why a bulk form: with 50,000 small tensors the
        per-call overhead and the cyclic GC's full-heap passes (kept to the new
        objects here, see :func:`._io.gc_frozen`) are a large part of the save.
        """
        f = self._file(shard)
        add, claim = self._add, self._claim
        with gc_frozen():
            for key, data, dtype, shape in items:
                add(claim(key), data, dtype, shape, f, shard)

    def can_add_at(self) -> bool:
        """Whether :meth:`add_many_at` works here: the C accelerator is loaded (x86-64 with
        AVX2 and VPCLMULQDQ, ``TORCHCKPT_NO_NATIVE`` unset)."""
        return accelerator() is not None

    def add_many_at(self, items: Iterable[tuple[str | bytes, int, int, int, Sequence[int]]], *,
                    shard: int = 0) -> None:
        """:meth:`add_many` for payloads given by address: ``(key, address, nbytes, dtype,
        shape)``. Same checks, same bytes. Only where :meth:`can_add_at`.

        For the torch layer, which holds tensors rather than buffers: a tensor's
        ``data_ptr()`` costs ~0.1 us, a buffer view of it ~2 us. Small payloads are
        copied, each with its CRC32C computed in the same pass, into one buffer per
        4 MiB (the C accelerator's ``gather_crc32c``), which is then written as
        :meth:`add_many` writes its buffers; payloads of 1 MiB or more are written
        straight from their memory. Every payload is read before this returns: the
        caller keeps each ``[address, address + nbytes)`` alive and unchanged until
        then, and may reuse it afterwards.
        """
        f = self._file(shard)
        entries = self._entries
        batch: dict[bytes, tuple[tuple[int, tuple[int, ...], int], int, int]] = {}  # pending
        heads: dict[tuple[int, tuple[int, ...]], tuple[int, tuple[int, ...], int]] = {}
        held = 0
        with gc_frozen():
            for key, address, n, dtype, shape in items:
                k = key.encode("utf-8") if isinstance(key, str) else bytes(key)  # _claim's
                if not k or k in entries or k in batch:
                    self._claim(k)  # raises
                    raise ValueError(f"duplicate checkpoint key {k!r}")
                known = (dtype, shape if isinstance(shape, tuple) else tuple(shape))
                head = heads.get(known)  # (dtype, shape, nbytes), checked once per pair
                if head is None:
                    head = heads[known] = _plain_head(dtype, shape)
                _check_size(k, n, head)
                if n >= _DIRECT_BYTES:  # after the batch before it: add_many's file order
                    self._add_gathered(batch, f, shard)
                    batch, held = {}, 0
                    self._add(k, memoryview((ctypes.c_char * n).from_address(address)).cast("B"),
                              dtype, shape, f, shard)
                    continue
                batch[k] = (head, n, address)
                held += n
                if held >= _GATHER_BYTES:
                    self._add_gathered(batch, f, shard)
                    batch, held = {}, 0
            self._add_gathered(batch, f, shard)

    def _add_gathered(self, batch: dict[bytes, tuple[tuple[int, tuple[int, ...], int], int, int]],
                      f: _DataFile, shard: int) -> None:
        """Copy ``key -> ((dtype, shape, nbytes), nbytes, address)`` payloads into one buffer
        (with the file's alignment padding), append it, record their entries."""
        if not batch:
            return
        items = batch.values()
        blob, crcs = gather(f.alignment, [b[2] for b in items], [b[1] for b in items])
        at = f.append(memoryview(blob))
        entries, align = self._entries, f.alignment
        for (k, ((dtype, shape, _), n, _)), crc in zip(batch.items(), crcs):
            entries[k] = (dtype, shape, shard, at, n, crc)
            at += n
            if align > 1:
                at += -at % align

    def _add(self, k: bytes, data: object, dtype: int, shape: Sequence[int], f: _DataFile,
             shard: int) -> BundleEntry:
        head = _plain_head(dtype, shape)
        buf = memoryview(data)  # type: ignore[arg-type]  # writev and crc32c take any layout
        if not buf.c_contiguous:
            raise ValueError("tensor data must be C-contiguous")
        n = buf.nbytes
        _check_size(k, n, head)
        if n >= _DIRECT_BYTES:
            offset, crc = f.write_direct(buf, self._helper)
        else:
            crc = _crc32c.value(buf)
            offset = f.append(buf)
        # _crc32c.mask, inlined: this line runs once per tensor
        crc = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _crc32c.MASK_DELTA) & 0xFFFFFFFF
        entry = plain_entry(head[0], head[1], shard, offset, n, crc)
        self._entries[k] = entry
        return entry

    def add_chunks(self, key: str | bytes, chunks: Iterable[object], dtype: int,
                   shape: Sequence[int], *, shard: int = 0) -> BundleEntry:
        """:meth:`add` for a payload handed over in pieces (its bytes in order).

        For tensors that are not in host memory: a GPU tensor is copied through
        small pinned buffers, one piece at a time, so host memory stays bounded
        (``torchckpt/transfer/staging.py``). Each piece is written before the next is
        asked for, so the producer may refill the same buffer.

        Raises:
            ValueError: the pieces add up to a size other than ``shape`` needs;
                nothing is recorded for ``key`` then.
        """
        k = self._claim(key)
        head = _plain_head(dtype, shape)
        offset, n, crc = self._file(shard).write_chunks(chunks, self._helper)  # type: ignore[arg-type]
        _check_size(k, n, head)
        entry = plain_entry(head[0], head[1], shard, offset, n, _crc32c.mask(crc))
        self._entries[k] = entry
        return entry

    def add_strings(self, key: str | bytes, values: Iterable[bytes], shape: Sequence[int], *,
                    shard: int = 0) -> BundleEntry:
        """Append a ``DT_STRING`` tensor of ``values`` (flat, row-major)."""
        k = self._claim(key)
        flat = [bytes(v) for v in values]
        shape = tuple(int(d) for d in shape)
        if len(flat) != _numel(shape):
            raise ValueError(f"{k!r}: {len(flat)} strings for shape {shape}")
        enc = encode_strings(flat)
        f = self._file(shard)
        entry = BundleEntry(int(DataType.DT_STRING), shape, shard,
                            f.append(memoryview(enc.payload)), len(enc.payload), enc.crc32c)
        self._entries[k] = entry
        return entry

    def add_sliced(self, key: str | bytes, dtype: int, full_shape: Sequence[int],
                   parts: Sequence[tuple[TensorSlice, object]], *, shard: int = 0) -> BundleEntry:
        """Append a tensor stored as slices: ``parts`` are ``(slice, element bytes)``."""
        k = self._claim(key)
        full = tuple(int(d) for d in full_shape)
        for tslice, data in parts:
            shape = tuple(b - a for a, b in slice_bounds(tslice, full))
            slice_key = encode_slice_key(k, tslice)
            if dtype == DataType.DT_STRING:
                self.add_strings(slice_key, data, shape, shard=shard)  # type: ignore[arg-type]
            else:
                self.add(slice_key, data, dtype, shape, shard=shard)
        entry = BundleEntry(int(dtype), full, slices=tuple(s for s, _ in parts))
        self._entries[k] = entry
        return entry

    def add_entry(self, key: str | bytes, entry: BundleEntry) -> None:
        """Record an entry whose payload is already in place (used by merges)."""
        self._entries[self._claim(key)] = entry

    @property
    def entries(self) -> dict[bytes, BundleEntry]:
        return self._materialized()

    def _materialized(self) -> dict[bytes, BundleEntry]:
        """:attr:`_entries` with every :data:`PlainRecord` made a :class:`BundleEntry`."""
        entries = self._entries
        for k, e in entries.items():
            if type(e) is tuple:
                entries[k] = plain_entry(*e)
        return entries  # type: ignore[return-value]  # no record is left

    def finish(self) -> None:
        """Commit: seal the data shards, write the index, rename all into place (``commit.py``)."""
        if self._done:
            raise ValueError("BundleWriter.finish() called twice")
        self._done = True
        self._helper.close()
        try:
            for shard in range(self.num_shards):
                self._file(shard)
            for f in self._files.values():
                f.seal(self._sync)
            _write_index_file(self.prefix, self.num_shards, self._entries, self.token,
                              sync=self._sync)
        except BaseException:
            self.abort()
            raise
        self._files.clear()  # commit_bundle owns the files now: abort() must not remove them
        commit_bundle(self.prefix, self.num_shards, self.token, sync=self._sync)

    def finish_data(self, shards: Iterable[int]) -> dict[bytes, BundleEntry]:
        """Seal the data files ``shards`` (written and fsynced under their temporary
        names) and return the entries, without writing an index.

        For a bundle written by several processes (``torchckpt.distributed``), all
        with the same ``token``: each process adds to its own shard and seals it
        here; one process then merges every process's entries and calls
        :func:`write_index` with that token, which commits every shard and the
        index. :meth:`abort` still removes this process's files until then. A
        shard in ``shards`` that received nothing becomes an empty file.

        Raises:
            ValueError: something was added to a shard not in ``shards``.
        """
        if self._done:
            raise ValueError("BundleWriter.finish_data() called after finish/abort")
        self._done = True
        self._helper.close()
        wanted = set(shards)
        try:
            stray = sorted(set(self._files) - wanted)
            if stray:
                raise ValueError(f"data added to shards {stray}, which are not committed here")
            for shard in sorted(wanted):
                self._file(shard)
            for f in self._files.values():
                f.seal(self._sync)
        except BaseException:
            self.abort()
            raise
        return dict(self._materialized())

    def abort(self) -> None:
        """Remove temporary files; the previous state of ``prefix`` is untouched."""
        self._done = True
        self._helper.close()
        for f in self._files.values():
            f.abort()


def write_index(prefix: str, num_shards: int, entries: dict[bytes, BundleEntry], *,
                sync: bool = True, token: str | None = None) -> None:
    """Write ``prefix.index`` (header entry ``""``, then the entries sorted bytewise) and
    commit the bundle: the data shards sealed under ``token`` and then the index are
    renamed into place, crash-safely (``commit.py``).

    Raises:
        CheckpointWriteError: a file operation failed (names the file); the
            previous version of ``prefix``, if any, is intact.
    """
    token = token if token is not None else new_token()
    try:
        _write_index_file(prefix, num_shards, entries, token, sync=sync)
    except BaseException:
        discard_temps(prefix, token)
        raise
    commit_bundle(prefix, num_shards, token, sync=sync)


def _write_index_file(prefix: str, num_shards: int,
                      entries: Mapping[bytes, BundleEntry | PlainRecord], token: str, *,
                      sync: bool) -> None:
    """The index table, written and fsynced under its temporary name for ``token``."""
    tmp = temp_path(index_path(prefix), token)
    try:
        with os_errors_name(tmp):
            with open(tmp, "wb", buffering=1 << 20) as out:
                table = TableBuilder(out)
                table.add(b"", BundleHeader(num_shards=num_shards).encode())
                with gc_frozen():
                    keys = sorted(entries)
                    table.add_many(keys, encode_entries([entries[k] for k in keys]))
                table.finish()
                out.flush()
                if sync:
                    os.fsync(out.fileno())
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
