"""``RemoteBundleReader``: a :class:`~.bundle_reader.BundleReader` over an object store.

Same checks, same errors, same values as the local reader; only the byte
access differs (``storage.py`` says which paths come here):

* opening reads the ``.index`` object whole (one GET) and nothing else;
* a data object's size is asked for (one HEAD) when a read first needs it;
* reading one tensor fetches exactly its byte range
  (``fs.cat_file(path, offset, offset + size)``);
* a bulk read (:meth:`read_many_into`, what a restore uses) reads each data
  object once, front to back, in spans of adjacent payloads of at most
  ``SPAN_BYTES`` fetched ``CONCURRENT_SPANS`` at a time, and verifies every
  checksum (``fs.cat_ranges``, concurrent on async backends such as s3fs).

There is no interrupted-commit repair here: object stores have no renames, so
there is no half-renamed bundle to complete (``storage.py``).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from ..errors import CheckpointNotFoundError, ChecksumMismatchError, CorruptCheckpointError
from . import _crc32c
from ._fast_entries import PayloadLocation
from .bundle_reader import BundleReader
from .naming import data_path
from .records import BundleEntry
from .storage import StorageOptions, filesystem

SPAN_BYTES = 32 << 20  # one ranged GET covers adjacent payloads up to this many bytes
CONCURRENT_SPANS = 8  # spans requested together: bounds the bytes held at once (256 MiB)
_GAP_BYTES = 1 << 16  # payloads closer than this are fetched in one span (padding, strings)


class RemoteShard:
    """A data object of a remote bundle: its URL and size (no file descriptor, no map)."""

    def __init__(self, fs: Any, path: str) -> None:
        self.path = path
        self.fs = fs
        try:
            self.size = int(fs.size(path))
        except FileNotFoundError as exc:
            raise CorruptCheckpointError(path, "data shard file is missing") from exc

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object, in one ranged request."""
        if end <= start:
            return b""
        data = self.fs.cat_file(self.path, start=start, end=end)
        if len(data) != end - start:
            raise CorruptCheckpointError(self.path, f"object returned {len(data)} bytes for "
                                         f"range [{start}, {end})", offset=start)
        return bytes(data)

    def close(self) -> None:
        pass


