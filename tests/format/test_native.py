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
# the reader's and writer's address paths also obey TORCHCKPT_NO_NATIVE, read when used
uses_accelerator = pytest.mark.skipif(_io.accelerator() is None,
                                      reason="no accelerator, or TORCHCKPT_NO_NATIVE is set")


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


@needs_native
def test_copy_many_crc32c_copies_to_addresses_and_finds_the_first_bad_crc() -> None:
    rng = random.Random(11)
    src = rng.randbytes(50_000)
    spans = [(0, 0), (3, 1), (10, 255), (300, 4096), (5000, 40_000)]
    out = np.zeros(50_000, np.uint8)
    addresses, at = [], 0
    for _, size in spans:
        addresses.append(out.ctypes.data + at)
        at += size
    offsets, sizes = [o for o, _ in spans], [s for _, s in spans]
    stored = [_crc32c.mask(_crc32c.value(src[o:o + s])) for o, s in spans]
    assert native.copy_many_crc32c(src, offsets, addresses, sizes, stored) == -1
    assert out[:at].tobytes() == b"".join(src[o:o + s] for o, s in spans)
    assert native.copy_many_crc32c(src, offsets, addresses, sizes, None) == -1
    stored[3] ^= 1
    assert native.copy_many_crc32c(src, offsets, addresses, sizes, stored) == 3


@needs_native
def test_copy_many_crc32c_refuses_ranges_outside_the_source_before_copying() -> None:
    out = np.zeros(16, np.uint8)
    with pytest.raises(ValueError, match="outside the source"):
        native.copy_many_crc32c(b"x" * 10, [0, 5], [out.ctypes.data] * 2, [4, 6], None)
    assert not out.any()  # checked before anything is copied
    with pytest.raises(ValueError, match="outside the source"):
        native.copy_many_crc32c(b"x" * 10, [-1], [out.ctypes.data], [1], None)
    with pytest.raises(ValueError, match="no destination"):
        native.copy_many_crc32c(b"x" * 10, [0], [0], [1], None)
    with pytest.raises(ValueError, match="another length"):
        native.copy_many_crc32c(b"x" * 10, [0, 1], [out.ctypes.data], [1, 1], None)


