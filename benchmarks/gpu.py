"""GPU benchmark: saving CUDA state, async blocking time, restoring onto the GPU.

    python benchmarks/gpu.py                 # ~4 GiB of CUDA state, 3 interleaved runs, < 4 min
    python benchmarks/gpu.py --size-gib 1 --runs 2 --readme
    python benchmarks/gpu.py --cpu-smoke     # tiny, on CPU: checks the script itself

Without a CUDA device it prints a line and exits 0 (unless ``--cpu-smoke``).

State: float32 tensors of 16 MiB (``Linear(2048, 2048)`` weights and their two
Adam moments) filling ``--size-gib`` on the device. Every case saves the same
state to a fresh folder on the local disk (no fsync: page cache, like the CPU
benchmark) and restores it into the existing CUDA tensors. Cases:

* limits: device-to-host copy of the whole state into pinned memory (reused
  buffers) and into pageable memory; the disk write limit (one ``os.write``
  per tensor from host memory); host-to-device copy from pinned memory.
* torchckpt ``Checkpoint.write``/``read`` of the CUDA model (what the library
  does today), and with ``enable_async=True``: time until ``write`` returns
  (the blocking part) and until ``sync()`` returns.
* torchckpt format layer through two reused pinned staging buffers (the copy
  of tensor i+1 overlaps the write of tensor i; host memory bounded by two
  tensors): the reference for the library's GPU path. Restore: ``read_into`` a
  pinned buffer, then a non-blocking copy to the device, double-buffered.
* safetensors ``save_file`` / ``load_file(device="cuda")`` + ``copy_``;
  ``torch.save`` / ``torch.load(map_location="cuda")`` + ``copy_``; DCP
  ``async_save`` blocking time (when ``torch.distributed`` allows one process).

Timing uses ``torch.cuda.synchronize()`` before stopping the clock. A deadline
(``--budget-s``, default 200) stops starting new runs so the whole script stays
under 4 minutes on a lent machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
GPU_BEGIN, GPU_END = "<!-- gpu:begin -->", "<!-- gpu:end -->"


class State:
    """The CUDA state: a model and Adam moments, plus a flat name -> tensor view."""

    def __init__(self, size_gib: float, device: torch.device, pin: bool) -> None:
        per_layer = 3 * 2048 * 2048 * 4  # weight + two Adam moments
        layers = max(1, round(size_gib * 2**30 / per_layer))
        self.device, self.pin = device, pin
        self.model = torch.nn.Sequential(
            *[torch.nn.Linear(2048, 2048, bias=False, device=device) for _ in range(layers)])
        self.opt = torch.optim.Adam(self.model.parameters())
        self.tensors: dict[str, torch.Tensor] = {}
        for i, p in enumerate(self.model.parameters()):
            self.opt.state[p] = {"step": torch.tensor(1.0),
                                 "exp_avg": torch.rand_like(p), "exp_avg_sq": torch.rand_like(p)}
            self.tensors[f"model.{i}.weight"] = p.data
            self.tensors[f"optimizer.{i}.exp_avg"] = self.opt.state[p]["exp_avg"]
            self.tensors[f"optimizer.{i}.exp_avg_sq"] = self.opt.state[p]["exp_avg_sq"]
        self.nbytes = sum(t.nbytes for t in self.tensors.values())
        biggest = max(t.numel() for t in self.tensors.values())
        self.staging = [torch.empty(biggest, dtype=torch.float32, pin_memory=pin)
                        for _ in range(2)]
        self.pinned = {k: torch.empty_like(t, device="cpu", pin_memory=pin)
                       for k, t in self.tensors.items()}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _timed(state: State, fn: Callable[[], object]) -> float:
    state.sync()
    t0 = time.perf_counter()
    fn()
    state.sync()
    return time.perf_counter() - t0


# --- cases: each returns {phase: seconds} ---------------------------------------------------


def limits(state: State, folder: str) -> dict[str, float]:
    path = os.path.join(folder, "raw.bin")
    out = {"d2h pinned": _timed(state, lambda: [state.pinned[k].copy_(t, non_blocking=True)
                                                 for k, t in state.tensors.items()]),
           "d2h pageable": _timed(state, lambda: [t.to("cpu") for t in state.tensors.values()])}

    def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for buf in state.pinned.values():
            os.write(fd, buf.numpy())
        os.close(fd)

    out["disk write"] = _timed(state, write)
    out["h2d pinned"] = _timed(state, lambda: [t.copy_(state.pinned[k], non_blocking=True)
                                               for k, t in state.tensors.items()])
    return out


def format_staged(state: State, folder: str) -> dict[str, float]:
    from torchckpt.format import BundleReader, BundleWriter
    from torchckpt.format.dtypes import DataType

    prefix = os.path.join(folder, "ckpt")
    stream = torch.cuda.Stream() if state.device.type == "cuda" else None
    items = list(state.tensors.items())

    def stage(i: int, events: list) -> None:
        """Start copying tensor i into staging buffer i % 2 (on the side stream)."""
        t, buf = items[i][1], state.staging[i % 2][:items[i][1].numel()]
        if stream is None:
            buf.copy_(t.view(-1))
            return
        with torch.cuda.stream(stream):
            buf.copy_(t.view(-1), non_blocking=True)
            events[i % 2] = torch.cuda.Event()
            events[i % 2].record(stream)

    def save() -> None:
        w = BundleWriter(prefix, sync=False)
        events: list = [None, None]
        stage(0, events)
        for i, (key, t) in enumerate(items):
            if events[i % 2] is not None:
                events[i % 2].synchronize()
            if i + 1 < len(items):
                stage(i + 1, events)  # overlaps the write below
            buf = state.staging[i % 2][:t.numel()]
            if t.nbytes < (1 << 20):  # gathered, not written before add() returns: own copy
                buf = buf.clone()
            w.add(key, buf.numpy(), DataType.DT_FLOAT, tuple(t.shape))  # CRC beside the write
        w.finish()

    def restore() -> None:
        events: list = [None, None]
        with BundleReader(prefix) as r:
            for i, (key, t) in enumerate(items):
                buf = state.staging[i % 2][:t.numel()]
                if events[i % 2] is not None:
                    events[i % 2].synchronize()  # the copy that last read this buffer is done
                r.read_into(key, buf.numpy())
                if stream is None:
                    t.view(-1).copy_(buf)
                    continue
                with torch.cuda.stream(stream):
                    t.view(-1).copy_(buf, non_blocking=True)
                    events[i % 2] = torch.cuda.Event()
                    events[i % 2].record(stream)

    return {"save": _timed(state, save), "restore": _timed(state, restore)}


def checkpoint_api(state: State, folder: str) -> dict[str, float]:
    import torchckpt

    ckpt = torchckpt.Checkpoint(model=state.model, optimizer=state.opt)
    prefix = os.path.join(folder, "ckpt")
    plain = torchckpt.CheckpointOptions(sync=False)
    out = {"save": _timed(state, lambda: ckpt.write(prefix, options=plain))}
    out["restore"] = _timed(state, lambda: ckpt.read(prefix, options=plain))
    asyn = torchckpt.CheckpointOptions(sync=False, enable_async=True)
    prefix2 = os.path.join(folder, "ckpt-async")
    t0 = time.perf_counter()
    ckpt.write(prefix2, options=asyn)
    out["async blocking"] = time.perf_counter() - t0
    ckpt.sync()
    out["async total"] = time.perf_counter() - t0
    ckpt.write(prefix2, options=asyn)  # second save reuses the pinned buffers
    ckpt.sync()
    t0 = time.perf_counter()
    ckpt.write(prefix2 + "b", options=asyn)
    out["async blocking (reused buffers)"] = time.perf_counter() - t0
    ckpt.sync()
    return out


def safetensors_case(state: State, folder: str) -> dict[str, float]:
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "state.safetensors")
    out = {"save": _timed(state, lambda: save_file(state.tensors, path))}

    def restore() -> None:
        loaded = load_file(path, device=str(state.device))
        for k, t in state.tensors.items():
            t.copy_(loaded[k])

    out["restore"] = _timed(state, restore)
    return out


def torch_case(state: State, folder: str) -> dict[str, float]:
    path = os.path.join(folder, "state.pt")
    out = {"save": _timed(state, lambda: torch.save(state.tensors, path))}

    def restore() -> None:
        loaded = torch.load(path, map_location=state.device, weights_only=True)
        for k, t in state.tensors.items():
            t.copy_(loaded[k])

    out["restore"] = _timed(state, restore)
    return out


def dcp_async(state: State, folder: str) -> dict[str, float]:
    import warnings

    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    warnings.filterwarnings("ignore")
    if not dist.is_initialized():  # async_save needs a process group
        dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=0, world_size=1)
    writer = dcp.FileSystemWriter(os.path.join(folder, "dcp"), sync_files=False)
    t0 = time.perf_counter()
    future = dcp.async_save(state.tensors, storage_writer=writer)
    blocking = time.perf_counter() - t0
    future.result()
    return {"async blocking": blocking, "async total": time.perf_counter() - t0}


CASES: dict[str, Callable[[State, str], dict[str, float]]] = {
    "limits": limits, "torchckpt format, pinned staging": format_staged,
    "torchckpt Checkpoint": checkpoint_api, "safetensors": safetensors_case,
    "torch.save / torch.load": torch_case, "torch.distributed.checkpoint": dcp_async,
}


def run(args: argparse.Namespace, device: torch.device) -> str:
    state = State(args.size_gib, device, pin=device.type == "cuda")
    results: dict[str, dict[str, list[float]]] = {c: {} for c in CASES}
    errors: dict[str, str] = {}
    deadline = time.monotonic() + args.budget_s
    for r in range(args.runs):
        for name, case in CASES.items():
            if time.monotonic() > deadline or name in errors:
                continue
            folder = tempfile.mkdtemp(dir=args.workdir)
            try:
                for phase, seconds in case(state, folder).items():
                    results[name].setdefault(phase, []).append(seconds)
                print(f"[run {r + 1}] {name}: " + ", ".join(
                    f"{p} {v[-1]:.3f}s" for p, v in results[name].items()), flush=True)
            except Exception as exc:  # noqa: BLE001 - report, keep the other cases going
                errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                print(f"[run {r + 1}] {name}: failed: {errors[name]}", flush=True)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    return report(args, device, state, results, errors)


def report(args: argparse.Namespace, device: torch.device, state: State,
           results: dict[str, dict[str, list[float]]], errors: dict[str, str]) -> str:
    gb = state.nbytes / 1e9
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test)"
    lines = [f"Run {datetime.datetime.now():%Y-%m-%d %H:%M}, `python benchmarks/gpu.py "
             f"{' '.join(sys.argv[1:])}` on {name}; {gb:.2f} GB of float32 state in "
             f"{len(state.tensors)} tensors; medians of up to {args.runs} runs.", "",
             "| case | phase | median s | GB/s |", "|---|---|---|---|"]
    med = {c: {p: statistics.median(v) for p, v in ph.items()} for c, ph in results.items()}
    for case, phases in med.items():
        for phase, s in phases.items():
            lines.append(f"| {case} | {phase} | {s:.3f} | {gb / s:.2f} |")
    for case, err in errors.items():
        lines.append(f"| {case} | failed | {err} | |")
    lim, fmt = med.get("limits", {}), med.get("torchckpt format, pinned staging", {})
    api, st = med.get("torchckpt Checkpoint", {}), med.get("safetensors", {})
    lines += ["", "Targets:", ""]

    def check(what: str, ok: bool | None, shown: str) -> None:
        lines.append(f"- {what}: {shown} -> {'n/a' if ok is None else 'holds' if ok else 'FAILS'}")

    for label, row in (("format layer", fmt), ("Checkpoint", api)):
        if "save" in row and "disk write" in lim:
            r = lim["disk write"] / row["save"]
            check(f"{label} save >= 0.8x disk write limit", r >= 0.8, f"{r:.2f}x")
        if "restore" in row and "restore" in st:
            r = st["restore"] / row["restore"]
            check(f"{label} restore at least as fast as safetensors load_file(cuda)", r >= 1,
                  f"{r:.2f}x safetensors' speed")
    for key in ("async blocking (reused buffers)", "async blocking"):
        if key in api and "d2h pinned" in lim:
            r = api[key] / lim["d2h pinned"]
            check(f"Checkpoint {key} <= 1.5x pinned D2H copy", r <= 1.5, f"{r:.2f}x")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=200.0)
    parser.add_argument("--workdir", default=os.path.join(HERE, "_work"))
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny run on CPU")
    parser.add_argument("--readme", action="store_true", help="write the table to README.md")
    args = parser.parse_args()
    if args.cpu_smoke:
        device = torch.device("cpu")
        args.size_gib = min(args.size_gib, 0.05)
    elif not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; nothing to measure (use --cpu-smoke "
              "to exercise the script on CPU)")
        return
    else:
        device = torch.device("cuda")
    os.makedirs(args.workdir, exist_ok=True)
    text = run(args, device)
    print("\n" + text)
    if args.readme and not args.cpu_smoke:
        path = os.path.join(HERE, "README.md")
        doc = open(path).read() if os.path.exists(path) else ""
        if GPU_BEGIN not in doc:
            doc += f"\n{GPU_BEGIN}\n{GPU_END}\n"
        head, rest = doc.split(GPU_BEGIN, 1)
        with open(path, "w") as f:
            f.write(f"{head}{GPU_BEGIN}\n{text}{GPU_END}{rest.split(GPU_END, 1)[1]}")


if __name__ == "__main__":
    main()
