"""Benchmark worker: one case on one data set, in this process, reported as JSON lines.

Run by ``benchmarks/run.py`` (one fresh process per case and run, so that no
case inherits another's memory or threads); by hand::

    python benchmarks/cases.py --case torchckpt --dataset small50k [--quick]

Each case saves the data set to a fresh folder and restores it into the
existing tensors (zeroed first, so a restore that does nothing fails the check
that follows). Lines printed: ``ready``, then ``start``/``end`` per phase with
the time and memory figures, then ``done``. Peer restores are their loader plus
``copy_`` into each existing tensor, which is what ``load_state_dict`` does
minus its per-module Python overhead (so peers are measured at their best).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import sys
import time
import warnings
from typing import Callable

import crc32c
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.datasets import DATASETS, Dataset, build  # noqa: E402

IOV_MAX = 1024


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def proc_status() -> dict[str, int]:
    """``/proc/self/status`` memory fields in KiB (VmRSS, VmHWM, RssAnon, RssFile)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[name] = int(rest.split()[0])
    return out


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), where permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def phase(name: str, fn: Callable[[], None]) -> None:
    reset_peak()
    before = proc_status()
    emit("start", phase=name, **before)
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    after = proc_status()
    emit("end", phase=name, seconds=seconds, **after)


def tensor_crcs(tensors: list[torch.Tensor]) -> list[int]:
    return [crc32c.crc32c(t.numpy()) for t in tensors]


# --- cases ---------------------------------------------------------------------------------


