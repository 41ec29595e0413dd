"""``BundleWriter``: streams tensors into ``.data`` shards, then writes the ``.index``.

Mirrors ``tensorflow/core/util/tensor_bundle/tensor_bundle.cc`` (``BundleWriter``).
Commit protocol (TF's, plus fsync): each data shard is written under a
temporary name, fsynced and renamed into place; only then is the index written
the same way. The index is the commit marker: a prefix without ``.index`` does
not exist for any reader. See ``docs/format.md`` for the whole file set.

Tensor bytes go from the caller's buffer to the file with no intermediate copy:
large buffers are written as they are, small ones are gathered into one
``writev`` call, and the CRC32C is computed on the same buffer. Peak memory is
therefore independent of the checkpoint's size; only the index entries (a few
dozen bytes per tensor) are kept until :meth:`finish`.

Thread-safety: one writer must be driven by one thread at a time.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from . import _crc32c
from .dtypes import FIXED_WIDTH, DataType
from .naming import data_path, index_path, temp_path
from .records import BundleEntry, BundleHeader, TensorSlice
from .slices import encode_slice_key, slice_bounds
from .strings import encode_strings
from .table import TableBuilder

_IOV_MAX = 1024  # Linux UIO_MAXIOV
_GATHER_BYTES = 4 << 20  # small payloads are gathered up to this many bytes per writev
_DIRECT_BYTES = 1 << 20  # payloads this large are written straight from their buffer


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def fsync_dir(path: str) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _DataFile:
    """One data shard being written under a temporary name."""

    def __init__(self, final: str, alignment: int) -> None:
        self.final = final
        self.temp = temp_path(final)
        self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC, 0o644)
        self.offset = 0  # logical end of file, including gathered bytes not yet written
        self._alignment = alignment
        self._iov: list[memoryview] = []
        self._iov_bytes = 0

    def append(self, buf: memoryview) -> int:
        """Queue ``buf`` for writing; returns its offset in the file."""
        at = self.offset
        n = buf.nbytes
        if n >= _DIRECT_BYTES:
            self.flush()
            self._write_all([buf])
        elif n:
            self._iov.append(buf)
            self._iov_bytes += n
            if len(self._iov) >= _IOV_MAX or self._iov_bytes >= _GATHER_BYTES:
                self.flush()
        self.offset += n
        pad = -self.offset % self._alignment
        if pad:
            self.append(memoryview(b"\0" * pad))
        return at

    def flush(self) -> None:
        if self._iov:
            iov, self._iov, self._iov_bytes = self._iov, [], 0
            self._write_all(iov)

    def _write_all(self, iov: list[memoryview]) -> None:
        while iov:
            written = os.writev(self.fd, iov)
            while iov and written >= iov[0].nbytes:
                written -= iov[0].nbytes
                iov.pop(0)
            if iov and written:
                iov[0] = iov[0][written:]

    def commit(self, sync: bool) -> None:
        self.flush()
        if sync:
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.temp, self.final)

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
    """

    def __init__(self, prefix: str, *, num_shards: int = 1, data_alignment: int = 1,
                 sync: bool = True) -> None:
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self.prefix = os.fspath(prefix)
        self.num_shards = num_shards
        self._alignment = data_alignment
        self._sync = sync
        directory = os.path.dirname(self.prefix)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._files: dict[int, _DataFile] = {}
        self._entries: dict[bytes, BundleEntry] = {}
        self._done = False

    def _file(self, shard: int) -> _DataFile:
        f = self._files.get(shard)
        if f is None:
            if not 0 <= shard < self.num_shards:
                raise ValueError(f"shard {shard} out of range for {self.num_shards} shards")
            f = self._files[shard] = _DataFile(data_path(self.prefix, shard, self.num_shards),
                                              self._alignment)
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
        """Append a fixed-width tensor whose element bytes are ``data`` (any buffer)."""
        k = self._claim(key)
        shape = tuple(int(d) for d in shape)
        info = FIXED_WIDTH.get(dtype)  # type: ignore[call-overload]
        if info is None:
            raise ValueError(f"dtype {dtype} is not a fixed-width TensorFlow dtype")
        buf = as_bytes_view(data)
        if buf.nbytes != _numel(shape) * info.itemsize:
            raise ValueError(f"{k!r}: {buf.nbytes} bytes for shape {shape} of {info.name}")
        crc = _crc32c.mask(_crc32c.value(buf))
        f = self._file(shard)
        entry = BundleEntry(int(dtype), shape, shard, f.append(buf), buf.nbytes, crc)
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
        return self._entries

    def finish(self) -> None:
        """Commit: data shards (temp, fsync, rename), then the index the same way."""
        if self._done:
            raise ValueError("BundleWriter.finish() called twice")
        self._done = True
        try:
            for shard in range(self.num_shards):
                self._file(shard)
            for f in self._files.values():
                f.commit(self._sync)
            write_index(self.prefix, self.num_shards, self._entries, sync=self._sync)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove temporary files; the previous state of ``prefix`` is untouched."""
        self._done = True
        for f in self._files.values():
            f.abort()


def write_index(prefix: str, num_shards: int, entries: dict[bytes, BundleEntry], *,
                sync: bool = True) -> None:
    """Write ``prefix.index`` atomically: header entry ``""`` then entries, sorted bytewise."""
    final = index_path(prefix)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb", buffering=1 << 20) as out:
            table = TableBuilder(out)
            table.add(b"", BundleHeader(num_shards=num_shards).encode())
            for key in sorted(entries):
                table.add(key, entries[key].encode())
            table.finish()
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync:
        fsync_dir(os.path.dirname(final))
