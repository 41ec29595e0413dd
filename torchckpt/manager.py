"""``CheckpointManager``: numbered checkpoints in a directory, pruned like TF's.

Mirrors ``tf.train.CheckpointManager``
(``tensorflow/python/checkpoint/checkpoint_management.py``): the same
constructor, ``save`` numbering (``save_counter`` unless ``checkpoint_number``
is given), ``max_to_keep`` / ``keep_checkpoint_every_n_hours`` sweeping,
``checkpoint_interval`` with ``step_counter``, ``restore_or_initialize`` and the
same ``checkpoint`` state file (relative paths, timestamps,
``last_preserved_timestamp``), so TF and torchckpt can take turns managing one
directory.

Commit protocol (each step atomic; a crash between any two leaves a complete
checkpoint as ``latest``):

1. remove leftovers of interrupted saves (none of which any reader can take for
   a checkpoint): temporary files of this manager's numbered prefixes and of
   the state file, data shards of numbered prefixes that have no index and are
   not named by the state file, and the files of the prefix about to be
   written when the state file does not name it;
2. write the bundle: data shards, then the index (``Checkpoint``'s writer:
   temporary name, fsync, rename);
3. decide, in memory, which checkpoints leave the active set (TF's sweep);
4. write the state file naming the new prefix and no longer naming those,
   by temporary name and rename;
5. delete their files, index first.

So a checkpoint's files are deleted only once the state file has stopped
naming it. The state file each save leaves is exactly the one TF's manager
leaves (TF writes it before and after deleting; the second is the one that
stays). A crash during step 5 can leave an unlisted bundle: without its index
it is removed by the next save's step 1; with its index it stays, like a
checkpoint kept by ``keep_checkpoint_every_n_hours``, which it cannot be told
apart from.

Re-using a checkpoint number re-writes a prefix the state file names; the
bundle writer keeps that crash-safe too (``format/commit.py``). The in-memory
view (``checkpoints``, ``latest_checkpoint``) changes only once the state file
that says the same has been written, so the two never disagree.

With a ``torch.distributed`` process group of more than one rank, a save is
collective (every rank calls ``save()``) and rank 0 owns the directory: it
alone does steps 1, 4 and 5, and holds the lock. Step 1 happens before rank 0
enters the write, whose opening handshake no rank passes before rank 0 does,
so no rank writes while rank 0 removes leftovers. The write returns on every
rank only after rank 0 wrote the state file; the other ranks then take their
bookkeeping from that file, so every rank's ``checkpoints`` and
``latest_checkpoint`` are rank 0's (the same clock readings and sweep
decisions). A save that fails on any rank fails on all of them and changes
no rank's bookkeeping. ``save(options=CheckpointOptions(collective=False))``
is a save by rank 0 alone (no other rank calls it), as without a process group.

A directory URL (``s3://bucket/run``, any fsspec URL) follows the same steps
through ``format/storage.py``: data objects, then the index (the commit
marker), then the state file (one PUT), then the deletions, index first. Step 1
removes data objects no index names and the objects of the prefix about to be
written. Object stores have no lock: there, run one manager per directory.

One manager per directory: the manager (rank 0's) holds an advisory lock,
``flock`` on the directory itself, from construction to
:meth:`CheckpointManager.close` (or its garbage collection); a second manager on
the same directory, in this process or another, gets
:class:`~torchckpt.errors.CheckpointLockedError`
instead of racing with the first on each other's files. Processes forked from the
manager's (data-loader workers) do not keep the lock, so a run killed while they
exit can be restarted at once. Where the file system has no ``flock`` (or the
directory is read-only) no lock is taken.

Differences from TF, deliberate: an unparseable state file raises
``CorruptCheckpointError`` instead of being ignored with a warning (ignoring it
would orphan every checkpoint it lists); a state file naming paths outside the
directory raises ``OutsideDirectoryError`` (TF would adopt them and later
delete them); the clock is injectable.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import operator
import os
import re
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import distributed
from .checkpoint import Checkpoint, CheckpointOptions
from .distributed import DistributedCheckpointError
from .errors import CheckpointLockedError
from .format import remote_state
from .format.commit import COMMIT_RECORD_SUFFIX, complete_commit
from .format.naming import bundle_files, final_path_of_temp, index_path, prefix_of, temp_files
from .format.state_file import (
    STATE_FILENAME,
    contained_path,
    read_state,
    state_temp_files,
    write_state,
)
from .format.storage import is_remote, normalize

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]


__all__ = ["CheckpointManager"]


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _delete_checkpoint(directory: str, prefix: str) -> None:
    """Delete ``prefix``'s files: the index first, so it stops existing before its data goes.

    Raises:
        OutsideDirectoryError: ``prefix`` is not inside ``directory`` (never deleted).
    """
    contained_path(directory, prefix, os.path.join(directory, STATE_FILENAME))
    complete_commit(prefix)  # so that no temporary file deleted below is a committed one
    for path in bundle_files(prefix) + temp_files(prefix):
        _remove(path)


def _lock_directory(directory: str) -> int | None:
    """Take the directory's advisory lock (``flock`` on the directory itself, so no lock
    file is left in it); the descriptor that holds it, or None where there is no lock.

    Raises:
        CheckpointLockedError: another manager holds it.
    """
    if fcntl is None:
        return None
    try:
        os.makedirs(directory or ".", exist_ok=True)
        fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # cannot create or open it: saving will report that, naming the path
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise CheckpointLockedError(
                f"another CheckpointManager manages '{directory}': two managers of one "
                "directory would delete each other's checkpoints; close() the other one "
                "(or let it be garbage-collected), or give this one its own directory") from exc
        return None  # ENOLCK, EOPNOTSUPP, EBADF: a file system without flock
    return fd


class _ForkedLocks:
    """Closes the lock descriptors of live managers in forked children.

    A child made by ``fork`` (a ``DataLoader`` worker, say) shares the open file
    that holds the parent's ``flock``, so the lock would outlive the parent: a
    training run killed with its workers still exiting would leave the directory
    locked, and the restarted run would be refused. The child never uses the
    manager's lock, so it drops its copy at once. Registered with the first lock;
    it touches only descriptors managers of this process opened.
    """

    def __init__(self) -> None:
        self._managers: weakref.WeakSet[CheckpointManager] = weakref.WeakSet()
        self._registered = False

    def track(self, manager: CheckpointManager) -> None:
        if not self._registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._drop)
            self._registered = True
        self._managers.add(manager)

    def _drop(self) -> None:
        for manager in list(self._managers):
            fd, manager._lock_fd = manager._lock_fd, None
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


_FORKED_LOCKS = _ForkedLocks()


def _is_rank_zero() -> bool:
    """Whether this process writes the state file: no process group, or its rank 0."""
    return not distributed.is_active() or torch.distributed.get_rank() == 0


def _step_value(step_counter: Any) -> int:
    """The current step of a step counter: a 0-d tensor, an int-like object or a callable."""
    if hasattr(step_counter, "item"):
        return int(step_counter.item())
    if callable(step_counter):
        return operator.index(step_counter())
    return operator.index(step_counter)


class CheckpointManager:
    """Manages numbered checkpoints in ``directory``: keeps some, deletes the rest.

    Behaves like ``tf.train.CheckpointManager``; see its documentation for the
    fine points. It picks up the state a previous manager (torchckpt's or
    TensorFlow's) left in ``directory``. Only one manager should be active in a
    directory at a time.

    Args:
        checkpoint: a :class:`~torchckpt.Checkpoint`.
        directory: where to write checkpoints and the ``checkpoint`` state file.
        max_to_keep: how many checkpoints to keep in the active set; ``None``
            keeps all of them.
        keep_checkpoint_every_n_hours: when a checkpoint leaves the active set,
            keep it anyway if it is at least this many hours newer than the last
            one kept this way.
        checkpoint_name: file name of the prefixes, ``<directory>/<name>-<N>``.
        step_counter: the training step (a 0-d tensor, an int-like object, or a
            callable returning an int); required with ``checkpoint_interval``.
        checkpoint_interval: minimum number of steps between two saves.
        init_fn: called by :meth:`restore_or_initialize` when there is no checkpoint.
        last_checkpoint_step: the step of the last save, for ``checkpoint_interval``.
        clock: returns the time in seconds since the epoch; ``time.time`` by
            default (inject one to test ``keep_checkpoint_every_n_hours``).
        storage_options: fsspec filesystem arguments when ``directory`` is a URL
            (``s3://bucket/run``); passed on to every save and restore.

    Raises:
        ValueError: ``max_to_keep`` is not positive, or ``checkpoint_interval``
            without ``step_counter``.
        CorruptCheckpointError: the directory's state file cannot be parsed.
        OutsideDirectoryError: the state file names a path outside ``directory``
            (a copied TF1 run directory, say): nothing there is adopted or deleted.
        CheckpointLockedError: another manager holds ``directory`` (see :meth:`close`).

    Example:
        >>> import os, tempfile, torch, torchckpt
        >>> ckpt = torchckpt.Checkpoint(w=torch.zeros(2))
        >>> manager = CheckpointManager(ckpt, tempfile.mkdtemp(), max_to_keep=2)
        >>> paths = [os.path.basename(manager.save()) for _ in range(3)]
        >>> paths, [os.path.basename(p) for p in manager.checkpoints]
        (['ckpt-1', 'ckpt-2', 'ckpt-3'], ['ckpt-2', 'ckpt-3'])
    """

    def __init__(self, checkpoint: Checkpoint, directory: str | os.PathLike[str],
                 max_to_keep: int | None, keep_checkpoint_every_n_hours: float | None = None,
                 checkpoint_name: str = "ckpt", step_counter: Any = None,
                 checkpoint_interval: int | None = None, init_fn: Callable[[], Any] | None = None,
                 last_checkpoint_step: int | None = None, *,
                 clock: Callable[[], float] = time.time,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        if max_to_keep is not None and max_to_keep <= 0:
            raise ValueError(f"max_to_keep must be a positive integer or None, got {max_to_keep}")
        if checkpoint_interval is not None and step_counter is None:
            raise ValueError("step_counter must be passed when checkpoint_interval is not None")
        self._checkpoint = checkpoint
        self._max_to_keep = max_to_keep
        self._keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._directory = os.fspath(directory)
        self._checkpoint_name = checkpoint_name
        self._checkpoint_prefix = os.path.join(self._directory, checkpoint_name)
        self._step_counter = step_counter
        self._checkpoint_interval = checkpoint_interval
        self._last_checkpoint_step = last_checkpoint_step
        self._init_fn = init_fn
        self._clock = clock
        self._maybe_delete: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._latest_checkpoint: str | None = None
        self._storage_options = storage_options  # fsspec options of a directory URL
        self._remote = is_remote(self._directory)  # no lock on object stores
        self._lock_fd = (_lock_directory(self._directory) if _is_rank_zero() and not self._remote
                         else None)
        if self._lock_fd is not None:
            _FORKED_LOCKS.track(self)
        try:
            self._recover_state()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Wait for a save in flight and release the directory's lock (idempotent).

        A manager that is garbage-collected releases the lock too; ``close()``
        (or ``with CheckpointManager(...) as manager:``) makes that explicit, so a
        second manager can take over the directory in the same process.
        """
        try:
            if self._lock_fd is not None:
                self._sync()
        finally:
            fd, self._lock_fd = self._lock_fd, None
            if fd is not None:
                os.close(fd)

    def __del__(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            self._lock_fd = None
            os.close(fd)

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recover_state(self) -> None:
        """Take over the bookkeeping a previous manager left in the state file (TF's rules)."""
        state = read_state(self._directory, storage_options=self._storage_options)
        now = self._clock()
        if state is None:
            # A little in the past, so that quickly re-creating a manager cannot race.
            self._last_preserved_timestamp = now - 1.0
            return
        self._latest_checkpoint = state.model_checkpoint_path
        # A clock that went backwards must not make old checkpoints look new.
        self._last_preserved_timestamp = min(state.last_preserved_timestamp, now)
        timestamps = list(state.all_model_checkpoint_timestamps) or (
            [self._last_preserved_timestamp] * len(state.all_model_checkpoint_paths))
        for path, stamp in zip(state.all_model_checkpoint_paths, timestamps):
            stamp = min(stamp, now)
            if stamp > self._last_preserved_timestamp:
                self._maybe_delete[path] = stamp

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def checkpoint(self) -> Checkpoint:
        """The managed :class:`~torchckpt.Checkpoint`."""
        return self._checkpoint

    @property
    def checkpoint_interval(self) -> int | None:
        return self._checkpoint_interval

    @property
    def latest_checkpoint(self) -> str | None:
        """The newest prefix in ``directory``, or None; pass it to ``Checkpoint.restore``."""
        return self._latest_checkpoint

    @property
    def checkpoints(self) -> list[str]:
        """The active set, oldest first (checkpoints kept by ``keep_checkpoint_every_n_hours``
        are not listed, as in TF)."""
        return list(self._maybe_delete)

    def save(self, checkpoint_number: Any = None, check_interval: bool = True,
             options: CheckpointOptions | None = None) -> str | None:
        """Write a new checkpoint, record it in the state file and sweep old ones.

        Args:
            checkpoint_number: the number of the new prefix (an int or 0-d
                integer tensor); default ``save_counter`` after its increment,
                which happens either way.
            check_interval: with ``checkpoint_interval``, skip the save unless at
                least that many steps passed since the last one. A save at the
                same step as the last one is skipped regardless.
            options: :class:`~torchckpt.CheckpointOptions` for the write. With a process
                group of more than one rank, every rank calls ``save()``
                (``collective=None``, the default), or rank 0 alone does
                (``collective=False``).

        Returns:
            The new prefix, or None when the interval check skipped the save.

        Raises:
            DistributedCheckpointError: a save from one rank on a rank other than 0
                (rank 0 owns the directory), or a collective save that failed
                (``CollectiveTimeoutError`` when some rank did not call it).
        """
        if self._checkpoint_interval is not None:
            step = _step_value(self._step_counter)
            if self._last_checkpoint_step is not None:
                if step == self._last_checkpoint_step:
                    return None
                if check_interval and step < self._last_checkpoint_step + self._checkpoint_interval:
                    return None
            self._last_checkpoint_step = step
        writes_files = _is_rank_zero()
        if not writes_files and not distributed.saves_collectively(
                options.collective if options else None, options.group if options else None):
            raise DistributedCheckpointError(
                self._checkpoint_prefix, "CheckpointManager.save(options=CheckpointOptions("
                "collective=False)) on a rank other than 0: rank 0 owns the directory (its "
                "state file and deletions); save from rank 0, or from every rank")
        self._sync()  # a save in flight must finish before its temporary files look stale
        number = self._checkpoint.increment_save_counter()
        if checkpoint_number is not None:
            number = _step_value(checkpoint_number)
        prefix = f"{self._checkpoint_prefix}-{number}"
        if writes_files:  # a collective write's handshake keeps the other ranks waiting meanwhile
            self._remove_leftovers(prefix)
        options = self._with_storage_options(options)
        # ``on_commit`` runs once the bundle is committed: on the background thread for an
        # asynchronous save, on rank 0 for a distributed one.
        path = self._checkpoint.write(
            prefix, options, on_commit=self._record_and_sweep_state if writes_files else None)
        if not writes_files:
            self._adopt_state(path)
        return path

    def _with_storage_options(self, options: CheckpointOptions | None) -> CheckpointOptions | None:
        """``options`` carrying this manager's ``storage_options`` (unless it has its own)."""
        if self._storage_options is None or (options and options.storage_options is not None):
            return options
        return dataclasses.replace(options or CheckpointOptions(),
                                   storage_options=self._storage_options)

    def _adopt_state(self, save_path: str) -> None:
        """Take over the bookkeeping rank 0 wrote to the state file for ``save_path`` (a
        collective save returns only after it did); as rank 0 would compute it, without
        touching files, if the state file cannot be seen."""
        state = read_state(self._directory, storage_options=self._storage_options)
        if state is None or os.path.normpath(state.model_checkpoint_path) != os.path.normpath(
                save_path):
            self._record_and_sweep_state(save_path, touch_files=False)
            return
        paths = list(state.all_model_checkpoint_paths)
        stamps = list(state.all_model_checkpoint_timestamps)
        if len(stamps) != len(paths):
            stamps = [state.last_preserved_timestamp] * len(paths)
        self._maybe_delete = collections.OrderedDict(zip(paths, stamps))
        self._last_preserved_timestamp = state.last_preserved_timestamp
        self._latest_checkpoint = save_path

    def _sync(self) -> None:
        self._checkpoint.sync()

    def _remove_leftovers(self, prefix: str) -> None:
        """Step 1 of the commit protocol (module docstring)."""
        state = read_state(self._directory, storage_options=self._storage_options)
        numbered = re.compile(re.escape(self._checkpoint_name) + r"-\d+")
        if self._remote:
            named = set() if state is None else {
                normalize(p) for p in [state.model_checkpoint_path,
                                       *state.all_model_checkpoint_paths]}
            remote_state.remove_leftovers(self._directory, numbered, prefix, named,
                                          self._storage_options)
            return
        named = set() if state is None else {
            os.path.normpath(p) for p in [state.model_checkpoint_path,
                                          *state.all_model_checkpoint_paths]}
        try:
            names = os.listdir(self._directory)
        except FileNotFoundError:
            names = []
        for name in names:  # first finish re-saves a crash interrupted (format/commit.py)
            if name.endswith(COMMIT_RECORD_SUFFIX) and numbered.fullmatch(
                    name[: -len(COMMIT_RECORD_SUFFIX)]):
                complete_commit(os.path.join(self._directory, name[: -len(COMMIT_RECORD_SUFFIX)]))
        for name in names:
            path = os.path.join(self._directory, name)
            final = final_path_of_temp(name)
            if final is not None:
                # every commit record was completed above: no temporary file is committed data
                if numbered.fullmatch(prefix_of(final.removesuffix(COMMIT_RECORD_SUFFIX))):
                    _remove(path)
                continue
            owner = prefix_of(name)
            if (owner != name and not name.endswith(".index") and numbered.fullmatch(owner)
                    and not os.path.isfile(index_path(os.path.join(self._directory, owner)))
                    and os.path.normpath(os.path.join(self._directory, owner)) not in named):
                _remove(path)  # a data shard no index ever committed, or whose index went first
        for path in state_temp_files(self._directory):
            _remove(path)
        if os.path.normpath(prefix) not in named:  # an unrecorded, maybe partial, earlier write
            _delete_checkpoint(self._directory, prefix)

    def _record_and_sweep_state(self, save_path: str, touch_files: bool = True) -> None:
        """Steps 3-5 of the commit protocol, run once the bundle is committed.

        The new bookkeeping is computed aside and adopted only once the state
        file says the same, so a failed state-file write changes nothing.
        """
        timestamp = self._clock()
        active = collections.OrderedDict(self._maybe_delete)
        active.pop(save_path, None)  # an overwritten checkpoint moves to the end of the queue
        active[save_path] = timestamp
        leaving, preserved = self._sweep(active, self._last_preserved_timestamp)
        if touch_files:
            # write_state stores paths relative to the directory; absolute paths make that
            # right for a relative ``directory`` too.
            full = (lambda p: p) if self._remote else os.path.abspath
            write_state(self._directory, full(save_path), [full(p) for p in active],
                        timestamps=list(active.values()), last_preserved_timestamp=preserved,
                        storage_options=self._storage_options)
        self._maybe_delete, self._last_preserved_timestamp = active, preserved
        self._latest_checkpoint = save_path
        if touch_files:
            for path in leaving:
                if self._remote:
                    remote_state.delete_checkpoint(self._directory, path, self._storage_options)
                else:
                    _delete_checkpoint(self._directory, path)

    def _sweep(self, active: collections.OrderedDict[str, float],
               preserved: float) -> tuple[list[str], float]:
        """TF's ``_sweep`` without the deleting: trims ``active`` (in place) to
        ``max_to_keep``; returns the checkpoints to delete (all but those kept by
        ``keep_checkpoint_every_n_hours``) and the new ``last_preserved_timestamp``."""
        leaving: list[str] = []
        if not self._max_to_keep:
            return leaving, preserved  # everything stays in the active set
        while len(active) > self._max_to_keep:
            path, timestamp = active.popitem(last=False)
            hours = self._keep_checkpoint_every_n_hours
            if hours and timestamp - hours * 3600.0 >= preserved:
                preserved = timestamp  # kept, but no longer listed
                continue
            leaving.append(path)
        return leaving, preserved

    def restore_or_initialize(self) -> str | None:
        """Restore the latest checkpoint, or call ``init_fn`` when there is none.

        Returns:
            The restored prefix, or None when nothing was restored.
        """
        if self._latest_checkpoint is not None:
            self._checkpoint.restore(self._latest_checkpoint, self._with_storage_options(None))
            if self._checkpoint_interval is not None:
                self._last_checkpoint_step = _step_value(self._step_counter)
            return self._latest_checkpoint
        if self._init_fn is not None:
            self._init_fn()
        return None

    def sync(self) -> None:
        """Wait for an asynchronous save in flight (a no-op for synchronous saves)."""
        self._sync()