class Case:
    """Saves ``ds`` under ``folder`` and restores it into the existing tensors."""

    def __init__(self, ds: Dataset, folder: str) -> None:
        self.ds = ds
        self.folder = folder
        self.tensors = list(ds.tensors.values())

    def save(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        raise NotImplementedError

    def live(self) -> list[torch.Tensor]:
        """The tensors a restore must have filled (the objects' own, after the restore)."""
        return self.tensors


class Limit(Case):
    """The machine: one ``os.write`` per tensor buffer (small tensors: batched ``writev``);
    restore by mmap + ``copy_`` (small tensors: batched ``preadv``). Buffers prepared
    outside the timing; no checksums, no index, no fsync."""

    def __init__(self, ds: Dataset, folder: str) -> None:
        super().__init__(ds, folder)
        self.path = os.path.join(folder, "raw.bin")
        self.views = [t.numpy() for t in self.tensors]
        self.small = max(t.nbytes for t in self.tensors) < (1 << 20)

    def save(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            step = IOV_MAX if self.small else 1
            for i in range(0, len(self.views), step):
                iov = self.views[i:i + step]
                want = sum(v.nbytes for v in iov)
                if os.writev(fd, iov) != want:
                    raise OSError("short write")
        finally:
            os.close(fd)

    def restore(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if self.small:
                offset = 0
                for i in range(0, len(self.views), IOV_MAX):
                    iov = self.views[i:i + IOV_MAX]
                    offset += os.preadv(fd, iov, offset)
                return
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # frombuffer on a read-only map
                offset = 0
                for t in self.tensors:
                    src = torch.frombuffer(m, dtype=t.dtype, count=t.numel(), offset=offset)
                    t.copy_(src.view(t.shape))
                    offset += t.nbytes
                    del src
        finally:
            os.close(fd)


class FormatLayer(Case):
    """torchckpt's format layer: ``BundleWriter.add_many`` of the tensors' own buffers;
    ``BundleReader.read_many_into`` the existing tensors, every checksum verified."""

    sync = False
    verify = True

    def __init__(self, ds: Dataset, folder: str) -> None:
        super().__init__(ds, folder)
        self.prefix = os.path.join(folder, "ckpt")
        import torchckpt.format  # noqa: F401  # imports happen outside the timed phases
        if any(t.dtype != torch.float32 for t in self.tensors):
            raise ValueError("the format-layer case assumes float32 tensors")

    def save(self) -> None:
        from torchckpt.format import BundleWriter  # imported in __init__: not timed
        from torchckpt.format.dtypes import DataType

        w = BundleWriter(self.prefix, sync=self.sync)
        f32 = DataType.DT_FLOAT
        w.add_many((key, t.numpy(), f32, t.shape) for key, t in zip(self.ds.tf_keys, self.tensors))
        w.finish()

    def restore(self) -> None:
        from torchckpt.format import BundleReader

        with BundleReader(self.prefix, verify_checksums=self.verify) as r:
            r.read_many_into(zip(self.ds.tf_keys, [t.numpy() for t in self.tensors]))


class FormatLayerFsync(FormatLayer):
    """The same with ``sync=True`` (fsync of data and index, and of the folder)."""

    sync = True


class FormatLayerNoCrc(FormatLayer):
    """The same, restoring with ``verify_checksums=False`` (what the peers do)."""

    verify = False


class CheckpointApi(Case):
    """``torchckpt.Checkpoint(model=..., optimizer=...)``: ``write`` / ``read`` (no fsync)."""

    def __init__(self, ds: Dataset, folder: str) -> None:
        super().__init__(ds, folder)
        import torchckpt

        objects: dict[str, object] = {"model": ds.model}
        if ds.optimizer is not None:
            objects["optimizer"] = ds.optimizer
        self.ckpt = torchckpt.Checkpoint(**objects)
        self.options = torchckpt.CheckpointOptions(sync=False)
        self.prefix = os.path.join(folder, "ckpt")

    def save(self) -> None:
        self.ckpt.write(self.prefix, options=self.options)

    def restore(self) -> None:
        self.ckpt.read(self.prefix, options=self.options)

    def live(self) -> list[torch.Tensor]:
        return live_tensors(self.ds)


class StateDictApi(Case):
    """``torchckpt.save_state_dict(state)`` / ``load_state_dict(into=state)``: the
    plain-state-dict pair, restoring into the existing tensors as ``dcp.load`` does."""

    def __init__(self, ds: Dataset, folder: str) -> None:
        super().__init__(ds, folder)
        self.prefix = os.path.join(folder, "state")
        # imports happen outside the timed phases (``torchckpt`` loads its modules on first use)
        import torchckpt.state_dict  # noqa: F401

    def save(self) -> None:
        import torchckpt

        torchckpt.save_state_dict(self.ds.tensors, self.prefix, sync=False)  # as the format case

    def restore(self) -> None:
        import torchckpt

        torchckpt.load_state_dict(self.prefix, into=self.ds.tensors)


class StateDictMmap(StateDictApi):
    """``torchckpt.load_state_dict(mmap=True)`` + ``copy_``, measured as the peers' loaders
    are (the save is :class:`StateDictApi`'s)."""

    def restore(self) -> None:
        import torchckpt

        loaded = torchckpt.load_state_dict(self.prefix, mmap=True)
        with torch.no_grad():
            for name, t in self.ds.tensors.items():
                t.copy_(loaded[name])


class TorchSave(Case):
    """``torch.save(state)`` / ``torch.load(mmap=True, weights_only=True)`` + ``copy_``."""

    def __init__(self, ds: Dataset, folder: str) -> None:
        super().__init__(ds, folder)
        self.path = os.path.join(folder, "state.pt")

    def save(self) -> None:
        torch.save(self.ds.tensors, self.path)

    def restore(self) -> None:
        loaded = torch.load(self.path, mmap=True, weights_only=True)
        with torch.no_grad():
            for name, t in self.ds.tensors.items():
                t.copy_(loaded[name])


class Safetensors(Case):
    """``safetensors.torch.save_file`` / ``load_file`` + ``copy_``."""

    def __init__(self, ds: Dataset, folder: str) -> None:
        super().__init__(ds, folder)
        self.path = os.path.join(folder, "state.safetensors")
        import safetensors.torch  # noqa: F401  # imports happen outside the timed phases

    def save(self) -> None:
        from safetensors.torch import save_file

        save_file(self.ds.tensors, self.path)

    def restore(self) -> None:
        from safetensors.torch import load_file

        loaded = load_file(self.path)
        with torch.no_grad():
            for name, t in self.ds.tensors.items():
                t.copy_(loaded[name])


class Dcp(Case):
    """``torch.distributed.checkpoint`` save/load, one process, ``sync_files=False``."""

    def __init__(self, ds: Dataset, folder: str) -> None:
        super().__init__(ds, folder)
        self.path = os.path.join(folder, "dcp")
        warnings.filterwarnings("ignore")
        import torch.distributed.checkpoint  # noqa: F401  # imports happen outside the timings

    def save(self) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save(self.ds.tensors, storage_writer=dcp.FileSystemWriter(self.path, sync_files=False),
                 no_dist=True)

    def restore(self) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.load(self.ds.tensors, storage_reader=dcp.FileSystemReader(self.path), no_dist=True)


CASES: dict[str, type[Case]] = {
    "limit": Limit, "torchckpt": FormatLayer, "torchckpt-fsync": FormatLayerFsync,
    "torchckpt-nocrc": FormatLayerNoCrc,
    "checkpoint": CheckpointApi, "state-dict": StateDictApi, "state-dict-mmap": StateDictMmap,
    "torch": TorchSave,
    "safetensors": Safetensors, "dcp": Dcp,
}
ALL_CASES = (*CASES, "tensorflow")


def live_tensors(ds: Dataset) -> list[torch.Tensor]:
    """The data set's tensors as its objects hold them now (restores may replace some)."""
    out = [p.data for p in ds.model.parameters()]
    if ds.optimizer is not None:
        for p in ds.model.parameters():
            out.extend(ds.optimizer.state[p].values())
    return out


def run_torch_case(case_name: str, ds: Dataset, folder: str) -> None:
    case = CASES[case_name](ds, folder)
    expected = tensor_crcs(case.live())
    emit("ready", nbytes=ds.nbytes, tensors=len(ds.tensors))
    phase("save", case.save)
    with torch.no_grad():
        for t in case.live():
            t.zero_()
    phase("restore", case.restore)
    if tensor_crcs(case.live()) != expected:
        raise SystemExit(f"{case_name}: restored values differ from the saved ones")


def run_tensorflow(ds: Dataset, folder: str) -> None:
    """``tf.train.Checkpoint(v=[variables]).write`` / ``.read`` into the same variables."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    arrays = [t.numpy() for t in ds.tensors.values()]
    expected = [crc32c.crc32c(a) for a in arrays]
    nbytes = ds.nbytes
    variables = [tf.Variable(a) for a in arrays]
    del arrays
    ds.tensors.clear()
    ds.model = ds.optimizer = None  # type: ignore[assignment]
    ckpt = tf.train.Checkpoint(v=variables)
    prefix = os.path.join(folder, "tf")
    emit("ready", nbytes=nbytes, tensors=len(variables))
    phase("save", lambda: ckpt.write(prefix))
    for v in variables:
        v.assign(tf.zeros_like(v))
    phase("restore", lambda: ckpt.read(prefix).assert_consumed())
    if [crc32c.crc32c(v.numpy()) for v in variables] != expected:
        raise SystemExit("tensorflow: restored values differ from the saved ones")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, choices=ALL_CASES)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", default=os.path.join(os.path.dirname(__file__), "_work"))
    args = parser.parse_args(argv)
    folder = os.path.join(args.workdir, f"{args.case}-{args.dataset}-{os.getpid()}")
    os.makedirs(folder)
    try:
        ds = build(args.dataset, quick=args.quick)
        if args.case == "tensorflow":
            run_tensorflow(ds, folder)
        else:
            run_torch_case(args.case, ds, folder)
        emit("done", disk_bytes=_disk_bytes(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _disk_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)


if __name__ == "__main__":
    main()