class RemoteBundleReader(BundleReader):
    """Reads the bundle at the URL ``prefix`` (``s3://bucket/run/ckpt-3``).

    Args:
        prefix: the checkpoint prefix URL (``prefix.index`` must exist).
        verify_checksums: verify the CRC32C of every payload read (default).
        storage_options: keyword arguments of the fsspec filesystem.

    Raises:
        CheckpointNotFoundError: no ``prefix.index``.
        CorruptCheckpointError: the index is malformed.
        RemoteStorageUnavailableError: fsspec or the scheme's backend is missing.
    """

    def __init__(self, prefix: str, *, verify_checksums: bool = True,
                 storage_options: StorageOptions | None = None) -> None:
        self._fs = filesystem(prefix, storage_options)
        super().__init__(prefix, verify_checksums=verify_checksums)

    def _read_index(self) -> bytes:
        try:
            return bytes(self._fs.cat_file(self.index_path))
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise CheckpointNotFoundError(
                f"no checkpoint at '{self.prefix}': '{self.index_path}' does not exist") from exc

    def shard(self, shard_id: int) -> RemoteShard:  # type: ignore[override]
        s = self._shards.get(shard_id)
        if s is None:
            s = self._shards[shard_id] = RemoteShard(  # type: ignore[assignment]
                self._fs, data_path(self.prefix, shard_id, self.header.num_shards))
        return s  # type: ignore[return-value]

    def _payload_bytes(self, s: Any, e: BundleEntry) -> memoryview:
        return memoryview(s.fetch(e.offset, e.offset + e.size))

    def _remote_location(self, key: str | bytes) -> tuple[RemoteShard, BundleEntry]:
        s, e = self.payload_location(key)
        return s, e  # type: ignore[return-value]  # shard() makes only RemoteShards here

    def read_into(self, key: str | bytes, out: object) -> None:
        """Fetch ``key``'s byte range into ``out``, checksum verified (see the base class)."""
        s, e = self._remote_location(key)
        self.check_decodable(self._k(key), e)
        dest = memoryview(out).cast("B")  # type: ignore[arg-type]
        if dest.nbytes != e.size:
            raise ValueError(f"destination of {dest.nbytes} bytes for a {e.size}-byte payload")
        dest[:] = s.fetch(e.offset, e.offset + e.size)
        if self.verify_checksums:
            self.check_crc(key, e, dest, s.path)

    def read_chunks(self, key: str | bytes,
                    buffers: Sequence[memoryview]) -> Iterator[tuple[int, memoryview]]:
        """Fetch ``key``'s payload piece by piece into ``buffers`` (see the base class)."""
        s, e = self._remote_location(key)
        self.check_decodable(self._k(key), e)
        crc = pos = i = 0
        while pos < e.size:
            buf = buffers[i % len(buffers)].cast("B")
            part = buf[:min(buf.nbytes, e.size - pos)]
            part[:] = s.fetch(e.offset + pos, e.offset + pos + part.nbytes)
            c = _crc32c.value(part)
            crc = _crc32c.combine(crc, c, part.nbytes) if pos else c
            yield pos, part
            pos += part.nbytes
            i += 1
        if self.verify_checksums and _crc32c.mask(crc) != e.crc32c:
            raise ChecksumMismatchError(s.path, f"checksum mismatch (stored 0x{e.crc32c:08x}, "
                                        f"computed 0x{_crc32c.mask(crc):08x})", key=self._k(key),
                                        offset=e.offset)

    def can_read_at(self) -> bool:
        """Never: remote shards are not mapped; callers read through buffers."""
        return False

    def read_many_into(self, pairs: Iterable[tuple[str | bytes, object]],
                       locations: Sequence[PayloadLocation | None] | None = None) -> None:
        """:meth:`read_into` for many pairs: each data object is read once, in spans."""
        for shard_id in range(self.header.num_shards):  # sizes first: the bulk path needs them
            self.shard(shard_id)
        super().read_many_into(pairs, locations)

    def _read_sorted(self, s: Any, items: list[tuple[int, memoryview, int, bytes]]) -> None:
        """Read ``(offset, dest, stored crc, key)`` items of one object, sorted by offset."""
        spans = _spans(items)
        for first in range(0, len(spans), CONCURRENT_SPANS):
            batch = spans[first:first + CONCURRENT_SPANS]
            datas = _fetch_spans(s, [(start, end) for start, end, _ in batch])
            for (start, _, members), data in zip(batch, datas):
                view = memoryview(data)
                for offset, dest, stored, k in members:
                    dest.cast("B")[:] = view[offset - start:offset - start + dest.nbytes]
                    if self.verify_checksums and _crc32c.mask(_crc32c.value(dest)) != stored:
                        self._crc_error(s, (offset, dest, stored, k))


def _spans(items: list[tuple[int, memoryview, int, bytes]]
           ) -> list[tuple[int, int, list[tuple[int, memoryview, int, bytes]]]]:
    """Group sorted items into ``(start, end, members)`` byte spans of one request each."""
    spans: list[tuple[int, int, list[tuple[int, memoryview, int, bytes]]]] = []
    for item in items:
        start, end = item[0], item[0] + item[1].nbytes
        if spans:
            s0, s1, members = spans[-1]
            if start - s1 <= _GAP_BYTES and end - s0 <= SPAN_BYTES:
                members.append(item)
                spans[-1] = (s0, max(s1, end), members)
                continue
        spans.append((start, end, [item]))
    return spans


def _fetch_spans(s: RemoteShard, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each ``(start, end)`` range of ``s``, fetched concurrently where the
    backend can; each length checked."""
    datas = s.fs.cat_ranges([s.path] * len(ranges), [a for a, _ in ranges],
                            [b for _, b in ranges], on_error="raise")
    out = []
    for (a, b), data in zip(ranges, datas):
        if isinstance(data, BaseException):
            raise CorruptCheckpointError(s.path, f"reading range [{a}, {b}) failed: {data}",
                                         offset=a) from data
        if len(data) != b - a:
            raise CorruptCheckpointError(s.path, f"object returned {len(data)} bytes for range "
                                         f"[{a}, {b})", offset=a)
        out.append(data)
    return out
