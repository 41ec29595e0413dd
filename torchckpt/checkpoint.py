"""``torchckpt.Checkpoint``: ``tf.train.Checkpoint`` for torch objects.

The checkpoint is the root of an object graph whose children are the keyword
arguments it was built with (and attributes assigned later), in that order,
followed by ``save_counter`` once it exists. See ``saving`` and ``restoring``
for how the graph is written and matched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from . import distributed as _distributed
from .adapters import default_registry
from .adapters.registry import Adapter, Handle
from .adapters.values import ValueSlot, is_python_scalar
from .async_save import AsyncSaver
from .errors import UntrackableError
from .format import write_state
from .format._io import gc_frozen
from .format.state_file import resolve_prefix
from .format.storage import dirname, is_remote, local_path
from .graph.keys import SAVE_COUNTER
from .graph.status import RestoreStatus
from .restoring import RestoreSession
from .saving import SavePlan, plan_save, walk_live, write_plan
from .transfer.staging import StagingBuffers


@dataclass(frozen=True)
class CheckpointOptions:
    """Options for save and restore (``tf.train.CheckpointOptions``' role).

    Attributes:
        device: where tensors created by a restore are placed (meta-device
            models are materialized here). Default: CPU.
        sync: fsync files before renaming them into place (crash safety).
        enable_async: ``save``/``write`` return once the state is snapshotted
            and write it on a background thread (see ``torchckpt.async_save``).
            Collective saves are synchronous.
        collective: with ``torch.distributed`` initialized, who calls
            ``save``/``write``. ``None`` (default): every rank, when the process
            group has more than one rank (each rank writes its part of one
            checkpoint, rank 0 commits). ``True``: every rank, said explicitly.
            ``False``: this rank alone, with no collective: it writes the
            replicated state it holds (sharded DTensors are refused) and its
            own per-rank values, as ``torch.save`` on rank 0 would.
        collective_timeout: seconds a collective save waits for every rank to
            call it; a rank that does not come makes the callers raise
            ``CollectiveTimeoutError`` (the ``if rank == 0: save()`` mistake)
            instead of waiting forever.
        group: the process group of a collective save (default: the default
            group); under NCCL, a gloo group (see docs/distributed.md).
        storage_options: fsspec filesystem arguments for URL paths
            (``s3://bucket/run/ckpt``); credentials and endpoints otherwise come
            from the environment as fsspec's backends read them.
    """

    device: str | torch.device | None = None
    sync: bool = True
    enable_async: bool = False
    collective: bool | None = None
    collective_timeout: float = _distributed.DEFAULT_TIMEOUT_S
    group: Any = None
    storage_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.collective not in (None, True, False):
            raise ValueError(f"collective must be None, True or False, got {self.collective!r}")
        if not self.collective_timeout > 0:
            raise ValueError(f"collective_timeout must be a positive number of seconds, got "
                             f"{self.collective_timeout!r}")


class Checkpoint:
    """Groups objects to save and restore together, as ``tf.train.Checkpoint`` does.

    >>> import torch, tempfile, os
    >>> model = torch.nn.Linear(2, 1)
    >>> ckpt = Checkpoint(model=model, step=3)
    >>> path = ckpt.save(os.path.join(tempfile.mkdtemp(), "ckpt"))
    >>> os.path.basename(path)
    'ckpt-1'
    >>> fresh = Checkpoint(model=torch.nn.Linear(2, 1), step=0)
    >>> fresh.restore(path).assert_consumed().__class__.__name__
    'RestoreStatus'
    >>> fresh.step
    3

    Args:
        **objects: modules, optimizers, schedulers, tensors, numbers, dicts,
            lists, generators or any object with ``state_dict``/``load_state_dict``.

    Raises:
        UntrackableError: an argument cannot be saved.
    """

    def __init__(self, **objects: Any) -> None:
        object.__setattr__(self, "_objects", {})
        object.__setattr__(self, "_watchers", {})
        object.__setattr__(self, "_save_counter", None)
        object.__setattr__(self, "_async", AsyncSaver())
        object.__setattr__(self, "_staging", StagingBuffers())
        for name, obj in objects.items():
            setattr(self, name, obj)

    # --- tracked attributes ------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        if name == SAVE_COUNTER:
            raise AttributeError("save_counter is managed by the Checkpoint")
        child = _child_object(self._objects, name, value)
        if value is not None:
            try:
                walk_live(child)  # refuse untrackable values now, not at the first save
            except UntrackableError as exc:
                raise UntrackableError(f"Checkpoint attribute {name!r}: {exc}") from exc
        self._objects[name] = value
        self._announce(name, child)

    def _announce(self, name: str, child: Any) -> None:
        """Hand a new child to the restores waiting for it (see ``restoring``)."""
        for callback in self._watchers.pop(name, []):
            callback(child)

    def __getattr__(self, name: str) -> Any:
        objects = self.__dict__.get("_objects", {})
        if name in objects:
            return objects[name]
        raise AttributeError(f"Checkpoint has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if name in self._objects:
            del self._objects[name]
        else:
            object.__delattr__(self, name)

    @property
    def save_counter(self) -> int:
        """Number of ``save()`` calls so far (restored by ``restore()``)."""
        return 0 if self._save_counter is None else int(self._save_counter.item())

    def _create_save_counter(self) -> None:
        """Create ``save_counter`` (0) on first use; a ``read()`` waiting for it then
        restores it, as TF's deferred restoration does, so numbering continues."""
        if self._save_counter is None:
            object.__setattr__(self, "_save_counter", torch.zeros((), dtype=torch.int64))
            self._announce(SAVE_COUNTER, self._save_counter)

    def increment_save_counter(self) -> int:
        """Add one to ``save_counter`` (creating it) and return the new value.

        What :meth:`save` does before it writes; for code that numbers checkpoints
        itself, as :class:`~torchckpt.CheckpointManager` does.
        """
        self._create_save_counter()
        assert self._save_counter is not None
        self._save_counter.add_(1)
        return self.save_counter

    # --- saving ------------------------------------------------------------------------------

    def write(self, file_prefix: str | os.PathLike[str], options: CheckpointOptions | None = None,
              *, on_commit: Callable[[str], None] | None = None) -> str:
        """Write the checkpoint to ``file_prefix`` without numbering or a state file.

        Args:
            file_prefix: the prefix to write (its files are replaced crash-safely).
            options: see :class:`CheckpointOptions`; with a process group of more
                than one rank, ``collective`` says whether every rank calls this.
            on_commit: called with the prefix once the bundle is committed: on the
                background thread for an asynchronous write, on rank 0 for a
                distributed one (where :class:`~torchckpt.CheckpointManager`
                records the checkpoint in the state file).

        Returns:
            ``file_prefix``.

        Raises:
            CollectiveTimeoutError: a collective write that some rank did not join
                within ``options.collective_timeout`` seconds.
            DistributedCheckpointError: a collective write failed on some rank, or a
                write from one rank (``collective=False``) of sharded values.
        """
        return self._write(os.fspath(file_prefix), options or CheckpointOptions(), after=on_commit)

    def _write(self, prefix: str, options: CheckpointOptions,
               after: Callable[[str], None] | None = None) -> str:
        """Write ``prefix``, then call ``after(prefix)`` once the bundle is committed.

        With ``options.enable_async`` only the snapshot happens here; the write
        and ``after`` run on the background thread.
        """
        self._async.wait()
        if _distributed.saves_collectively(options.collective, options.group):
            # each rank writes its own data file, rank 0 merges the index and runs ``after``;
            # synchronous (docs/distributed.md)
            return _distributed.write(self, prefix, sync=options.sync, group=options.group,
                                      after=after, timeout=options.collective_timeout,
                                      storage_options=options.storage_options)
        with gc_frozen():  # a model of many tensors: no full collections meanwhile (_io.py)
            plan = plan_save(self)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            plan = _distributed.one_rank_plan(plan, prefix)  # this rank saves alone

        def job(plan: SavePlan = plan) -> None:
            with gc_frozen():
                write_plan(plan, prefix, sync=options.sync,
                           storage_options=options.storage_options, staging=self._staging)
            if after is not None:
                after(prefix)

        if options.enable_async:
            snapshot = self._async.snapshot(plan)
            self._async.submit(lambda: job(snapshot))
        else:
            job()
        return prefix

    def save(self, file_prefix: str, options: CheckpointOptions | None = None) -> str:
        """Save to ``file_prefix-N`` (N = ``save_counter`` after incrementing it) and
        record it in the directory's ``checkpoint`` state file.

        With a process group of more than one rank this is collective by default:
        call it on every rank, or pass ``CheckpointOptions(collective=False)`` on the
        one rank that saves (see :class:`CheckpointOptions`).

        Returns:
            The prefix written, e.g. ``"/run/ckpt-3"``.

        Raises:
            CollectiveTimeoutError, DistributedCheckpointError: see :meth:`write`.
        """
        options = options or CheckpointOptions()
        self._async.wait()
        number = self.increment_save_counter()

        def record(path: str) -> None:
            if is_remote(path):  # stored relative to the directory URL, as below
                write_state(dirname(path), path, [path],
                            storage_options=options.storage_options)
                return
            # write_state stores an absolute path relative to the directory, as TF does
            # ("ckpt-3"); a relative one it would store as given, relative to the cwd
            path = local_path(path)
            full = os.path.abspath(path)
            write_state(os.path.dirname(path), full, [full], sync=options.sync)

        return self._write(f"{os.fspath(file_prefix)}-{number}", options, after=record)

    # --- restoring -----------------------------------------------------------------------------

    def restore(self, save_path: str | None,
                options: CheckpointOptions | None = None) -> RestoreStatus:
        """Restore every value into the matching live objects; values whose objects do
        not exist yet wait for them (see ``RestoreStatus``). ``None`` does nothing.

        Raises:
            CheckpointNotFoundError: nothing at ``save_path``.
            CorruptCheckpointError, MismatchError: bad files or incompatible values.
        """
        if save_path is None:
            return RestoreStatus(None)
        self._create_save_counter()
        return self.read(save_path, options)

    def read(self, save_path: str, options: CheckpointOptions | None = None) -> RestoreStatus:
        """Like :meth:`restore` but does not create ``save_counter`` (TF's ``read``)."""
        options = options or CheckpointOptions()
        self._async.wait()
        prefix = resolve_prefix(os.fspath(save_path), storage_options=options.storage_options)
        device = torch.device(options.device) if options.device is not None else torch.device("cpu")
        with gc_frozen():  # a graph of many nodes: no full collections meanwhile (_io.py)
            session = RestoreSession.open(self, prefix, device=device,
                                          storage_options=options.storage_options,
                                          staging=self._staging)
            session.start()  # the session lives on in the hooks it waits on, and in the status
        return RestoreStatus(session)

    def sync(self) -> None:
        """Wait for the asynchronous save in flight, re-raising its error if it failed."""
        self._async.wait()

    def close(self) -> None:
        """Wait for a save in flight (re-raising its error) and free the memory this
        checkpoint keeps between saves: the asynchronous snapshot buffers and the GPU
        staging buffers. The checkpoint stays usable; its next save allocates anew.
        Garbage collection frees the same memory; ``close()`` makes it explicit.
        """
        try:
            self._async.wait()
        finally:
            self._async.release_buffers()
            self._staging.close()


def _child_object(objects: dict[str, Any], name: str, value: Any) -> Any:
    return ValueSlot(objects, name) if is_python_scalar(value) else value


class _CheckpointAdapter(Adapter):
    """The root: user objects in insertion order, then ``save_counter``."""

    def children(self) -> list[tuple[str, Any]]:
        ckpt: Checkpoint = self.obj
        out = [(n, _child_object(ckpt._objects, n, v)) for n, v in ckpt._objects.items()
               if v is not None]
        if ckpt._save_counter is not None:
            out.append((SAVE_COUNTER, ckpt._save_counter))
        return out

    def watch(self, name: str, callback: Callable[[Any], None]) -> Handle | None:
        watchers = self.obj._watchers.setdefault(name, [])
        watchers.append(callback)
        return _Unwatch(watchers, callback)


@dataclass(frozen=True, eq=False)
class _Unwatch:
    """The handle of one watch: removes its callback. One class for all watches (a
    class per watch cost ~2 KB each, and a checkpoint may defer thousands)."""

    watchers: list
    callback: Callable[[Any], None]

    def remove(self) -> None:
        if self.callback in self.watchers:
            self.watchers.remove(self.callback)


default_registry.register(Checkpoint, _CheckpointAdapter)
