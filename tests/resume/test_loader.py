"""ResumableLoader: a resumed epoch yields exactly the remaining batches, fetches nothing
it skips (acceptance b), and keeps every random stream where an uninterrupted run has it."""

from __future__ import annotations

import copy
import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch
from resume_helpers import LoggingDataset, seed_everything, through_checkpoint_encoding
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    Sampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

import torchckpt
from processes import run_isolated
from torchckpt.data import ResumableLoader
from torchckpt.errors import TorchckptError, UntrackableError

N = 23  # samples; not a multiple of any batch size used here


class BucketBatchSampler(Sampler):
    """A custom batch sampler of uneven batches, shuffled with Python's ``random``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        order = list(range(self.n))
        random.shuffle(order)
        sizes = [2, 5, 3]
        i = 0
        while i < self.n:
            size = sizes[(i // 2) % 3]
            yield order[i:i + size]
            i += size

    def __len__(self) -> int:
        return sum(1 for _ in self.__iter__())  # never called mid-iteration in these tests


def _configs():
    def gen(seed):
        return torch.Generator().manual_seed(seed)
    weights = [1.0 + i % 3 for i in range(N)]
    return {
        "shuffle-generator": lambda ds, s, **kw: DataLoader(ds, batch_size=3, shuffle=True,
                                                            generator=gen(s), **kw),
        "shuffle-global": lambda ds, s, **kw: DataLoader(ds, batch_size=3, shuffle=True, **kw),
        "drop-last": lambda ds, s, **kw: DataLoader(ds, batch_size=4, shuffle=True,
                                                    drop_last=True, **kw),
        "subset-sampler": lambda ds, s, **kw: DataLoader(
            ds, batch_size=3, sampler=SubsetRandomSampler(list(range(0, N, 2)), generator=gen(s)),
            **kw),
        "weighted-replacement": lambda ds, s, **kw: DataLoader(
            ds, batch_size=4, sampler=WeightedRandomSampler(weights, 17), **kw),
        "batch-sampler": lambda ds, s, **kw: DataLoader(ds, batch_sampler=BucketBatchSampler(N),
                                                        **kw),
        "no-batching": lambda ds, s, **kw: DataLoader(ds, batch_size=None, shuffle=True, **kw),
        "sequential": lambda ds, s, **kw: DataLoader(ds, batch_size=5, **kw),
    }


CONFIGS = _configs()
CASES = ([(name, 0) for name in CONFIGS]
         + [("shuffle-global", 2), ("batch-sampler", 2), ("no-batching", 2)])


def _flat_indices(batch) -> list[int]:
    first = batch[..., 0] if batch.dim() >= 1 and batch.shape[-1] == 4 else batch
    return [int(v) for v in first.reshape(-1).tolist()]


def _epochs(loader: ResumableLoader, until_epoch: int, stop_after: int | None = None):
    """Batches (with a main-process draw after each, like a training step) until
    ``loader.epoch`` reaches ``until_epoch`` or ``stop_after`` batches were taken."""
    out = []
    while loader.epoch < until_epoch:
        for batch in loader:
            out.append((batch.clone(), torch.rand(())))
            if stop_after is not None and len(out) == stop_after:
                return out
    return out


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(p, q)
                                    for (x, p), (y, q) in zip(a, b))


def _make(name, workers, tmp_path, seed, noise=True, **kw):
    ds = LoggingDataset(N, str(tmp_path / "fetched.log"), noise=noise)
    return ResumableLoader(CONFIGS[name](ds, seed, num_workers=workers, **kw)), ds


def check_resumed_epoch(tmp_path: Path, name: str, workers: int) -> None:
    """A loader stopped at several points and resumed from its state (in a process whose
    generators were all re-seeded) yields exactly the rest, and fetches only that."""
    seed_everything(0)
    loader, ds = _make(name, workers, tmp_path, seed=1)
    reference = _epochs(loader, until_epoch=2)
    per_epoch = len(reference) // 2
    ds.fetched()
    stops = [1, per_epoch // 2, per_epoch, per_epoch + 2] if workers == 0 else [per_epoch // 2 + 1]
    for stop in stops:
        seed_everything(0)
        loader, ds = _make(name, workers, tmp_path, seed=1)
        head = _epochs(loader, until_epoch=2, stop_after=stop)
        state = through_checkpoint_encoding(loader.state_dict())
        rng = through_checkpoint_encoding(torchckpt.RNGState().state_dict())
        ds.fetched()

        seed_everything(1234)  # a fresh process: every generator elsewhere
        resumed, ds = _make(name, workers, tmp_path, seed=99)
        resumed.load_state_dict(state)
        torchckpt.RNGState().load_state_dict(rng)
        tail = _epochs(resumed, until_epoch=2)
        assert _same(head + tail, reference), f"stopped after {stop} batches"
        fetched = ds.fetched()
        expected = [i for batch, _ in tail for i in _flat_indices(batch)]
        assert sorted(fetched) == sorted(expected), f"stopped after {stop} batches"


def check_persistent_workers_resume(tmp_path: Path) -> None:
    seed_everything(0)
    loader, _ = _make("shuffle-global", 2, tmp_path, seed=1, persistent_workers=True)
    reference = _epochs(loader, until_epoch=2)
    seed_everything(0)
    loader, _ = _make("shuffle-global", 2, tmp_path, seed=1, persistent_workers=True)
    head = _epochs(loader, until_epoch=2, stop_after=len(reference) // 2 + 3)
    state = through_checkpoint_encoding(loader.state_dict())
    rng = torchckpt.RNGState().state_dict()
    seed_everything(5)
    resumed, _ = _make("shuffle-global", 2, tmp_path, seed=1, persistent_workers=True)
    resumed.load_state_dict(state)
    torchckpt.RNGState().load_state_dict(rng)
    assert _same(head + _epochs(resumed, until_epoch=2), reference)


def check_stateful_dataloader_is_tracked(tmp_path: Path, workers: int, wrap: bool) -> None:
    import torchdata.stateful_dataloader as sdl_mod  # a test dependency: never skipped

    def make():
        loader = sdl_mod.StatefulDataLoader(list(range(N)), batch_size=3, shuffle=True,
                                            num_workers=workers)
        return ResumableLoader(loader) if wrap else loader

    seed_everything(0)
    reference = [(b, torch.rand(())) for b in make()]
    seed_everything(0)
    loader = make()
    it = iter(loader)
    head = [(next(it), torch.rand(())) for _ in range(3)]
    path = torchckpt.Checkpoint(data=loader, rng=torchckpt.RNGState()).save(str(tmp_path / "c"))
    seed_everything(3)
    resumed = make()
    torchckpt.Checkpoint(data=resumed, rng=torchckpt.RNGState()).restore(path).assert_consumed()
    tail = [(b, torch.rand(())) for b in resumed]
    # Tracked as it is (the generic state_dict adapter), the order resumes ...
    assert [b.tolist() for b, _ in head + tail] == [b.tolist() for b, _ in reference]
    # ... and wrapped, the global random stream too (a resumed StatefulDataLoader draws its
    # base seed again, which ResumableLoader undoes).
    if wrap:
        assert _same(head + tail, reference)


# The cases that start DataLoader worker processes run in a child process
# (loader_child.py), each forked into a process group of its own and killed with
# its workers when done, so that no worker outlives its case or starts inside the
# test process. Case id -> (check, its arguments after the directory).
WORKERS = 2
WORKER_CASES = {
    **{f"resumed-epoch-{name}-w{w}": (check_resumed_epoch, (name, w))
       for name, w in CASES if w},
    "persistent-workers": (check_persistent_workers_resume, ()),
    **{f"stateful-dataloader-{'wrapped' if wrap else 'direct'}-w{WORKERS}":
       (check_stateful_dataloader_is_tracked, (WORKERS, wrap)) for wrap in (False, True)},
}
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loader_child.py")
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def worker_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Run every case of ``WORKER_CASES`` in loader_child.py; ``{case id: (exit status,
    the case's output)}``: 0 when every assertion of the check held."""
    root = tmp_path_factory.mktemp("loader_workers")
    results = root / "results.json"
    args = []
    for case in WORKER_CASES:
        (root / case).mkdir()
        args += [case, str(root / case)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [TESTS, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = run_isolated([sys.executable, CHILD, str(results), *args], timeout=600, env=env)
    assert proc.returncode == 0 and results.exists(), proc.output[-4000:]
    codes = json.loads(results.read_text())
    return {case: (code, (root / case / "output.txt").read_text(errors="replace"))
            for case, code in zip(WORKER_CASES, codes)}


def _check_in_child(worker_cases: dict[str, tuple[int, str]], case: str) -> None:
    code, output = worker_cases[case]
    assert code == 0, f"{case}: exit status {code}\n{output[-4000:]}"


@pytest.mark.parametrize("name,workers", CASES, ids=[f"{n}-w{w}" for n, w in CASES])
def test_resumed_epoch_yields_exactly_the_remaining_batches_and_fetches_nothing_else(
        request, tmp_path, name, workers):
    if workers:
        _check_in_child(request.getfixturevalue("worker_cases"),
                        f"resumed-epoch-{name}-w{workers}")
    else:
        check_resumed_epoch(tmp_path, name, workers)


def test_persistent_workers_resume(worker_cases):
    _check_in_child(worker_cases, "persistent-workers")


@pytest.mark.parametrize("name", ["shuffle-generator", "shuffle-global", "batch-sampler"])
def test_single_process_batches_and_random_streams_equal_a_plain_dataloader(tmp_path, name):
    ds = LoggingDataset(N, str(tmp_path / "fetched.log"), noise=True)
    seed_everything(0)
    loader = CONFIGS[name](ds, 1)
    plain = [(b, torch.rand(())) for _ in range(2) for b in loader]
    after_plain = torchckpt.RNGState().state_dict()
    seed_everything(0)
    wrapped = _epochs(ResumableLoader(CONFIGS[name](ds, 1)), until_epoch=2)
    after_wrapped = torchckpt.RNGState().state_dict()
    assert _same(plain, wrapped)
    assert torch.equal(after_plain["torch"], after_wrapped["torch"])
    assert torch.equal(after_plain["python"]["internal"], after_wrapped["python"]["internal"])


def test_state_through_a_real_checkpoint(tmp_path):
    seed_everything(0)
    loader, _ = _make("shuffle-global", 0, tmp_path, seed=1)
    reference = _epochs(loader, until_epoch=1)
    seed_everything(0)
    loader, _ = _make("shuffle-global", 0, tmp_path, seed=1)
    head = _epochs(loader, until_epoch=1, stop_after=3)
    path = torchckpt.Checkpoint(data=loader, rng=torchckpt.RNGState()).save(str(tmp_path / "c"))
    seed_everything(7)
    resumed, _ = _make("shuffle-global", 0, tmp_path, seed=1)
    torchckpt.Checkpoint(data=resumed, rng=torchckpt.RNGState()).restore(path).assert_consumed()
    assert (resumed.epoch, resumed.batches_consumed) == (0, 3)
    assert _same(head + _epochs(resumed, until_epoch=1), reference)


def test_state_dict_layout_and_progress(tmp_path):
    loader, _ = _make("shuffle-generator", 0, tmp_path, seed=1, noise=False)
    assert len(loader) == 8
    assert loader.state_dict() == {"epoch": 0, "batches_consumed": 0, "in_epoch": False,
                                   "epoch_start": None}
    it = iter(loader)
    next(it)
    next(it)
    sd = loader.state_dict()
    assert (sd["epoch"], sd["batches_consumed"], sd["in_epoch"]) == (0, 2, True)
    assert sd["epoch_start"]["rng"]["torch"].dtype == torch.uint8
    assert len(sd["epoch_start"]["generators"]) == 1  # loader.generator is the sampler's
    list(it)
    assert (loader.epoch, loader.batches_consumed, loader.state_dict()["in_epoch"]) == (1, 0, False)


def test_abandoned_pass_counts_as_an_epoch_and_stale_iterators_stop_reporting(tmp_path):
    loader, _ = _make("sequential", 0, tmp_path, seed=1, noise=False)
    old = iter(loader)
    next(old)
    new = iter(loader)  # abandons the first pass
    assert (loader.epoch, loader.batches_consumed) == (1, 0)
    next(old)
    next(new)
    assert loader.batches_consumed == 1
    list(old)
    assert (loader.epoch, loader.batches_consumed) == (1, 1)


def test_restored_position_survives_a_save_before_iterating(tmp_path):
    seed_everything(0)
    loader, _ = _make("shuffle-global", 0, tmp_path, seed=1, noise=False)
    it = iter(loader)
    next(it)
    state = copy.deepcopy(loader.state_dict())
    again, _ = _make("shuffle-global", 0, tmp_path, seed=1, noise=False)
    again.load_state_dict(state)
    resaved = again.state_dict()
    assert resaved["batches_consumed"] == 1 and resaved["in_epoch"]
    assert torch.equal(resaved["epoch_start"]["rng"]["torch"], state["epoch_start"]["rng"]["torch"])


def test_iterable_dataset_is_rejected():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    with pytest.raises(UntrackableError, match="map-style"):
        ResumableLoader(DataLoader(Stream()))


def test_malformed_or_mismatched_state_is_a_torchckpt_error(tmp_path):
    loader, _ = _make("shuffle-generator", 0, tmp_path, seed=1, noise=False)
    with pytest.raises(TorchckptError, match="not a ResumableLoader state"):
        loader.load_state_dict({"epoch": 1})
    with pytest.raises(TorchckptError, match="invalid"):
        loader.load_state_dict({"epoch": -1, "batches_consumed": 0, "in_epoch": False,
                                "epoch_start": None})
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    unseeded, _ = _make("shuffle-global", 0, tmp_path, seed=1, noise=False)
    with pytest.raises(TorchckptError, match="torch.Generator"):  # refused at restore
        unseeded.load_state_dict(state)


@pytest.mark.parametrize("workers", [0, WORKERS])
@pytest.mark.parametrize("wrap", [False, True], ids=["direct", "wrapped"])
def test_stateful_dataloader_is_tracked(request, tmp_path, workers, wrap):
    if workers:
        _check_in_child(request.getfixturevalue("worker_cases"),
                        f"stateful-dataloader-{'wrapped' if wrap else 'direct'}-w{workers}")
    else:
        check_stateful_dataloader_is_tracked(tmp_path, workers, wrap)