def _write_mixed(prefix: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    arrays = {f"small/{i}": rng.standard_normal(i + 1).astype(np.float32) for i in range(300)}
    arrays["big"] = rng.standard_normal((_io.PARALLEL_BYTES // 4) + 5).astype(np.float32)
    w = BundleWriter(prefix)
    for key, a in arrays.items():
        w.add(key, a, DataType.DT_FLOAT, a.shape)
    w.finish()
    return arrays


@uses_accelerator
def test_read_at_fills_memory_by_address_small_and_large_payloads(tmp_path) -> None:
    prefix = str(tmp_path / "ckpt")
    arrays = _write_mixed(prefix)
    keys = list(arrays)
    outs = [np.zeros_like(arrays[k]) for k in keys]
    with BundleReader(prefix) as r:
        assert r.can_read_at()
        r.read_at(keys, r.payload_locations(keys, checksums=False), [o.ctypes.data for o in outs])
    for key, out in zip(keys, outs):
        assert np.array_equal(out, arrays[key]), key


@uses_accelerator
@pytest.mark.parametrize("where", ["small/250", "big"])
def test_read_at_reports_a_corrupt_payload_with_its_file_and_key(tmp_path, where: str) -> None:
    prefix = str(tmp_path / "ckpt")
    arrays = _write_mixed(prefix)
    data = prefix + ".data-00000-of-00001"
    with BundleReader(prefix) as r:
        offset = r.entry(where).offset
    blob = bytearray(open(data, "rb").read())
    blob[offset + 2] ^= 0x40
    open(data, "wb").write(blob)
    keys = list(arrays)
    outs = [np.zeros_like(arrays[k]) for k in keys]
    with BundleReader(prefix) as r, pytest.raises(ChecksumMismatchError) as err:
        r.read_at(keys, r.payload_locations(keys, checksums=False), [o.ctypes.data for o in outs])
    assert where in str(err.value) and data in str(err.value)


@uses_accelerator
def test_read_at_reports_a_file_that_shrank_after_it_was_opened(tmp_path) -> None:
    prefix = str(tmp_path / "ckpt")
    arrays = _write_mixed(prefix)
    keys = [k for k in arrays if k != "big"]
    outs = [np.zeros_like(arrays[k]) for k in keys]
    with BundleReader(prefix) as r:
        locations = r.payload_locations(keys, checksums=False)
        os.truncate(prefix + ".data-00000-of-00001", locations[-1].offset + 1)
        with pytest.raises(CorruptCheckpointError, match="shrank") as err:
            r.read_at(keys, locations, [o.ctypes.data for o in outs])
    assert "small/" in str(err.value)


def test_read_at_is_offered_only_with_the_accelerator(tmp_path, monkeypatch) -> None:
    prefix = str(tmp_path / "ckpt")
    _write_mixed(prefix)
    with BundleReader(prefix) as r:
        assert r.can_read_at() == (_io.accelerator() is not None)
        monkeypatch.setenv("TORCHCKPT_NO_NATIVE", "1")
        assert not r.can_read_at()


def _write_both_ways(tmp_path, arrays: dict[str, np.ndarray], alignment: int) -> tuple[str, str]:
    by_buffer, by_address = str(tmp_path / "buffer"), str(tmp_path / "address")
    w = BundleWriter(by_buffer, data_alignment=alignment)
    w.add_many((k, a, DataType.DT_FLOAT, a.shape) for k, a in arrays.items())
    w.finish()
    w = BundleWriter(by_address, data_alignment=alignment)
    assert w.can_add_at()
    w.add_many_at((k, a.ctypes.data, a.nbytes, DataType.DT_FLOAT, a.shape)
                  for k, a in arrays.items())
    w.finish()
    return by_buffer, by_address


@uses_accelerator
@pytest.mark.parametrize("alignment", [1, 64])
def test_add_many_at_writes_the_bytes_add_many_writes(tmp_path, alignment: int) -> None:
    """By address or by buffer, the data file and the index are the same bytes: small
    payloads gathered (several 4 MiB batches), large ones written directly, empty ones."""
    rng = np.random.default_rng(5)
    arrays = {f"s/{i:05d}": rng.standard_normal(i % 700).astype(np.float32)
              for i in range(6000)}
    arrays["large"] = rng.standard_normal(400_000).astype(np.float32)  # 1.6 MB
    arrays["zero-d"] = np.array(2.5, np.float32)
    by_buffer, by_address = _write_both_ways(tmp_path, arrays, alignment)
    for suffix in (".index", ".data-00000-of-00001"):
        assert open(by_buffer + suffix, "rb").read() == open(by_address + suffix, "rb").read()
    with BundleReader(by_address) as r:
        for key in ("s/00699", "large", "zero-d"):
            assert np.array_equal(r.read_array(key), arrays[key])


@uses_accelerator
def test_add_many_at_refuses_duplicate_keys_and_wrong_sizes(tmp_path) -> None:
    a = np.zeros(4, np.float32)
    w = BundleWriter(str(tmp_path / "c"))
    with pytest.raises(ValueError, match="duplicate"):
        w.add_many_at([("k", a.ctypes.data, 16, DataType.DT_FLOAT, (4,))] * 2)
    with pytest.raises(ValueError, match="12 bytes for shape"):
        w.add_many_at([("j", a.ctypes.data, 12, DataType.DT_FLOAT, (4,))])
    with pytest.raises(ValueError, match="fixed-width"):
        w.add_many_at([("s", a.ctypes.data, 16, DataType.DT_STRING, (4,))])
    w.abort()


@needs_native
def test_gather_crc32c_pads_to_the_alignment_and_masks_each_crc() -> None:
    a, b = np.arange(10, dtype=np.uint8), np.arange(100, 107, dtype=np.uint8)
    blob, crcs = native.gather_crc32c([a.ctypes.data, b.ctypes.data, 0], [10, 7, 0], 4)
    assert blob == a.tobytes() + bytes(2) + b.tobytes() + bytes(1)
    assert crcs == [_crc32c.mask(_crc32c.value(x)) for x in (a.tobytes(), b.tobytes(), b"")]
    with pytest.raises(ValueError, match="no memory"):
        native.gather_crc32c([0], [4], 1)
    with pytest.raises(ValueError, match="alignment"):
        native.gather_crc32c([], [], 0)
