"""Async saving on the CPU: how long ``save()`` blocks, beside a plain memcpy.

    python benchmarks/async_cpu.py              # model3g (3 GiB), 5 saves, ~1-2 min
    python benchmarks/async_cpu.py --quick      # 8 layers (0.4 GiB)
    python benchmarks/async_cpu.py --readme     # also write the table into README.md

One process, the ``model3g`` data set (64 ``Linear(2048, 2048)`` + Adam state).
Measured, medians over ``--runs``:

* **memcpy into existing buffers**: ``copy_`` of every tensor into a
  preallocated copy: the floor for any consistent snapshot, and what an async
  save costs once its buffers exist. Run right before each save, so both see
  the same machine (the previous write's page cache, other load).
* **memcpy into fresh memory**: ``clone()`` of every tensor: what a first
  snapshot costs (touching new pages is the larger part on such machines).
* **async save, first**: ``Checkpoint.write(enable_async=True)`` until it
  returns, with no snapshot buffers yet (compare with the fresh memcpy).
* **async save, steady state**: the same on later saves, which reuse the
  buffers (compare with the memcpy into existing buffers): the 7 e criterion.
* **training during the write**: after ``write`` returns, a training step of a
  small model is run in a loop until the background write ends; the count and
  the write's duration show the loop ran while the bytes went to disk.
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

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchmarks.datasets import build  # noqa: E402

BEGIN, END = "<!-- async:begin -->", "<!-- async:end -->"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(quick: bool, runs: int, folder: str) -> tuple[dict[str, float], dict[str, float]]:
    import torchckpt

    ds = build("model3g", quick=quick)
    tensors = list(ds.tensors.values())
    fresh = []
    for _ in range(runs):
        held: list[list[torch.Tensor]] = []
        fresh.append(_timed(lambda: held.append([t.clone() for t in tensors])))  # noqa: B023
        held.clear()  # freed outside the timing

    ckpt = torchckpt.Checkpoint(model=ds.model, optimizer=ds.optimizer)
    options = torchckpt.CheckpointOptions(enable_async=True, sync=False)
    small = torch.nn.Linear(256, 256)
    small_opt = torch.optim.SGD(small.parameters(), lr=0.01)
    x = torch.randn(64, 256)

    def step() -> None:
        small_opt.zero_grad()
        small(x).square().mean().backward()
        small_opt.step()

    copies = [t.clone() for t in tensors]
    blocking, totals, steps, memcpy = [], [], [], []
    for i in range(runs + 1):  # memcpy and save alternate: both see the same machine state
        memcpy.append(_timed(lambda: [c.copy_(t) for c, t in zip(copies, tensors)]))
        prefix = os.path.join(folder, f"ckpt-{i}")
        t0 = time.perf_counter()
        ckpt.write(prefix, options=options)
        blocking.append(time.perf_counter() - t0)
        n = 0
        while ckpt._async._thread is not None and ckpt._async._thread.is_alive():  # noqa: SLF001
            step()  # the training loop goes on while the background thread writes
            n += 1
        ckpt.sync()
        totals.append(time.perf_counter() - t0)
        steps.append(n)
        shutil.rmtree(folder)
        os.makedirs(folder)
    med = statistics.median
    times = {"memcpy into existing buffers": med(memcpy[1:]),
             "memcpy into fresh memory": med(fresh),
             "async save, first (blocking)": blocking[0],
             "async save, steady state (blocking)": med(blocking[1:]),
             "async save, steady state (until written)": med(totals[1:])}
    extra = {"GiB": ds.nbytes / 2**30, "training steps during the write": med(steps[1:]),
             "first/fresh": blocking[0] / med(fresh),
             "steady/memcpy": med([b / m for b, m in zip(blocking[1:], memcpy[1:])])}
    return times, extra


def render(times: dict[str, float], extra: dict[str, float], runs: int, quick: bool) -> str:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"Run {now}, `python benchmarks/async_cpu.py{' --quick' if quick else ''}`, "
             f"{extra['GiB']:.2f} GiB (model3g), medians of {runs} (first save: one).", "",
             "| what | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in times.items()]
    verdict = "holds" if extra["steady/memcpy"] <= 1.5 else "**fails**"
    lines += ["", f"steady-state blocking / memcpy into existing buffers (median of the "
              f"per-save ratios, each memcpy run just before its save) = "
              f"**{extra['steady/memcpy']:.2f}x** (limit 1.5x): {verdict}. First save / memcpy "
              f"into fresh memory = {extra['first/fresh']:.2f}x. Training steps run while the "
              "write "
              f"went on (median per save): {extra['training steps during the write']:.0f}."]
    return "\n".join(lines)


def write_readme(report: str) -> None:
    path = os.path.join(HERE, "README.md")
    text = open(path, encoding="utf-8").read()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        head, tail = text.rstrip("\n") + "\n\n## Async saving on the CPU\n\n", "\n"
    open(path, "w", encoding="utf-8").write(f"{head}{BEGIN}\n{report}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="async-", dir=os.path.join(HERE, "_work")
                              if os.path.isdir(os.path.join(HERE, "_work")) else None)
    try:
        times, extra = measure(args.quick, args.runs, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = render(times, extra, args.runs, args.quick)
    print(report)
    if args.readme:
        write_readme(report)


if __name__ == "__main__":
    main()
