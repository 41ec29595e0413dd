"""Object storage (``s3://``, ``gs://``, ``memory://``, ...) through fsspec: the remote path.

Local paths (plain paths and ``file://`` URLs) never come here: they keep the
os-level path of the rest of this package (``os.open``, ``mmap``, the C
accelerator, renames). Only a URL with another scheme takes this path, and
``fsspec`` (the ``remote`` extra) is imported only then.

Credentials and endpoints come from the environment as fsspec's backends read
them (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...); anything else is
passed as ``storage_options`` (the keyword arguments of the fsspec filesystem).

Commit protocol on an object store (no atomic rename, no lock). Each object
becomes visible whole when its upload completes (PUT or completed multipart
upload), never partly written:

1. each data file is uploaded as one stream under its final name;
2. then ``P.index``, the commit marker: a reader trusts ``P`` only when its
   index exists, and the index is uploaded after every data file it names;
3. then the ``checkpoint`` state file, one PUT.

A save killed during 1 or 2 leaves data objects no index names (``P`` does not
exist for any reader) and the state file naming the previous checkpoint; killed
during 3, ``P`` is complete but not yet named. Re-writing an existing prefix
deletes its old index first, so until the new index lands the prefix does not
exist: a crash then leaves no version of ``P`` (never a mix of old and new).
There is no directory lock: run one writer (one ``CheckpointManager``) per
directory URL.

A remote bundle is written by the local :class:`~.bundle_writer.BundleWriter`
into a temporary local directory and uploaded file by file
(:func:`staged_bundle`): the files are byte-identical to a local save, and the
local disk holds one checkpoint's size while it is uploaded.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import tempfile
from typing import Any, Iterator, Mapping

from ..errors import CheckpointWriteError, CorruptCheckpointError, RemoteStorageUnavailableError
from .naming import data_path, index_path

# scheme://... (RFC 3986 scheme), or fsspec's chained "a::b://..." form
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
_LOCAL_SCHEMES = ("file://", "local://")
REMOTE_EXTRA = "pip install 'torchckpt[remote]'"
StorageOptions = Mapping[str, Any]


def is_url(path: str) -> bool:
    """Whether ``path`` is written as a URL (``scheme://...``)."""
    return _URL.match(path) is not None


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of a non-local filesystem (it takes the fsspec path)."""
    return is_url(path) and not path.startswith(_LOCAL_SCHEMES)


def local_path(path: str | os.PathLike[str]) -> str:
    """``path`` as an os path: ``file:///a/b`` -> ``/a/b``; other paths unchanged."""
    path = os.fspath(path)
    for scheme in _LOCAL_SCHEMES:
        if path.startswith(scheme):
            return path[len(scheme):]
    return path


def filesystem(url: str, storage_options: StorageOptions | None = None) -> Any:
    """The fsspec filesystem of ``url`` (fsspec caches instances per options).

    Raises:
        RemoteStorageUnavailableError: fsspec, or the backend of ``url``'s scheme
            (s3fs, gcsfs, ...), is not installed; the message names the extra.
    """
    try:
        import fsspec
    except ImportError as exc:
        raise RemoteStorageUnavailableError(
            f"'{url}' is a URL: reading and writing object storage needs fsspec; install "
            f"torchckpt's remote extra ({REMOTE_EXTRA})") from exc
    try:
        fs, _ = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:
        raise RemoteStorageUnavailableError(
            f"'{url}': the fsspec backend for this scheme is not installed ({exc}); install "
            f"torchckpt's remote extra ({REMOTE_EXTRA}), or the scheme's fsspec package") from exc
    except ValueError as exc:
        raise RemoteStorageUnavailableError(f"'{url}': {exc}") from exc
    return fs


def join(directory: str, name: str) -> str:
    """``directory/name`` for URLs (``os.path.join`` would be wrong on Windows)."""
    return f"{directory.rstrip('/')}/{name}"


def dirname(url: str) -> str:
    """The directory URL of ``url`` (``s3://b/run/ckpt-1`` -> ``s3://b/run``)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{posixpath.dirname(rest.rstrip('/'))}"


def basename(url: str) -> str:
    return posixpath.basename(url.partition("://")[2].rstrip("/"))


def normalize(url: str) -> str:
    """``url`` with ``.``/``..``/empty components folded (never above the bucket)."""
    scheme, sep, rest = url.partition("://")
    parts: list[str] = []
    for part in rest.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if len(parts) > 1:  # never above the bucket
                parts.pop()
            continue
        parts.append(part)
    return f"{scheme}{sep}{'/'.join(parts)}"


def read_bytes(url: str, storage_options: StorageOptions | None = None, *,
               limit: int | None = None) -> bytes | None:
    """The bytes of the object ``url``, or None when it does not exist.

    Raises:
        CorruptCheckpointError: the object is larger than ``limit`` bytes.
    """
    fs = filesystem(url, storage_options)
    try:
        if limit is not None and int(fs.size(url)) > limit:
            raise CorruptCheckpointError(url, f"larger than {limit} bytes")
        return bytes(fs.cat_file(url))
    except FileNotFoundError:
        return None


def exists(url: str, storage_options: StorageOptions | None = None) -> bool:
    """Whether the object ``url`` exists now (no listing cache: another process may write)."""
    fs = filesystem(url, storage_options)
    fs.invalidate_cache(dirname(url))
    return bool(fs.exists(url))


def write_bytes(url: str, data: bytes, storage_options: StorageOptions | None = None) -> None:
    """Write ``data`` as the object ``url`` in one request (atomic on object stores)."""
    fs = filesystem(url, storage_options)
    with _write_errors(url):
        fs.pipe_file(url, data)
    fs.invalidate_cache(dirname(url))


def remove(urls: list[str], storage_options: StorageOptions | None = None) -> None:
    """Delete the objects ``urls``, in order; ones already gone are fine."""
    if not urls:
        return
    fs = filesystem(urls[0], storage_options)
    for url in urls:
        try:
            with _write_errors(url):
                fs.rm_file(url)
        except CheckpointWriteError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
    fs.invalidate_cache(dirname(urls[0]))


def list_names(directory: str, storage_options: StorageOptions | None = None) -> list[str]:
    """The names (not URLs) of the objects directly in ``directory``; [] if there are none."""
    fs = filesystem(directory, storage_options)
    fs.invalidate_cache(directory)
    try:
        found = fs.ls(directory, detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(str(p).rstrip("/")) for p in found)


def bundle_files(prefix: str, storage_options: StorageOptions | None = None) -> list[str]:
    """The objects of the remote bundle ``prefix`` that exist: ``.index`` first, then data."""
    name = basename(prefix)
    names = list_names(dirname(prefix), storage_options)
    data = [n for n in names if n.startswith(name + ".data-") and "-of-" in n]
    index = [name + ".index"] if name + ".index" in names else []
    return [join(dirname(prefix), n) for n in index + data]


@contextlib.contextmanager
def _write_errors(url: str) -> Iterator[None]:
    """Errors of a remote write as :class:`CheckpointWriteError` naming the object."""
    try:
        yield
    except CheckpointWriteError:
        raise
    except (OSError, ValueError) as exc:  # botocore/aiohttp failures reach here as OSError
        errno = getattr(exc, "errno", None) or 5
        raise CheckpointWriteError(errno, f"object storage write failed ({exc})", url) from exc


class StagedBundle:
    """Where a bundle for ``url`` is written before upload: ``prefix`` is a local path."""

    def __init__(self, url: str, directory: str) -> None:
        self.url = url
        self.prefix = os.path.join(directory, basename(url))


@contextlib.contextmanager
def staged_bundle(url: str, storage_options: StorageOptions | None = None
                  ) -> Iterator[StagedBundle]:
    """Write a bundle locally, then upload it to ``url`` (see the module docstring).

    The caller writes the whole bundle to ``staged.prefix`` inside the block;
    on a normal exit the data files are uploaded, then the index; on an
    exception nothing is uploaded. The local copy is always removed.

    Raises:
        CheckpointWriteError: an upload failed (names the object); the index was
            not uploaded, so no reader sees a partial bundle.
    """
    fs = filesystem(url, storage_options)
    with tempfile.TemporaryDirectory(prefix="torchckpt-upload-") as tmp:
        staged = StagedBundle(url, tmp)
        yield staged
        upload_bundle(staged.prefix, url, fs)


def upload_bundle(local_prefix: str, url: str, fs: Any) -> None:
    """Upload the committed local bundle ``local_prefix`` as ``url``: data, then index."""
    from .bundle_reader import BundleReader  # the header says how many shards to upload

    with BundleReader(local_prefix, verify_checksums=False) as reader:
        num_shards = reader.header.num_shards
    old_index = index_path(url)
    fs.invalidate_cache(dirname(url))
    if fs.exists(old_index):  # the old version stops existing before its data is replaced
        remove([old_index])
    for shard in range(num_shards):
        src, dst = data_path(local_prefix, shard, num_shards), data_path(url, shard, num_shards)
        with _write_errors(dst):
            fs.put_file(src, dst)
    with _write_errors(old_index):
        fs.put_file(index_path(local_prefix), old_index)
    fs.invalidate_cache(dirname(url))


def open_bundle(prefix: str, *, verify_checksums: bool = True,
                storage_options: StorageOptions | None = None) -> Any:
    """A reader of the bundle ``prefix``: the local :class:`~.bundle_reader.BundleReader`
    for a path or ``file://`` URL, :class:`~.remote_reader.RemoteBundleReader` for any
    other URL (same methods, same errors).

    Raises:
        CheckpointNotFoundError, CorruptCheckpointError: as the readers raise them.
        RemoteStorageUnavailableError: a URL without fsspec or its backend.
    """
    if is_remote(prefix):
        from .remote_reader import RemoteBundleReader
        return RemoteBundleReader(prefix, verify_checksums=verify_checksums,
                                  storage_options=storage_options)
    from .bundle_reader import BundleReader
    return BundleReader(local_path(prefix), verify_checksums=verify_checksums)
