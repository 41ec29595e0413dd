"""Payload I/O: tensor buffers to and from shard files, with the CRC32C beside the copy.

Nothing here has an on-disk layout of its own; it moves the payload bytes that
``bundle_writer`` / ``bundle_reader`` place (see those modules). Why it looks
the way it does (measured on 2-core machines, page cache, 3 GiB of float32):

* No staging. Bytes go from the caller's buffer straight into the kernel
  (``writev``) and from the file straight into the destination: an
  intermediate copy costs as much as the I/O itself, and fresh staging memory
  costs more (first touch of a page is ~0.5 s/GiB on such machines).
* Writes: one thread writes a buffer while the helper computes its CRC32C
  (``crc32c`` package: reads any buffer in place, releases the GIL) from the
  same buffer; buffered writes to one file serialize on the inode lock, so a
  second writer would not help.
* Large reads: both threads claim chunks of the payloads, and the per-chunk
  CRCs are joined with :func:`_crc32c.combine`. With the C accelerator
  (:mod:`._native`, built by ``setup.py`` on x86-64) a chunk is copied from the
  shard's memory map with its CRC folded in during the same pass, so verifying
  costs nothing over copying (measured on 3 GiB: 1.0x mmap + ``copy_``, against
  1.3-1.5x for ``preadv`` then a separate CRC pass, which reads every byte twice
  while both cores are already copying); the copied pages are then dropped from
  the process's mapping (``MADV_DONTNEED``), so RSS does not grow by the
  checkpoint's size. Without it: ``preadv`` into the destination, then the
  ``crc32c`` package on the same, cache-warm chunk. ``TORCHCKPT_NO_NATIVE=1``
  forces the portable path.
* Small payloads go in batches: one ``writev``/``preadv`` for up to
  :data:`IOV_MAX` buffers, so 50,000 tensors take ~50 system calls.

Thread-safety: a :class:`Helper` belongs to one writer or reader and is driven
by one thread at a time.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import operator
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence, TypeVar

from . import _crc32c

try:  # the optional C accelerator (setup.py); None where not built or the CPU lacks it
    from . import _native as _native_mod  # type: ignore[attr-defined]
    _native = _native_mod if _native_mod.ACCELERATED else None
except ImportError:  # pragma: no cover - depends on the build
    _native = None


def accelerator() -> Any:
    """The C accelerator, unless it is missing or ``TORCHCKPT_NO_NATIVE`` is set now.

    The switch is read on each use, not at import, so a program (or a test) can
    set it at any time and importing torchckpt reads no environment.
    """
    return None if os.environ.get("TORCHCKPT_NO_NATIVE") else _native

IOV_MAX = 1024  # Linux UIO_MAXIOV: buffers per writev/preadv call
CHUNK_BYTES = 4 << 20  # unit of work of a parallel read: big enough to amortize ~20 us of
#                        Python per chunk, small enough to balance two threads
PARALLEL_BYTES = 2 * CHUNK_BYTES  # payloads at least this big are read by two threads
OVERLAP_BYTES = 1 << 20  # payloads at least this big get their CRC on the helper thread
RUN_BYTES = 1 << 20  # a batched read of small payloads stops growing at this size (cache-hot CRC)
RELEASE_CHUNKS = 8  # mapped reads drop their pages from the mapping 8 chunks (32 MiB) at a time
MAX_GAP = 64 << 10  # bytes between two payloads a batched read skips rather than split

T = TypeVar("T")


class ShortReadError(Exception):
    """``preadv`` hit the end of the file: the offset it stopped at."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the cyclic garbage collector from re-scanning the whole heap during a bulk
    operation, without turning it off.

    Why: a bulk write or read keeps tens of thousands of small container
    objects (entries, buffer views) alive until it ends, and that allocation
    count triggers full collections that traverse the *whole* heap: a model
    with 50,000 parameters has ~300,000 tracked objects, so collections took
    30-40% of the time of saving or restoring it.

    How: ``gc.freeze()`` moves the objects that exist now out of the
    collector's sight, and ``gc.unfreeze()`` puts them back (into the oldest
    generation) at the end. The collector stays enabled for every thread
    throughout (``gc.isenabled()`` never changes), and garbage made meanwhile,
    by any thread, is collected as usual. When the program itself keeps a
    frozen generation (``gc.freeze()`` before forking workers), this does
    nothing, so as not to undo it. Blocks nest, in one thread or across threads: the
    heap is unfrozen when the last one ends.
    """
    scope = _FREEZE_SCOPE
    with scope.lock:
        if scope.depth == 0:  # nested calls (a Checkpoint read around read_many_into) skip
            scope.froze = not gc.get_freeze_count()  # this call, which walks the frozen list
            if scope.froze:
                gc.freeze()
        scope.depth += 1
    try:
        yield
    finally:
        with scope.lock:
            scope.depth -= 1
            if scope.depth == 0 and scope.froze:
                scope.froze = False
                gc.unfreeze()


def gc_freeze_new() -> None:
    """Inside a :func:`gc_frozen` block that froze the heap, freeze the objects made
    since the block began too; elsewhere, nothing.

    Why: a bulk operation that builds many long-lived objects (a restore decodes
    an object graph of 100,000 nodes, then books 50,000 reads) makes the
    collector scan them again at every collection its next allocations
    trigger: ~20% of restoring 50,000 small tensors. Frozen, they are not
    scanned; the block's end puts them back with the rest.
    """
    scope = _FREEZE_SCOPE
    with scope.lock:
        if scope.depth and scope.froze:
            gc.freeze()


class _FreezeScope:
    """How many :func:`gc_frozen` blocks are open, in any thread, and whether the
    outermost froze the heap (it did not where the program keeps its own frozen
    generation). The frozen generation is one per process, so this count is too;
    it holds no objects."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.froze = False


