"""Save/restore benchmark: torchckpt beside the machine's limit and its peers, in one run.

    python benchmarks/run.py                 # everything, 5 interleaved runs (~20 min)
    python benchmarks/run.py --quick         # small data sets, 2 runs: checks the harness
    python benchmarks/run.py --datasets small50k --cases limit,torchckpt,safetensors
    python benchmarks/run.py --readme        # also write the tables into benchmarks/README.md

Every (case, data set, run) is a fresh process (``benchmarks/cases.py``), so no
case inherits another's memory, threads or imports (TensorFlow is imported only
in its own). Runs are interleaved: run 1 of every case, then run 2, ..., with
the case order shuffled each round (seeded), so a slow minute of a shared
machine hurts every case alike and no case always follows the same one.
Reported: the median of the runs; ``x limit`` is the median over rounds of
(case / limit of the same round); peak extra memory is the largest over the
runs.

Memory, per phase: ``anon`` is the peak of the worker's ``RssAnon`` (sampled
every 5 ms from this process, plus the worker's own reading at the end of the
phase) minus its value at the start: memory the case allocated. ``rss`` is
``VmHWM`` (peak resident set, reset at the start of the phase through
``/proc/self/clear_refs``) minus ``VmRSS`` at the start: it also counts pages
of files the case maps (``mmap``), which are page cache, not allocations.

fsync: peers do not fsync (DCP is run with ``sync_files=False``), and neither
do the ``limit`` and ``torchckpt`` rows; ``torchckpt-fsync`` is the format
layer with ``sync=True`` (the library default: data, index and folder fsynced
before the renames), whose cost is the disk's, not the library's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchmarks.cases import ALL_CASES  # noqa: E402
from benchmarks.datasets import DATASETS  # noqa: E402

LABELS = {
    "limit": "the limit (os.write per buffer / mmap + copy_)",
    "torchckpt": "torchckpt format layer (BundleWriter / read_many_into, CRC verified)",
    "torchckpt-fsync": "torchckpt format layer, sync=True (fsync)",
    "torchckpt-nocrc": "torchckpt format layer, restore with verify_checksums=False",
    "checkpoint": "torchckpt.Checkpoint write / read",
    "state-dict": "torchckpt.save_state_dict / load_state_dict(into=the tensors)",
    "state-dict-mmap": "torchckpt.save_state_dict / load_state_dict(mmap=True) + copy_",
    "torch": "torch.save / torch.load(mmap=True) + copy_",
    "safetensors": "safetensors save_file / load_file + copy_",
    "dcp": "torch.distributed.checkpoint (no fsync)",
    "tensorflow": "TensorFlow tf.train.Checkpoint write / read",
}
SMALL_LIMIT_LABEL = "the limit (batched writev / preadv)"
DEFAULT_CASES = ("limit", "torchckpt", "torchckpt-fsync", "torchckpt-nocrc", "checkpoint",
                 "state-dict", "state-dict-mmap", "torch", "safetensors", "dcp", "tensorflow")
README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"


@dataclass
class Result:
    """One worker run's figures: seconds and peak extra memory (bytes) per phase."""

    seconds: dict[str, float] = field(default_factory=dict)
    anon: dict[str, int] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    nbytes: int = 0
    tensors: int = 0
    disk_bytes: int = 0


def _rss_anon_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def run_worker(case: str, dataset: str, quick: bool, workdir: str, timeout: float) -> Result:
    """Run one worker, sampling its anonymous memory; returns its figures."""
    cmd = [sys.executable, "-u", os.path.join(HERE, "cases.py"), "--case", case,
           "--dataset", dataset, "--workdir", workdir] + (["--quick"] if quick else [])
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        events: list[tuple[float, dict]] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("{"):
                    events.append((time.monotonic(), json.loads(line)))

        reader = threading.Thread(target=read)
        reader.start()
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            kib = _rss_anon_kib(proc.pid)
            if kib is not None:
                samples.append((time.monotonic(), kib))
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.005)
        reader.join()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(
                f"{case}/{dataset} failed ({proc.returncode}):\n{err.read()[-3000:]}")
    return _summarize(events, samples)


def _summarize(events: list[tuple[float, dict]], samples: list[tuple[float, int]]) -> Result:
    r = Result()
    starts: dict[str, tuple[float, dict]] = {}
    for t, ev in events:
        if ev["event"] == "ready":
            r.nbytes, r.tensors = ev["nbytes"], ev["tensors"]
        elif ev["event"] == "start":
            starts[ev["phase"]] = (t, ev)
        elif ev["event"] == "end":
            t0, st = starts[ev["phase"]]
            peak = max([kib for ts, kib in samples if t0 <= ts <= t] + [ev["RssAnon"]])
            r.seconds[ev["phase"]] = ev["seconds"]
            r.anon[ev["phase"]] = max(0, peak - st["RssAnon"]) * 1024
            r.rss[ev["phase"]] = max(0, ev["VmHWM"] - st["VmRSS"]) * 1024
        elif ev["event"] == "done":
            r.disk_bytes = ev["disk_bytes"]
    return r


