"""Sharded save and resharded restore: time and per-rank peak memory for 1, 2 and 4 ranks.

    python benchmarks/distributed.py [--params-mb 24] [--mode fsdp|ddp] [--worlds 1 2 4]
                                     [--dir DIR] [--json]

For each world size W: W CPU processes (gloo; 1 means no process group, the
plain single-file save) build the same MLP (FSDP2 ``fully_shard`` or DDP) with
Adam state, ``Checkpoint.save`` it, then build fresh ones and restore it. Each
rank reports:

* save / restore seconds (wall time of the call, slowest rank shown);
* peak extra memory during the call: the rise of VmHWM over VmRSS just before
  it (VmHWM reset through /proc/self/clear_refs), in MiB;
* bytes of its data file.

Finally one process restores the largest world's checkpoint into a plain
model (consolidation). Ranks are forked from this process after torch is
imported, so on a small machine the numbers are the save/restore work, not
interpreter start-up; with few cores, more ranks mostly share the same
CPUs, so expect parallel speedups only where there are cores and disks for them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import torch
import torch._dynamo  # noqa: F401 - before forking; DDP would import it in every rank
import torch.distributed as dist
import torch.distributed.fsdp  # noqa: F401
import torch.distributed.tensor  # noqa: F401
from torch import nn

from torchckpt import Checkpoint
from torchckpt.format import data_path


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measured(fn: Any) -> tuple[float, float]:
    """(seconds, peak extra MiB) of ``fn()``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    base = _status("VmRSS")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return seconds, max(0, _status("VmHWM") - base) / 2**20


def build(width: int, mode: str, world: int) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """(module to run, module to checkpoint, optimizer) with Adam state after one step."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width),
                          nn.ReLU(), nn.Linear(width, 8))
    model: nn.Module = inner
    if world > 1 and mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in inner:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        model = fully_shard(inner, mesh=mesh)
    elif world > 1:
        model = nn.parallel.DistributedDataParallel(inner)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    return model, inner, opt


def rank_main(rank: int, world: int, args: argparse.Namespace, out: str) -> None:
    width = args.width
    _, inner, opt = build(width, args.mode, world)
    ckpt = Checkpoint(model=inner, optimizer=opt)
    prefix_dir = os.path.join(args.dir, f"w{world}")
    save_s, save_mb = measured(lambda: ckpt.save(os.path.join(prefix_dir, "ckpt")))
    _, inner2, opt2 = build(width, args.mode, world)
    fresh = Checkpoint(model=inner2, optimizer=opt2)
    restore_s, restore_mb = measured(
        lambda: fresh.restore(os.path.join(prefix_dir, "ckpt-1")).assert_consumed())
    report = {"rank": rank, "save_s": save_s, "save_peak_mib": save_mb, "restore_s": restore_s,
              "restore_peak_mib": restore_mb,
              "shard_bytes": os.path.getsize(data_path(os.path.join(prefix_dir, "ckpt-1"),
                                                       rank, world))}
    with open(os.path.join(out, f"w{world}-r{rank}.json"), "w") as f:
        json.dump(report, f)


def run_world(world: int, args: argparse.Namespace, out: str) -> None:
    if world == 1:
        rank_main(0, 1, args, out)
        return
    store = os.path.join(out, f"rendezvous-{world}")
    pids = []
    for rank in range(world):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                torch.set_num_threads(1)
                dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                        world_size=world, timeout=datetime.timedelta(seconds=120))
                rank_main(rank, world, args, out)
                dist.destroy_process_group()
                code = 0
            except BaseException:  # noqa: BLE001 - printed; the exit code reports it
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"a rank of world {world} failed")


def consolidate(world: int, args: argparse.Namespace) -> tuple[float, float]:
    _, inner, opt = build(args.width, "plain", 1)
    ckpt = Checkpoint(model=inner, optimizer=opt)
    path = os.path.join(args.dir, f"w{world}", "ckpt-1")
    return measured(lambda: ckpt.restore(path).assert_consumed())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params-mb", type=float, default=24.0,
                        help="float32 parameter megabytes (Adam adds twice as much state)")
    parser.add_argument("--mode", choices=["fsdp", "ddp"], default="fsdp")
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    args.width = max(8, int((args.params_mb * 2**20 / 4 / 2) ** 0.5))
    own_dir = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="torchckpt-dist-bench-")
    out = os.path.join(args.dir, "reports")
    os.makedirs(out, exist_ok=True)
    results: dict[str, Any] = {"mode": args.mode, "width": args.width,
                               "checkpoint_mib": 3 * 4 * (2 * args.width ** 2) / 2**20,
                               "worlds": {}}
    try:
        for world in args.worlds:
            run_world(world, args, out)
            ranks = []
            for r in range(world):
                with open(os.path.join(out, f"w{world}-r{r}.json")) as f:
                    ranks.append(json.load(f))
            results["worlds"][world] = ranks
        largest = max(args.worlds)
        seconds, mib = consolidate(largest, args)
        results["consolidate"] = {"from_world": largest, "restore_s": seconds, "peak_mib": mib}
    finally:
        if own_dir:
            shutil.rmtree(args.dir, ignore_errors=True)
    print(json.dumps(results, indent=1) if args.json else table(results))


def table(results: dict[str, Any]) -> str:
    lines = [f"mode {results['mode']}, ~{results['checkpoint_mib']:.0f} MiB checkpoint "
             f"(params + Adam state)",
             f"{'ranks':>5} {'save s':>8} {'restore s':>9}  per-rank peak MiB save / restore"
             f"  | shard MiB"]
    for world, ranks in results["worlds"].items():
        save = max(r["save_s"] for r in ranks)
        restore = max(r["restore_s"] for r in ranks)
        peaks = " ".join(f"{r['save_peak_mib']:.0f}/{r['restore_peak_mib']:.0f}" for r in ranks)
        shards = " ".join(f"{r['shard_bytes'] / 2**20:.1f}" for r in ranks)
        lines.append(f"{world:>5} {save:>8.3f} {restore:>9.3f}  {peaks}  | {shards}")
    c = results["consolidate"]
    lines.append(f"1 process restoring the {c['from_world']}-rank checkpoint: "
                 f"{c['restore_s']:.3f} s, peak {c['peak_mib']:.0f} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
