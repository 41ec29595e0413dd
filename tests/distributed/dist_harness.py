"""Process groups, models and value dumps for ``tests/distributed`` (phases: ``dist_phases``).

:func:`run_group` *forks* a process group (gloo, ``file://`` rendezvous) from a
process that imported torch once, so a group of 4 ranks costs no interpreter
start-ups; on a 2-core machine that is most of the run time. Ranks report
through files only (``.npz`` values, ``.json`` facts). Nothing is pickled.

A dump (``<name>.npz`` + ``<name>.json``, :func:`dump`) maps every checkpoint
key of the objects, as ``plan_save`` sees them, to the full value (DTensors
gathered), so values compare bit for bit across world sizes and with TensorFlow.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from typing import Any, Callable

import numpy as np
import torch

# Imported here, before forking, so that the ranks share it instead of each importing
# ~800 modules when the first DistributedDataParallel is built (seconds on 2 cores).
import torch._dynamo  # noqa: F401,E402
import torch.distributed as dist
import torch.distributed.fsdp  # noqa: F401,E402
import torch.distributed.tensor  # noqa: F401,E402
from torch import nn

from torchckpt.distributed.layout import is_dtensor
from torchckpt.saving import plan_save

# full_tensor() of (Shard(0), Shard(0)) in the dumps warns that it takes two all-gathers
logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)

PG_TIMEOUT_S = 20  # a dead peer is normally noticed at once (the socket closes)


# --- process groups ------------------------------------------------------------------------

def run_group(world: int, target: Callable[..., None], args: tuple, workdir: str,
              timeout: float = 90.0) -> list[int]:
    """Fork ``world`` ranks running ``target(rank, world, *args)``; their exit codes
    (``-signal`` for a killed rank, 124 for one still running at ``timeout``)."""
    store = os.path.join(workdir, f"rendezvous-{uuid.uuid4().hex}")
    pids = []
    for rank in range(world):
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                torch.set_num_threads(1)
                dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                        world_size=world,
                                        timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
                target(rank, world, *args)
                dist.barrier()
                dist.destroy_process_group()
                code = 0
            except BaseException:  # noqa: BLE001 - reported, then the exit code says it
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    return _wait_all(pids, timeout)


def _wait_all(pids: list[int], timeout: float) -> list[int]:
    codes: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(codes) < len(pids):
        for pid in pids:
            if pid in codes:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            for pid in pids:
                if pid not in codes:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    codes[pid] = 124
        time.sleep(0.02)
    return [codes[p] for p in pids]


# --- models --------------------------------------------------------------------------------

def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))


def train(model: nn.Module, opt: torch.optim.Optimizer, rank: int, steps: int = 2) -> None:
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    for _ in range(steps):
        x = torch.randn(4, 6, generator=g)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def ddp_model(seed: int) -> tuple[nn.Module, nn.Module]:
    """(the DDP wrapper, the module to checkpoint)."""
    from torch.nn.parallel import DistributedDataParallel

    inner = mlp(seed)
    return DistributedDataParallel(inner), inner


def fsdp_model(seed: int) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = mlp(seed)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


# Parameters of the DTensor scenario: name -> (shape, dtype). Their placements differ
# per mesh (DT_PLACEMENTS), covering nested shards on one dim, empty chunks,
# replication, and float16 (which TF cannot reassemble, so it is gathered).
DT_PARAMS = {
    "w1": ((7, 5), torch.float32),
    "w2": ((6, 4), torch.bfloat16),
    "w3": ((5, 3), torch.float16),
    "w4": ((3,), torch.int64),
    "w5": ((2, 3), torch.float32),
    "w6": ((1, 4), torch.float32),  # one chunk holds it all: a plain entry, not a slice
}


def dt_placements(mesh_ndim: int) -> dict[str, tuple]:
    from torch.distributed.tensor import Replicate, Shard

    if mesh_ndim == 2:
        return {"w1": (Shard(0), Shard(1)), "w2": (Replicate(), Shard(0)),
                "w3": (Shard(0), Replicate()), "w4": (Replicate(), Replicate()),
                "w5": (Shard(0), Shard(0)), "w6": (Shard(0), Replicate())}
    return {"w1": (Shard(1),), "w2": (Shard(0),), "w3": (Shard(0),), "w4": (Replicate(),),
            "w5": (Shard(1),), "w6": (Shard(1),)}


def dt_values(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (shape, dtype) in DT_PARAMS.items():
        if dtype.is_floating_point:
            out[name] = torch.randn(shape, generator=g).to(dtype)
        else:
            out[name] = torch.randint(-1000, 1000, shape, generator=g, dtype=dtype)
    return out


def dt_module(seed: int, mesh_shape: tuple[int, ...] | None) -> nn.Module:
    """Plain parameters (``mesh_shape`` None) or DTensors distributed over a CPU mesh."""
    m = nn.Module()
    values = dt_values(seed)
    if mesh_shape is not None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import distribute_tensor

        mesh = init_device_mesh("cpu", mesh_shape)
        placements = dt_placements(len(mesh_shape))
    for name, value in values.items():
        if mesh_shape is not None:
            value = distribute_tensor(value, mesh, placements[name])
        m.register_parameter(name, nn.Parameter(value, requires_grad=False))
    m.register_buffer("counter", torch.tensor(seed, dtype=torch.int64))
    return m


# --- dumps ---------------------------------------------------------------------------------

def full_values(root: Any) -> dict[str, np.ndarray]:
    """Every tensor ``plan_save`` sees under ``root``, by checkpoint key, gathered to full
    (a collective for DTensors: every rank calls it). bfloat16 as its uint16 bits."""
    out = {}
    for key, t in plan_save(root).tensors:
        if is_dtensor(t):
            t = t.full_tensor()
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        out[key] = t.numpy().copy()
    return out


def dump(root: Any, workdir: str, name: str, rank: int) -> None:
    """Write ``name.npz``/``name.json`` (rank 0) with :func:`full_values` and the strings."""
    values = full_values(root)
    if rank != 0:
        return
    keys = sorted(values)
    np.savez(os.path.join(workdir, f"{name}.npz"), *[values[k] for k in keys])
    strings = dict(plan_save(root).strings)
    with open(os.path.join(workdir, f"{name}.json"), "w") as f:
        json.dump({"keys": keys, "strings": strings}, f)


def load_dump(workdir: str, name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with open(os.path.join(workdir, f"{name}.json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(workdir, f"{name}.npz"), allow_pickle=False) as z:
        values = {k: z[f"arr_{i}"] for i, k in enumerate(meta["keys"])}
    return values, meta["strings"]


def write_json(workdir: str, name: str, data: Any) -> None:
    with open(os.path.join(workdir, name), "w") as f:
        json.dump(data, f)


def _wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return -1


def measure_shard_writes(workdir: str, tag: str, rank: int) -> Callable[[], None]:
    """Record, per save, the bytes this rank's ``write_shard`` passed to write syscalls
    (``wchar`` of /proc/self/io: no collective runs inside it for these models).
    Returns the function that undoes the patch."""
    from torchckpt.distributed import save as save_module

    original = save_module.write_shard
    log: list[dict[str, Any]] = []

    def measured(prefix: str, r: int, world: int, *args: Any, **kwargs: Any) -> Any:
        before = _wchar()
        out = original(prefix, r, world, *args, **kwargs)
        log.append({"prefix": prefix, "rank": r, "world": world, "wchar": _wchar() - before})
        write_json(workdir, f"writes-{tag}-{rank}.json", log)
        return out

    save_module.write_shard = measured

    def undo() -> None:
        save_module.write_shard = original
    return undo