_FREEZE_SCOPE = _FreezeScope()


class Helper:
    """One lazily started background thread (the second core) for CRC and reads.

    The owner calls :meth:`close` when done; the thread is not a daemon, so a
    forgotten helper only delays interpreter exit until idle (never loses work).
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchckpt-io")
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def write_all(fd: int, iov: list[memoryview], nbytes: int | None = None) -> None:
    """``writev`` until every buffer is written (the kernel may write less than asked).

    ``nbytes``, the total size if the caller knows it, saves a pass over the
    buffers when the kernel takes everything at once (the usual case).
    """
    while iov:
        chunk = iov if len(iov) <= IOV_MAX else iov[:IOV_MAX]
        written = os.writev(fd, chunk)
        if written == nbytes and chunk is iov:
            return
        _drop_front(iov, written)


def _drop_front(iov: list[memoryview], n: int) -> None:
    """Remove the first ``n`` bytes from the buffers ``iov`` (in place)."""
    i = 0
    while i < len(iov) and n >= iov[i].nbytes:
        n -= iov[i].nbytes
        i += 1
    del iov[:i]
    if iov and n:
        iov[0] = iov[0].cast("B")[n:]


def write_with_crc(fd: int, buf: memoryview, helper: Helper) -> int:
    """Write ``buf`` while the helper computes its CRC32C (unmasked); returns the CRC."""
    if buf.nbytes < OVERLAP_BYTES:
        crc = _crc32c.value(buf)
        write_all(fd, [buf])
        return crc
    future = helper.submit(_crc32c.value, buf)
    try:
        write_all(fd, [buf])
    finally:
        crc = future.result()  # never leave the helper reading a buffer the caller may free
    return crc


def pread_all(fd: int, iov: Sequence[memoryview], offset: int) -> None:
    """``preadv`` until every buffer is full.

    Raises:
        ShortReadError: the file ended first.
    """
    bufs = [b for b in iov if b.nbytes]  # so that a 0-byte read can only mean end of file
    while bufs:
        n = os.preadv(fd, bufs[:IOV_MAX], offset)
        if n <= 0:
            raise ShortReadError(offset)
        offset += n
        _drop_front(bufs, n)


def read_runs(fd: int, offsets: Sequence[int], dests: Sequence[memoryview],
              checksum: bool) -> list[int]:
    """Fill each ``dests[i]`` from ``fd`` at ``offsets[i]`` (increasing); returns their CRC32Cs.

    Payloads that follow each other in the file (or with a gap of at most
    :data:`MAX_GAP` bytes, read into a scratch buffer) are read by one
    ``preadv`` of up to :data:`IOV_MAX` buffers and :data:`RUN_BYTES` bytes; each
    run is checksummed right after its read, while it is in the CPU cache.
    The CRCs are unmasked; the list is empty where ``checksum`` is false.

    Raises:
        ShortReadError: the file ended first.
    """
    crcs: list[int] = []
    value = _crc32c.value
    scratch: memoryview | None = None
    i, n = 0, len(offsets)
    while i < n:
        first = i
        start = offsets[i]
        iov, end = [dests[i]], start + dests[i].nbytes
        i += 1
        while i < n and len(iov) < IOV_MAX - 1 and end - start < RUN_BYTES:
            gap = offsets[i] - end
            if gap < 0 or gap > MAX_GAP:
                break
            if gap:
                if scratch is None:
                    scratch = memoryview(bytearray(MAX_GAP))
                iov.append(scratch[:gap])
            iov.append(dests[i])
            end = offsets[i] + dests[i].nbytes
            i += 1
        pread_all(fd, iov, start)
        if checksum:
            crcs += map(value, dests[first:i])
    return crcs


def read_with_crc(fd: int, dest: memoryview, offset: int, helper: Helper | None,
                  checksum: bool = True, mapped: mmap.mmap | None = None) -> int:
    """Fill ``dest`` from ``fd`` at ``offset``; returns its CRC32C (unmasked; 0 without
    ``checksum``). Payloads of :data:`PARALLEL_BYTES` or more are read by two threads
    (see :func:`read_parallel`).

    Raises:
        ShortReadError: the file ended before ``dest`` was full.
    """
    if helper is None or dest.nbytes < PARALLEL_BYTES:
        pread_all(fd, [dest], offset)
        return _crc32c.value(dest) if checksum else 0
    return read_parallel(fd, [(dest, offset)], helper, checksum, mapped)[0]


def _copy_source(fd: int, mapped: mmap.mmap | None, end: int) -> memoryview | None:
    """A view of ``mapped`` (the file ``fd`` mapped whole) for the C accelerator to copy
    from (see :mod:`._native`); ``None`` where it is not available or not wanted.

    The file's size is checked first, so a file that shrank since it was
    opened raises :class:`ShortReadError` rather than SIGBUS. (As with every
    memory-mapped reader, safetensors and torch's ``mmap=True`` loading included,
    a file truncated by another process *during* the copy still raises SIGBUS.)

    Raises:
        ShortReadError: the file now ends before ``end``.
    """
    if accelerator() is None or mapped is None or end == 0:
        return None
    size = min(os.fstat(fd).st_size, len(mapped))
    if size < end:
        raise ShortReadError(size)
    return memoryview(mapped)


def _unmap_pages(mapped: mmap.mmap | None, start: int, end: int) -> None:
    """Drop the pages of ``mapped`` that lie wholly in ``[start, end)`` from this
    process's mapping (``MADV_DONTNEED``; they stay in the page cache), so that a
    restore through the mapping does not add the checkpoint's size to the
    process's resident set.

    Done per :data:`RELEASE_CHUNKS` chunks, not per chunk: each call interrupts
    the other core to flush its TLB and waits for it, and on a shared VM a
    descheduled core makes that wait long (per-chunk calls gave 1.0-3x the
    limit from run to run)."""
    page = mmap.PAGESIZE
    lo = -(-start // page) * page
    hi = end // page * page
    if mapped is not None and hi > lo:
        mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def copy_to_addresses(fd: int, mapped: mmap.mmap | None, offsets: Sequence[int],
                      addresses: Sequence[int], sizes: Sequence[int],
                      stored: Sequence[int] | None) -> int:
    """Copy the payloads at ``offsets`` (increasing) of the file ``fd``, mapped whole as
    ``mapped``, to the raw memory at ``addresses``, each with its CRC32C in the same pass
    (the C accelerator's ``copy_many_crc32c``; the caller has checked :func:`accelerator`),
    :data:`RELEASE_CHUNKS` chunks of the file at a time, whose pages are then dropped from
    the mapping. Returns the first ``i`` whose masked CRC differs from ``stored[i]``, or -1
    (always -1 where ``stored`` is ``None``).

    The caller guarantees that each ``[address, address + size)`` is writable memory
    it keeps alive during the call.

    Raises:
        ShortReadError: the file now ends before the last payload does.
    """
    n = len(offsets)
    if n == 0:
        return -1
    native = accelerator()
    source = _copy_source(fd, mapped, max(map(operator.add, offsets, sizes)))
    if native is None or source is None:
        raise RuntimeError("copy_to_addresses needs the C accelerator and a mapped file")
    window = RELEASE_CHUNKS * CHUNK_BYTES
    i = 0
    try:
        while i < n:
            start, j = offsets[i], i + 1
            while j < n and offsets[j] + sizes[j] - start <= window:
                j += 1
            bad: int = native.copy_many_crc32c(source, offsets[i:j], addresses[i:j], sizes[i:j],
                                          None if stored is None else stored[i:j])
            if bad >= 0:
                return i + bad
            _unmap_pages(mapped, start, offsets[j - 1] + sizes[j - 1])
            i = j
    finally:
        source.release()
    return -1


def gather(alignment: int, addresses: Sequence[int], sizes: Sequence[int]
           ) -> tuple[bytes, list[int]]:
    """The payloads at ``addresses`` copied into one buffer, each padded with zeros to a
    multiple of ``alignment`` bytes, and their TF-masked CRC32Cs, computed in the same
    pass (the C accelerator's ``gather_crc32c``; the caller has checked
    :func:`accelerator`). The caller keeps the memory alive during the call."""
    native = accelerator()
    if native is None:
        raise RuntimeError("gather needs the C accelerator")
    blob, crcs = native.gather_crc32c(addresses, sizes, alignment)
    return blob, crcs


def read_parallel(fd: int, jobs: Sequence[tuple[memoryview, int]], helper: Helper,
                  checksum: bool = True, mapped: mmap.mmap | None = None) -> list[int]:
    """Fill each ``(dest, offset)`` of ``jobs``; returns each dest's CRC32C (unmasked).

    All the jobs are cut into :data:`CHUNK_BYTES` chunks that this thread and
    the helper claim in turn, and the chunk CRCs of a job are joined with
    :func:`_crc32c.combine`. One hand-off for the whole list, so neither
    thread waits at tensor boundaries. A chunk is copied from ``mapped`` (the
    file mapped whole) with its CRC in the same pass where the C accelerator
    is available; otherwise it is read with ``preadv`` then checksummed.

    Raises:
        ShortReadError: the file ended first.
    """
    views = [d.cast("B") if d.format != "B" or d.ndim != 1 else d for d, _ in jobs]
    chunks = [(j, a, min(a + CHUNK_BYTES, v.nbytes))
              for j, v in enumerate(views) for a in range(0, v.nbytes, CHUNK_BYTES)]
    crcs = [0] * len(chunks)
    claim = iter(range(len(chunks) + 2)).__next__  # next() on a range iterator is atomic
    end = max((off + v.nbytes for v, (_, off) in zip(views, jobs)), default=0)

    def file_range(first: int, last: int) -> tuple[int, int]:
        """Where chunks ``first..last`` (in file order: jobs come sorted) lie in the file."""
        (j0, a0, _), (j1, _, b1) = chunks[first], chunks[last]
        return jobs[j0][1] + a0, jobs[j1][1] + b1

    native = accelerator()
    copy = native.copy_crc32c if native is not None else None

    def work(source: memoryview | None) -> None:
        while True:
            i = claim()
            if i >= len(chunks):
                return
            j, a, b = chunks[i]
            part, start = views[j][a:b], jobs[j][1] + a
            if copy is not None and source is not None:
                crcs[i] = copy(part, source[start:start + b - a])
                if i % RELEASE_CHUNKS == RELEASE_CHUNKS - 1 and i >= 2 * RELEASE_CHUNKS - 1:
                    # the window before last is done (or, if the other thread lags, it refaults)
                    _unmap_pages(mapped, *file_range(i + 1 - 2 * RELEASE_CHUNKS,
                                                     i - RELEASE_CHUNKS))
            else:
                pread_all(fd, [part], start)
                if checksum:
                    crcs[i] = _crc32c.value(part)

    source = _copy_source(fd, mapped, end)
    try:
        future = helper.submit(work, source)
        try:
            work(source)
        finally:
            future.result()
    finally:
        if source is not None:
            source.release()  # the workers' slices are gone: each lived for one call
            if chunks:
                _unmap_pages(mapped, *file_range(0, len(chunks) - 1))
    out = [0] * len(jobs)
    if checksum:
        seen = [False] * len(jobs)
        for (j, a, b), crc in zip(chunks, crcs):
            out[j] = _crc32c.combine(out[j], crc, b - a) if seen[j] else crc
            seen[j] = True
    return out
