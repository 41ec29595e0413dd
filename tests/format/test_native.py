"""The optional C accelerator ``torchckpt.format._native`` (copy + CRC-32C in one pass).

Its CRC is checked against the ``crc32c`` package on every length class the
folding code distinguishes (under 256 bytes, tails of 16/32/128, odd
alignments), and the restore path that uses it against corruption and a file
truncated after the reader opened it (a clean error, never SIGBUS).
"""

from __future__ import annotations

import os
import platform
import random
import sys

import numpy as np
import pytest

from torchckpt.errors import ChecksumMismatchError, CorruptCheckpointError
from torchckpt.format import BundleReader, BundleWriter, _crc32c, _io
from torchckpt.format.dtypes import DataType


def _accelerated():
    try:
        from torchckpt.format import _native
    except ImportError:
        return None
    return _native if _native.ACCELERATED else None


def test_extension_is_built_where_the_test_command_requires_it() -> None:
    """``scripts/test.sh`` sets TORCHCKPT_REQUIRE_NATIVE: on x86-64 Linux the extension
    must have been compiled by the install (``setup.py``), so CI measures what users get."""
    required = bool(os.environ.get("TORCHCKPT_REQUIRE_NATIVE"))
    if required and sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"):
        from torchckpt.format import _native  # noqa: F401  # raises if it was not built
    # whatever the build, the I/O layer uses the accelerator exactly when it is usable
    assert (_io.accelerator() is not None) == (native is not None and
                                               not os.environ.get("TORCHCKPT_NO_NATIVE"))


def test_the_switch_is_read_when_used_not_at_import(monkeypatch) -> None:
    monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
    assert _io.accelerator() is None
    monkeypatch.delenv("TORCHCKPT_NO_NATIVE")
    assert (_io.accelerator() is not None) == (native is not None)


native = _accelerated()
needs_native = pytest.mark.skipif(native is None, reason="CPU or build without the accelerator")


@needs_native
@pytest.mark.parametrize("size", [0, 1, 7, 8, 15, 16, 31, 32, 127, 128, 255, 256, 257, 271,
                                  383, 384, 400, 511, 1000, 4096, 65_537, 1 << 20])
@pytest.mark.parametrize("shift", [0, 3])
def test_copy_crc32c_equals_memcpy_and_the_crc32c_package(size: int, shift: int) -> None:
    src_buf = bytearray(os.urandom(size + 8))
    src = memoryview(src_buf)[shift:shift + size]
    dst_buf = bytearray(size + 8)
    dst = memoryview(dst_buf)[5 - shift:5 - shift + size]  # misaligned the other way
    crc = native.copy_crc32c(dst, src)
    assert crc == _crc32c.extend_pure(0, bytes(src)) if size < 4096 else _crc32c.value(src)
    assert bytes(dst) == bytes(src)
    assert dst_buf[:5 - shift] == bytearray(5 - shift)  # nothing written outside dst
    assert dst_buf[5 - shift + size:] == bytearray(size + 8 - (5 - shift + size))


@needs_native
def test_copy_crc32c_random_lengths_and_errors() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randrange(20_000)
        data = rng.randbytes(n)
        out = bytearray(n)
        assert native.copy_crc32c(out, data) == _crc32c.value(data) and out == data
    assert native.copy_crc32c(bytearray(9), b"123456789") == 0xE3069283
    with pytest.raises(ValueError, match="differ in size"):
        native.copy_crc32c(bytearray(3), b"1234")
    with pytest.raises(TypeError):
        native.copy_crc32c(b"read-only", b"123456789")


def _write_big(prefix: str) -> np.ndarray:
    arr = np.random.default_rng(0).standard_normal(300_000).astype(np.float32)  # 1.2 MB
    w = BundleWriter(prefix)
    w.add("a", np.arange(10, dtype=np.float32), DataType.DT_FLOAT, (10,))
    w.add("big", arr, DataType.DT_FLOAT, arr.shape)
    w.finish()
    return arr


@pytest.mark.parametrize("accelerated", [True, False] if native is not None else [False])
def test_large_payload_corruption_and_truncation_are_clean_errors(tmp_path, monkeypatch,
                                                                   accelerated: bool) -> None:
    if not accelerated:
        monkeypatch.setattr(_io, "_native", None)
    monkeypatch.setattr(_io, "CHUNK_BYTES", 100_000)  # several chunks, both threads
    prefix = str(tmp_path / "ckpt")
    arr = _write_big(prefix)
    data = prefix + ".data-00000-of-00001"
    out = np.zeros_like(arr)
    with BundleReader(prefix) as r:
        r.read_into("big", out)
    assert np.array_equal(out, arr)

    blob = bytearray(open(data, "rb").read())
    blob[40 + 777_777] ^= 0x10  # inside "big" (after the 40 bytes of "a")
    open(data, "wb").write(blob)
    with BundleReader(prefix) as r, pytest.raises(ChecksumMismatchError) as err:
        r.read_many_into([("big", np.zeros_like(arr))])
    assert "big" in str(err.value) and data in str(err.value)

    with BundleReader(prefix) as r:
        r.read_into("a", np.zeros(10, np.float32))  # opens the shard and checks its size
        os.truncate(data, 500_000)  # then it shrinks: no SIGBUS, a clean error
        with pytest.raises(CorruptCheckpointError, match="shrank") as err:
            r.read_many_into([("big", np.zeros_like(arr))])
        assert "big" in str(err.value)


@needs_native
def test_mapped_reads_release_their_pages_in_windows(tmp_path, monkeypatch) -> None:
    """The copied part of the mapping is dropped as the read goes (RSS stays bounded), a
    window at a time, and all of it by the end."""
    monkeypatch.setattr(_io, "_native", native)
    monkeypatch.delenv("TORCHCKPT_NO_NATIVE", raising=False)
    monkeypatch.setattr(_io, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(_io, "RELEASE_CHUNKS", 2)
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(_io, "_unmap_pages", lambda m, lo, hi: calls.append((lo, hi)))
    data = os.urandom(100 * 4096 + 123)
    path = tmp_path / "blob"
    path.write_bytes(data)
    import mmap

    fd = os.open(path, os.O_RDONLY)
    helper = _io.Helper()
    try:
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
            dest = bytearray(len(data) - 100)
            [crc] = _io.read_parallel(fd, [(memoryview(dest), 100)], helper, True, m)
    finally:
        helper.close()
        os.close(fd)
    assert bytes(dest) == data[100:] and crc == _crc32c.value(data[100:])
    assert len(calls) > 10  # windows during the read ...
    assert calls[-1] == (100, len(data))  # ... and everything at the end
    assert all(lo < hi <= len(data) for lo, hi in calls)
