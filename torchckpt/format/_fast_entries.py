"""Fast paths for *plain* ``BundleEntryProto`` values, the ones every writer emits.

A plain entry is an unsliced entry laid out exactly as TensorFlow's writer and
ours write it (see :mod:`.records` for the message)::

    [08 dtype] 12 L shape [18 shard_id] [20 offset] [28 size] [35 crc32c:fixed32]
    shape = (12 l [08 dim])*          L, l, dtype < 0x80; proto3 omits zero fields

Restoring 50,000 tensors decodes 50,000 entries, and the general field loop of
:meth:`BundleEntry.decode` costs ~10 us each. Here the ``[08 dtype] 12 L
shape`` head, which few distinct tensors do not share, is decoded once per
distinct byte string (callers keep the cache), the expected ``size`` field is
matched as bytes, and only the offset and CRC are decoded per entry (~1.5 us).

Contract: wherever :func:`decode_plain` returns a value it equals what
:meth:`BundleEntry.decode` returns for the same bytes; on anything else,
malformed input included, it returns ``None`` and the caller takes the general
path, which decodes or reports the error. Tests check this on random and
mutated entries.

:func:`plain_payloads` has a C twin, ``_entries_native.c`` (built by ``setup.py``
where a C compiler is available), used unless ``TORCHCKPT_NO_NATIVE`` is set; the
Python path here is its reference, and tests check that both give the same answers.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from ._coding import DecodeError, get_varint, put_varint
from .dtypes import FIXED_WIDTH
from .records import MAX_RANK, BundleEntry

try:  # the optional C decoder of plain_payloads (setup.py); the Python one below otherwise
    from . import _entries_native as _native_mod  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build
    _native_mod = None

_INT63 = 1 << 63

# head bytes -> (dtype, shape, size a fixed-width payload must have or -1,
#                the bytes of that size field: 28 varint, b"" for 0)
HeadCache = dict[bytes, tuple[int, tuple[int, ...], int, bytes]]
PlainEntry = tuple[int, tuple[int, ...], int, int, int, int, tuple[()]]

_new_object = object.__new__
_SET_DTYPE, _SET_SHAPE, _SET_SHARD, _SET_OFFSET, _SET_SIZE, _SET_CRC, _SET_SLICES = (
    getattr(BundleEntry, f).__set__
    for f in ("dtype", "shape", "shard_id", "offset", "size", "crc32c", "slices"))


def plain_entry(dtype: int, shape: tuple[int, ...], shard_id: int, offset: int, size: int,
                crc32c: int) -> BundleEntry:
    """``BundleEntry(dtype, shape, shard_id, offset, size, crc32c)``, twice as fast.

    Sets the slots directly instead of going through the frozen dataclass's
    ``__init__`` (seven ``object.__setattr__`` calls); the writer makes one
    entry per tensor. The result is an ordinary, equal, immutable entry.
    """
    e = _new_object(BundleEntry)
    _SET_DTYPE(e, dtype)
    _SET_SHAPE(e, shape)
    _SET_SHARD(e, shard_id)
    _SET_OFFSET(e, offset)
    _SET_SIZE(e, size)
    _SET_CRC(e, crc32c)
    _SET_SLICES(e, ())
    return e


def decode_plain(buf: bytes | memoryview, heads: HeadCache | None = None) -> PlainEntry | None:
    """The :class:`BundleEntry` fields of a plain entry, else ``None`` (see the module doc)."""
    found = _parse(buf, {} if heads is None else heads)
    if found is None:
        return None
    head, shard, offset, size, crc = found
    return head[0], head[1], shard, offset, size, crc, ()


def plain_location(buf: bytes, heads: HeadCache) -> tuple[int, int, int, int] | None:
    """``(shard_id, offset, size, crc32c)`` of a plain entry of a fixed-width dtype whose
    size matches its shape (what the reader's validation requires), else ``None``."""
    found = _parse(buf, heads)
    if found is None or found[3] != found[0][2]:
        return None
    return found[1], found[2], found[3], found[4]


def plain_locations(raws: list[bytes], heads: HeadCache
                    ) -> list[tuple[int, int, int, int] | None]:
    """``[plain_location(r, heads) for r in raws]``, decoded with numpy for all at once.

    Entries ``08 dtype 12 L shape [20 offset] [28 size] [35 crc32c]`` (shard 0)
    are decoded by array operations; the varints are read 10 bytes at a time.
    Every other entry, and any entry that breaks a rule, goes through
    :func:`plain_location`, so the answers are the same. ~0.5 us per entry.
    """
    n = len(raws)
    if n < 256:
        return [plain_location(r, heads) for r in raws]
    lens = np.fromiter(map(len, raws), dtype=np.int64, count=n)
    buf = np.frombuffer(b"".join(raws) + bytes(16), dtype=np.uint8)  # padding: reads past ends
    last = len(buf) - 1  # reads are clamped here: a head may claim more bytes than there are
    ends = np.cumsum(lens)
    starts = ends - lens
    ok = (lens >= 4) & (buf[starts] == 0x08) & (buf[starts + 1] < 0x80) \
        & (buf[starts + 2] == 0x12) & (buf[starts + 3] < 0x80)
    head_len = np.where(ok, 4 + buf[starts + 3].astype(np.int64), 0)
    ok &= starts + head_len <= ends
    want = _expected_sizes(raws, buf, starts, head_len, ok, heads)
    pos = starts + head_len
    has_offset = buf[np.minimum(pos, last)] == 0x20
    offset, pos_after = _varints(buf, pos + 1)
    offset = np.where(has_offset, offset, 0)
    pos = np.where(has_offset, pos_after, pos)
    ok &= ~has_offset | (offset >= 0)
    has_size = buf[np.minimum(pos, last)] == 0x28
    size, pos_after = _varints(buf, pos + 1)
    size = np.where(has_size, size, 0)
    pos = np.where(has_size, pos_after, pos)
    has_crc = (buf[np.minimum(pos, last)] == 0x35) & (pos + 5 == ends)
    crc = np.zeros(n, dtype=np.int64)
    for k in range(4):
        crc |= buf[np.minimum(pos + 1 + k, last)].astype(np.int64) << (8 * k)
    crc = np.where(has_crc, crc, 0)
    pos = np.where(has_crc, ends, pos)
    ok &= (pos == ends) & (want >= 0) & (size == want)
    out: list[tuple[int, int, int, int] | None] = list(
        zip([0] * n, offset.tolist(), size.tolist(), crc.tolist()))
    for i in np.flatnonzero(~ok).tolist():
        out[i] = plain_location(raws[i], heads)
    return out


def _expected_sizes(raws: list[bytes], buf: np.ndarray, starts: np.ndarray,
                    head_len: np.ndarray, ok: np.ndarray, heads: HeadCache) -> np.ndarray:
    """Per entry, the payload size its head's dtype and shape require (-1: none/unknown).

    Entries are matched to heads by comparing their head bytes with one
    representative at a time (a model has a few distinct heads); after 16
    representatives per head length the rest are looked up one by one.
    """
    want = np.full(len(raws), -1, dtype=np.int64)
    for h in np.unique(head_len[ok]).tolist():
        todo = np.flatnonzero(ok & (head_len == h))
        heads_bytes = buf[starts[todo, None] + np.arange(h)]
        for _ in range(16):
            if not len(todo):
                break
            same = (heads_bytes == heads_bytes[0]).all(axis=1)
            info = _cached_head(raws[todo[0]], h, heads)
            want[todo[same]] = -1 if info is None else info[2]
            todo, heads_bytes = todo[~same], heads_bytes[~same]
        for i in todo.tolist():
            info = _cached_head(raws[i], h, heads)
            want[i] = -1 if info is None else info[2]
    return want


def _cached_head(raw: bytes, head_len: int, heads: HeadCache
                 ) -> tuple[int, tuple[int, ...], int, bytes] | None:
    head = raw[:head_len]
    info = heads.get(head)
    if info is None:
        try:
            info = _head_info(head, head_len)
        except (DecodeError, IndexError):
            return None
        if info is not None:
            heads[head] = info
    return info


def _varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varint at each ``buf[pos[i]]`` and the position after it; -1 where it is
    longer than 9 bytes (not below 2**63: left to the general decoder)."""
    idx = np.minimum(pos[:, None] + np.arange(10), len(buf) - 1)
    raw = buf[idx]
    last = np.argmax(raw < 0x80, axis=1)  # first byte without the continuation bit
    too_long = (raw[np.arange(len(pos)), last] >= 0x80) | (last > 8)
    width = min(9, int(last.max()) + 1) if len(pos) else 1
    groups = (raw[:, :width] & 0x7F).astype(np.int64) << (7 * np.arange(width))
    groups[np.arange(width) > last[:, None]] = 0  # 9 groups of 7 bits: no overflow
    return np.where(too_long, -1, groups.sum(axis=1)), pos + last + 1


def _parse(buf: bytes | memoryview, heads: HeadCache
           ) -> tuple[tuple[int, tuple[int, ...], int, bytes], int, int, int, int] | None:
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    try:
        return _parse_bytes(buf, heads)
    except (DecodeError, IndexError):
        return None


def _parse_bytes(buf: bytes, heads: HeadCache
                 ) -> tuple[tuple[int, tuple[int, ...], int, bytes], int, int, int, int] | None:
    if buf[0] == 0x08:
        if buf[1] >= 0x80 or buf[2] != 0x12 or buf[3] >= 0x80:
            return None
        pos = 4 + buf[3]
    elif buf[0] == 0x12 and buf[1] < 0x80:
        pos = 2 + buf[1]
    else:
        return None
    head = buf[:pos]
    info = heads.get(head)
    if info is None:
        info = _head_info(head, pos) if len(head) == pos else None
        if info is None:
            return None
        heads[head] = info
    n = len(buf)
    shard = offset = size = crc = 0
    if pos < n and buf[pos] == 0x18:
        shard, pos = _uvarint(buf, pos + 1)
    if pos < n and buf[pos] == 0x20:  # the varint of the offset, inline: one per tensor
        offset = buf[pos + 1]
        pos += 2
        if offset >= 0x80:
            offset &= 0x7F
            shift = 7
            while True:
                c = buf[pos]
                pos += 1
                offset |= (c & 0x7F) << shift
                if c < 0x80:
                    break
                shift += 7
                if shift > 63:
                    return None
            if offset >= _INT63:
                return None
    size_field = info[3]
    if size_field and buf.startswith(size_field, pos):
        size = info[2]
        pos += len(size_field)
    elif pos < n and buf[pos] == 0x28:
        size, pos = _uvarint(buf, pos + 1)
    if pos + 5 == n and buf[pos] == 0x35:
        crc = int.from_bytes(buf[pos + 1:], "little")
        pos = n
    if pos != n or shard < 0 or size < 0:
        return None
    return info, shard, offset, size, crc


def _head_info(head: bytes, end: int) -> tuple[int, tuple[int, ...], int, bytes] | None:
    shape = _shape(head, 4 if head[0] == 0x08 else 2, end)
    if shape is None:
        return None
    dtype = head[1] if head[0] == 0x08 else 0
    fixed = FIXED_WIDTH.get(dtype)  # type: ignore[call-overload]
    size = -1
    if fixed is not None:
        size = fixed.itemsize
        for d in shape:
            size *= d
        if size >= _INT63:
            size = -1
    field = b"" if size <= 0 else b"\x28" + put_varint(size)
    return dtype, shape, size, field


def _shape(buf: bytes, pos: int, end: int) -> tuple[int, ...] | None:
    """Dims written as ``12 len [08 size]`` each (len < 128, size >= 0), else ``None``."""
    dims = []
    while pos < end:
        if buf[pos] != 0x12 or buf[pos + 1] >= 0x80:
            return None
        stop = pos + 2 + buf[pos + 1]
        if stop > end:
            return None
        if stop == pos + 2:
            dims.append(0)
        else:
            if buf[pos + 2] != 0x08:
                return None
            d, after = get_varint(buf, pos + 3, stop)
            if after != stop or d >= _INT63:
                return None
            dims.append(d)
        pos = stop
    if len(dims) > MAX_RANK:
        return None
    return tuple(dims)


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """A varint below 2**63 at ``buf[pos]``, else -1 (IndexError if truncated)."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = buf[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return (value if value < _INT63 else -1), pos + 1
        shift += 7
        if shift > 63:
            return -1, pos + 1


class PayloadLocation(NamedTuple):
    """Where a plain fixed-width payload lies, and what it holds (see :func:`plain_payloads`)."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


def _itemsizes() -> bytes:
    """Byte ``d``: the element size of fixed-width dtype ``d``, 0 for other dtypes (the C
    decoder's table). Dtypes of 128 and up take two varint bytes: never plain."""
    sizes = bytearray(0x80)
    for dtype, info in FIXED_WIDTH.items():
        if dtype < 0x80:
            sizes[dtype] = info.itemsize
    return bytes(sizes)


_ITEMSIZES = _itemsizes()


def accelerator() -> Any:
    """The C decoder of :func:`plain_payloads`, unless it is missing or
    ``TORCHCKPT_NO_NATIVE`` is set now (read on each use, as
    :func:`torchckpt.format._io.accelerator` reads it)."""
    return None if os.environ.get("TORCHCKPT_NO_NATIVE") else _native_mod


def plain_payloads(raws: list[bytes | None], heads: HeadCache) -> list[PayloadLocation | None]:
    """For each raw entry, :func:`plain_location` with the entry's dtype and shape;
    ``None`` for a missing (``None``) or other entry.

    Why: a caller that makes one tensor per entry (``load_state_dict(mmap=True)``)
    needs the dtype and shape as well as the location, for 50,000 entries at a
    restore. The C decoder (:func:`accelerator`) takes ~0.1 us per entry and
    leaves ``heads`` alone; :func:`python_plain_payloads`, its reference, ~2 us.
    (The C decoder also answers ``None`` for an element that is not ``bytes``.)
    """
    native = accelerator()
    if native is None:
        return python_plain_payloads(raws, heads)
    found: list[PayloadLocation | None] = native.plain_payloads(raws, PayloadLocation,
                                                                _ITEMSIZES)
    return found


def python_plain_payloads(raws: list[bytes | None], heads: HeadCache
                          ) -> list[PayloadLocation | None]:
    """:func:`plain_payloads` in Python: the entries decoded for all at once
    (:func:`plain_locations`), dtypes and shapes taken from the head cache it fills."""
    locs = plain_locations([b"" if r is None else r for r in raws], heads)
    out: list[PayloadLocation | None] = []
    append, new = out.append, tuple.__new__  # the C constructor: a third of the cost otherwise
    for raw, loc in zip(raws, locs):
        # a located entry starts 08 dtype 12 L: fixed-width dtypes are never 0 (omitted)
        info = heads.get(raw[:4 + raw[3]]) if loc is not None and raw is not None else None
        append(None if info is None or loc is None
               else new(PayloadLocation, (info[0], info[1], *loc)))
    return out