def run_all(datasets: list[str], cases: list[str], runs: int, quick: bool, workdir: str,
            timeout: float) -> dict[str, dict[str, list[Result]]]:
    """Interleaved runs; returns ``results[dataset][case] = [Result per run]``."""
    results: dict[str, dict[str, list[Result]]] = {d: {c: [] for c in cases} for d in datasets}
    shuffle = random.Random(0).shuffle
    for run in range(runs):
        for dataset in datasets:
            order = list(cases)
            shuffle(order)  # a new order every round: no case always follows the same one
            for case in order:
                t0 = time.monotonic()
                r = run_worker(case, dataset, quick, workdir, timeout)
                results[dataset][case].append(r)
                figures = "  ".join(f"{p} {s:.3f}s" for p, s in r.seconds.items())
                print(f"[run {run + 1}/{runs}] {dataset:9s} {case:16s} {figures}"
                      f"  (worker {time.monotonic() - t0:.0f}s, load {os.getloadavg()[0]:.1f})",
                      flush=True)
    return results


def _median(rs: list[Result], phase: str) -> float:
    return statistics.median(r.seconds[phase] for r in rs)


def _ratio_median(rs: list[Result], base: list[Result], phase: str) -> float | None:
    """Median over runs of (this run's time / the limit's time in the same round)."""
    pairs = [a.seconds[phase] / b.seconds[phase] for a, b in zip(rs, base) if b.seconds[phase] > 0]
    return statistics.median(pairs) if pairs else None


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}" if n >= 2**20 else f"{n / 2**20:.1f}"


