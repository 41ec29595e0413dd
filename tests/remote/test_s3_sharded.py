"""Two ranks (FSDP2 over gloo) save one sharded checkpoint to S3; one process restores it."""

from __future__ import annotations

import os
import sys
import textwrap

import torch

import torchckpt
from processes import run_isolated
from torchckpt.format import storage

RANKS = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
    from torch import nn
    # Imported before the ranks are forked, so that they share it rather than each
    # importing it again (seconds on two cores).
    import torchckpt, torchckpt.distributed, fsspec, s3fs
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def rank_main(rank, url, store, expected):
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
        net = model()
        mesh = init_device_mesh("cpu", (2,))
        for layer in net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(net, mesh=mesh)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        torch.manual_seed(1 + rank)
        net(torch.randn(8, 16)).square().mean().backward()
        opt.step()
        ckpt = torchckpt.Checkpoint(model=net, optimizer=opt)
        path = ckpt.save(url + "/ckpt")               # collective: every rank writes its shard
        full = {k: v.full_tensor() for k, v in net.state_dict().items()}
        if rank == 0:
            print("saved", path, flush=True)
            torchckpt.save_state_dict(full, expected)  # the values, for the restoring side
        dist.barrier()
        dist.destroy_process_group()

    if __name__ == "__main__":
        url, store, expected = sys.argv[1:4]
        mp.start_processes(rank_main, args=(url, store, expected), nprocs=2, join=True,
                           start_method="fork")
""")


def test_two_ranks_save_one_sharded_checkpoint_to_s3_and_one_restores(s3, tmp_path) -> None:
    url = f"{s3}/fsdp"
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    done = run_isolated([sys.executable, str(script), url, str(tmp_path / "store"),
                         str(tmp_path / "expected")], timeout=240, env=dict(os.environ))
    assert done.returncode == 0, done.output[-4000:]
    assert f"saved {url}/ckpt-1" in done.stdout
    names = set(storage.list_names(url))
    assert {"checkpoint", "ckpt-1.index", "ckpt-1.data-00000-of-00002",
            "ckpt-1.data-00001-of-00002"} <= names

    torch.manual_seed(123)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    status = torchckpt.Checkpoint(model=net, optimizer=opt).restore(url)
    status.assert_existing_objects_matched()
    expected = torchckpt.load_state_dict(str(tmp_path / "expected"))
    for name, value in net.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert all("exp_avg" in opt.state[p] for p in net.parameters())