def format_table(dataset: str, per_case: dict[str, list[Result]]) -> str:
    """A markdown table for one data set."""
    any_r = next(rs[0] for rs in per_case.values() if rs)
    runs = max(len(rs) for rs in per_case.values())
    limit = per_case.get("limit")
    small = any_r.tensors >= 10_000
    head = (f"**{dataset}**: {any_r.tensors:,} tensors, {any_r.nbytes / 2**30:.2f} GiB, "
            f"medians of {runs} runs\n\n"
            "| case | save s | x limit | restore s | x limit | save GB/s | restore GB/s | "
            "peak extra anon, save / restore (MiB) | peak extra RSS, save / restore (MiB) |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for case, rs in per_case.items():
        if not rs:
            continue
        label = SMALL_LIMIT_LABEL if case == "limit" and small else LABELS[case]
        cells = [label]
        for phase in ("save", "restore"):
            ratio = _ratio_median(rs, limit, phase) if limit else None
            cells += [f"{_median(rs, phase):.3f}", f"{ratio:.2f}" if ratio is not None else "-"]
        cells += [f"{rs[0].nbytes / _median(rs, p) / 1e9:.2f}" for p in ("save", "restore")]
        cells.append(" / ".join(_mib(max(r.anon[p] for r in rs)) for p in ("save", "restore")))
        cells.append(" / ".join(_mib(max(r.rss[p] for r in rs)) for p in ("save", "restore")))
        rows.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def _check(lines: list[str], what: str, value: float | None, ok: bool | None, shown: str) -> None:
    verdict = "n/a" if value is None or ok is None else ("holds" if ok else "**fails**")
    lines.append(f"| {what} | {shown if value is not None else '-'} | {verdict} |")


def format_acceptance(results: dict[str, dict[str, list[Result]]]) -> str:
    """The speed and memory targets, from the medians of per-round ratios of this run."""
    lines = ["| criterion | measured | verdict |", "|---|---|---|"]

    def ratio(ds: str, case: str, base: str, phase: str) -> float | None:
        per = results.get(ds, {})
        if not per.get(case) or not per.get(base):
            return None
        return _ratio_median(per[case], per[base], phase)

    for phase in ("save", "restore"):
        r = ratio("model3g", "torchckpt", "limit", phase)
        _check(lines, f"3 GiB {phase} <= 1.25x limit", r, r is not None and r <= 1.25,
               f"{r:.2f}x" if r else "")
    for peer, need in (("dcp", 5), ("tensorflow", 30)):
        r = ratio("model3g", peer, "torchckpt", "restore")
        _check(lines, f"3 GiB restore >= {need}x faster than {peer}", r,
               r is not None and r >= need, f"{r:.1f}x" if r else "")
    for phase in ("save", "restore"):
        r = ratio("small50k", "safetensors", "torchckpt", phase)
        _check(lines, f"50,000 tensors {phase} >= 4x faster than safetensors", r,
               r is not None and r >= 4, f"{r:.1f}x" if r else "")
    rs = results.get("model3g", {}).get("torchckpt")
    for phase in ("save", "restore"):
        peak = max(r.anon[phase] for r in rs) if rs else None
        _check(lines, f"3 GiB {phase}, peak extra anon < 64 MiB", peak,
               peak is not None and peak < 64 * 2**20, f"{_mib(peak)} MiB" if rs else "")
    for ds in ("small50k", "adam50k"):
        for phase in ("save", "restore"):
            r = ratio(ds, "safetensors", "checkpoint", phase)
            _check(lines, f"{ds}: Checkpoint {phase} >= 4x faster than safetensors", r,
                   r is not None and r >= 4, f"{r:.1f}x" if r else "")
    for phase in ("save", "restore"):
        r = ratio("model3g", "checkpoint", "limit", phase)
        _check(lines, f"3 GiB Checkpoint {phase} <= 1.25x limit", r,
               r is not None and r <= 1.25, f"{r:.2f}x" if r else "")
    for ds in ("model3g", "small50k", "adam50k", "gib150"):
        for phase in ("save", "restore"):
            r = ratio(ds, "checkpoint", "torchckpt", phase)
            if r is not None:
                _check(lines, f"{ds}: Checkpoint {phase} <= 1.3x format layer", r, r <= 1.3,
                       f"{r:.2f}x")
            r = ratio(ds, "state-dict", "torchckpt", phase)
            if r is not None:
                _check(lines, f"state dicts: {ds} {phase} <= 1.3x format layer", r, r <= 1.3,
                       f"{r:.2f}x")
    return "\n".join(lines) + "\n"


def render(datasets: list[str], results: dict[str, dict[str, list[Result]]]) -> str:
    return ("\n".join(format_table(d, results[d]) for d in datasets)
            + "\nAcceptance (ratios are medians over rounds of per-round ratios):\n\n"
            + format_acceptance(results))


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def write_readme(report: str) -> None:
    path = os.path.join(HERE, "README.md")
    text = open(path).read() if os.path.exists(path) else f"{README_BEGIN}\n{README_END}\n"
    if README_BEGIN not in text:
        text += f"\n{README_BEGIN}\n{README_END}\n"
    a, rest = text.split(README_BEGIN, 1)
    _, b = rest.split(README_END, 1)
    with open(path, "w") as f:
        f.write(f"{a}{README_BEGIN}\n{report}{README_END}{b}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data sets, 2 runs")
    parser.add_argument("--runs", type=int, help="interleaved runs per case (default 5; quick 2)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--workdir", default=os.path.join(HERE, "_work"),
                        help="where files are written (default benchmarks/_work, gitignored)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per worker")
    parser.add_argument("--readme", action="store_true", help="write the tables to README.md")
    parser.add_argument("--json", help="also dump every run's figures to this file")
    parser.add_argument("--from-json", help="render the report of an earlier --json dump "
                        "instead of running (with --readme: rewrite the README from it)")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            dump = json.load(f)
        results = {d: {c: [Result(**r) for r in rs] for c, rs in per.items()}
                   for d, per in dump.get("results", dump).items()}
        report = dump.get("header", "") + render(list(results), results)
        print(report)
        if args.readme:
            write_readme(report)
        return
    datasets = [d for d in args.datasets.split(",") if d]
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in ALL_CASES:
            parser.error(f"unknown case {c!r}; choose from {', '.join(ALL_CASES)}")
    if "checkpoint" in cases:
        try:
            import torchckpt

            torchckpt.Checkpoint  # noqa: B018
        except (ImportError, AttributeError):
            print("torchckpt.Checkpoint is not available: skipping the checkpoint case")
            cases.remove("checkpoint")
    runs = args.runs or (2 if args.quick else 5)
    os.makedirs(args.workdir, exist_ok=True)
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = datetime.datetime.now()
    load0 = os.getloadavg()
    results = run_all(datasets, cases, runs, args.quick, args.workdir, args.timeout)
    load1 = os.getloadavg()
    header = (f"Run {started:%Y-%m-%d %H:%M}, `{command.strip()}`, {runs} interleaved runs"
              f"{' (quick data sets)' if args.quick else ''}.\n"
              f"Machine: {machine()}. Load average {load0[0]:.1f} at the start, "
              f"{load1[0]:.1f} at the end.\n\n")
    report = header + render(datasets, results)
    print("\n" + report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "results": {
                d: {c: [r.__dict__ for r in rs] for c, rs in per.items()}
                for d, per in results.items()}}, f, indent=1)
    if args.readme:
        write_readme(report)


if __name__ == "__main__":
    main()
