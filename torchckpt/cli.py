"""The ``torchckpt`` command line (also ``python -m torchckpt``).

Commands, each taking a checkpoint prefix, a directory (its latest checkpoint;
``verify`` checks every checkpoint its state file lists) or a bundle file name:

* ``inspect PATH [--tensor NAME] [--all]``: keys, dtypes and shapes, like TF's
  ``inspect_checkpoint``; ``--tensor`` prints one value, ``--all`` every value.
* ``graph PATH``: the object graph as a tree, with optimizer slot links.
* ``verify PATH``: read every entry and verify every checksum; exit 1 on damage.
* ``convert PATH --model MODULE:FACTORY --to OUT.safetensors [--assignment-map
  FILE.json] [--flatten-order ...] [--partial] [--report]``: build the torch model
  with the user's factory, fill it with :func:`torchckpt.convert.load_tf_weights`
  and write its ``state_dict`` (torch names, layouts converted).
  ``convert PATH --raw --to OUT.safetensors``: the checkpoint's tensors under
  their keys, in TF layouts (an assignment map renames them, names only).
* ``diff A B``: keys, dtypes, shapes and values that differ; exit 1 if any.

Exit status: 0 success, 1 damage or differences found, 2 usage or read errors.
Long work shows a progress bar on stderr when it is a terminal (``--progress``
forces it); tqdm draws it when installed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from bisect import bisect_left
from typing import IO, Iterator, Sequence

import numpy as np

from .errors import TorchckptError
from .format.bundle_reader import BundleReader, numel
from .format.dtypes import FIXED_WIDTH, dtype_name, enum_name, has_array_form
from .format.state_file import read_state
from .format.storage import is_remote, open_bundle
from .graph.keys import OBJECT_ATTRIBUTES_NAME, OBJECT_GRAPH_PROTO_KEY, VARIABLE_VALUE_KEY
from .graph.object_graph import FirstPaths, ObjectGraph
from .reader import load_checkpoint

_ATTRIBUTE_SUFFIX = f"/{OBJECT_ATTRIBUTES_NAME}/{VARIABLE_VALUE_KEY}".encode()


def resolve_path(path: str) -> str:
    """The prefix a prefix, directory or bundle file name stands for (as the reader sees it)."""
    with load_checkpoint(path) as reader:
        return reader.prefix


class Progress:
    """A minimal stderr progress bar (tqdm's when available); silent when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool, stream: IO[str] | None = None) -> None:
        self.total, self.desc, self.done = max(total, 1), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._last = 0.0
        self._tqdm = None
        if enabled:
            try:
                from tqdm import tqdm  # optional; never a dependency
                self._tqdm = tqdm(total=total, desc=desc, file=self.stream, unit="B",
                                  unit_scale=True, leave=False)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.done += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.enabled and (time.monotonic() - self._last > 0.1 or self.done >= self.total):
            self._last = time.monotonic()
            filled = int(30 * min(self.done, self.total) / self.total)
            self.stream.write(f"\r{self.desc} [{'#' * filled}{'.' * (30 - filled)}] "
                              f"{100 * min(self.done, self.total) // self.total:3d}%")
            self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _listed(reader: BundleReader) -> list[bytes]:
    """Keys as TF lists them: slice parts of partitioned tensors hidden, sorted."""
    return sorted(reader.listed_keys())


def _show(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


def _describe(reader: BundleReader, key: bytes) -> str:
    e = reader.entry(key)
    return f"{_show(key)} ({enum_name(e.dtype)}) [{','.join(str(d) for d in e.shape)}]"


def _opaque(reader: BundleReader, key: bytes) -> str:
    """What ``inspect`` prints for a value without array form (a DT_VARIANT iterator state)."""
    e = reader.entry(key)
    return (f"<{dtype_name(e.dtype)} value, {e.size} bytes: torch has no type for it; "
            "not decoded>")


def _printable(reader: BundleReader, key: bytes) -> np.ndarray:
    """The value for printing: bfloat16 and float8 bit patterns shown as numbers."""
    e = reader.entry(key)
    array = reader.read_array(key)
    info = FIXED_WIDTH.get(e.dtype)  # type: ignore[call-overload]
    if info is None or info.exact:
        return array
    from .adapters.tensors import array_to_tensor
    tensor = array_to_tensor(array, e.dtype)
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def cmd_inspect(args: argparse.Namespace, out: IO[str]) -> int:
    with open_bundle(resolve_path(args.path)) as reader:
        keys = _listed(reader)
        if args.tensor is not None:
            key = args.tensor.removesuffix(":0").encode("utf-8")
            if key not in reader and key + _ATTRIBUTE_SUFFIX in reader:  # object name given
                key += _ATTRIBUTE_SUFFIX
            if key not in reader:
                names = {_show(k.removesuffix(_ATTRIBUTE_SUFFIX)): _show(k) for k in keys}
                close = [names[c] for c in difflib.get_close_matches(args.tensor, names, 3)]
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                print(f"torchckpt: no tensor {args.tensor!r} in '{reader.prefix}'{hint}",
                      file=sys.stderr)
                return 2
            keys = [key]
        if args.tensor is None and not args.all:
            for key in keys:
                print(_describe(reader, key), file=out)
        else:
            with np.printoptions(threshold=sys.maxsize if args.all else 1000):
                for key in keys:
                    print(f"tensor: {_describe(reader, key)}", file=out)
                    decodable = has_array_form(reader.entry(key).dtype)
                    print(_printable(reader, key) if decodable else _opaque(reader, key), file=out)
        total = sum(numel(reader.entry(k).shape) for k in _listed(reader))
        print(f"# Total number of params: {total}", file=out)
    return 0


def cmd_graph(args: argparse.Namespace, out: IO[str]) -> int:
    with open_bundle(resolve_path(args.path)) as reader:
        if OBJECT_GRAPH_PROTO_KEY not in reader:
            print(f"'{reader.prefix}' has no object graph: it is a name-based (TF1 Saver) "
                  "checkpoint; `torchckpt inspect` lists its keys", file=out)
            return 0
        graph = ObjectGraph.from_bytes(reader.read_array(OBJECT_GRAPH_PROTO_KEY).item(),
                                       path=reader.prefix)
        for line in render_graph(graph, reader):
            print(line, file=out)
    return 0


# The tree is indented at most this many levels; deeper lines name their depth
# instead. Real object graphs are a few levels deep, and indenting a forged chain
# thousands deep would make the output (and the prefix strings) quadratic in it.
MAX_TREE_INDENT = 32


def render_graph(graph: ObjectGraph, reader: BundleReader) -> Iterator[str]:
    """Tree lines: each node under its first breadth-first path, other paths as links.

    Iterative (a file decides the depth, so recursion could overflow the stack);
    each node is expanded once, so output is linear in the graph's nodes and edges.
    """
    paths = graph.paths()
    saved = _SavedKeys(reader)
    yield f"(root) (node 0){_graph_label(graph, saved, 0)}"
    expanded = {0}
    stack = [(0, iter(_graph_items(graph, paths, 0)), "", 1)]
    while stack:
        node_id, items, prefix, depth = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        name, child, kind, last = item
        branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
        marker = f"[depth {depth}] " if depth > MAX_TREE_INDENT else ""
        if kind != "slot" and (paths.parent(child) != (node_id, name) or child in expanded):
            yield f"{prefix}{marker}{branch}{name} -> {paths.describe(child)} (node {child})"
            continue
        text = _graph_label(graph, saved, child).replace("\n", "\n" + prefix + indent)
        yield f"{prefix}{marker}{branch}{name} (node {child}){text}"
        if kind != "slot":
            expanded.add(child)
            inner = prefix + indent if depth < MAX_TREE_INDENT else prefix
            stack.append((child, iter(_graph_items(graph, paths, child)), inner, depth + 1))


def _graph_items(graph: ObjectGraph, paths: FirstPaths, node_id: int
                 ) -> list[tuple[str, int, str, bool]]:
    """``(name, node, kind, is last)`` of a node's children, then its slot variables."""
    node = graph.nodes[node_id]
    items: list[tuple[str, int, str]] = [(c.local_name, c.node_id, "") for c in node.children]
    for s in node.slot_variables:
        var = s.original_variable_node_id
        owner = paths.describe(var) if var in paths else "?"
        items.append((f"slot '{s.slot_name}' of {owner}", s.slot_variable_node_id, "slot"))
    return [(name, child, kind, i == len(items) - 1) for i, (name, child, kind) in enumerate(items)]


class _SavedKeys:
    """Where an attribute's value is stored. TF saves some attributes under a longer key
    than the graph names (a ``tf.data`` iterator's ``.ATTRIBUTES/ITERATOR`` is stored as
    ``.ATTRIBUTES/ITERATOR_STATE``); the bundle's keys are sorted once to find them."""

    def __init__(self, reader: BundleReader) -> None:
        self.reader = reader
        self._sorted: list[bytes] | None = None

    def of(self, checkpoint_key: str) -> bytes | None:
        key = checkpoint_key.encode()
        if key in self.reader:
            return key
        if self._sorted is None:
            self._sorted = sorted(self.reader.keys())
        i = bisect_left(self._sorted, key)
        found = self._sorted[i:i + 2]
        longer = [k for k in found if k.startswith(key)]
        return longer[0] if len(longer) == 1 else None


def _graph_label(graph: ObjectGraph, saved: _SavedKeys, node_id: int) -> str:
    """A node's value: ``= dtype[shape]  key`` for one attribute, else each attribute."""
    attrs = graph.nodes[node_id].attributes
    key = saved.of(attrs[0].checkpoint_key) if len(attrs) == 1 else None
    if key is not None:
        e = saved.reader.entry(key)
        return f" = {dtype_name(e.dtype)}{list(e.shape)}  {_show(key)}"
    return "".join(f"\n    .ATTRIBUTES/{a.name}: {a.checkpoint_key}" for a in attrs)


def _prefixes(path: str) -> list[str]:
    """Every checkpoint of a directory's state file, else the one checkpoint at ``path``."""
    if is_remote(path) or os.path.isdir(path):  # a directory (a URL may be one)
        state = read_state(path)
        if state is not None:
            listed = list(dict.fromkeys([*state.all_model_checkpoint_paths,
                                         state.model_checkpoint_path]))
            return listed
    return [path]


def verify_prefix(prefix: str, progress: bool) -> list[str]:
    """Read every entry of one checkpoint with checksums on; the problems found.

    Entries of dtypes without array form (DT_VARIANT iterator state) have their
    bytes checksummed; the parts of a sliced tensor are entries of their own.
    """
    problems: list[str] = []
    with open_bundle(prefix, verify_checksums=True) as reader:
        keys = reader.keys()
        sizes = {}
        for key in keys:
            try:
                sizes[key] = reader.entry(key).size
            except TorchckptError as exc:
                problems.append(str(exc))
        bar = Progress(sum(sizes.values()), f"verify {os.path.basename(prefix)}", progress)
        for key in sizes:
            try:
                e = reader.entry(key)
                if not has_array_form(e.dtype):
                    if not e.slices:
                        reader.read_raw(key)
                    bar.update(sizes[key])
                    continue
                value = reader.read_array(key)
                if key == OBJECT_GRAPH_PROTO_KEY.encode():
                    ObjectGraph.from_bytes(value.item(), path=prefix)
            except TorchckptError as exc:
                problems.append(str(exc))
            bar.update(sizes[key])
        bar.close()
    return problems


def cmd_verify(args: argparse.Namespace, out: IO[str]) -> int:
    failed = 0
    for prefix in _prefixes(args.path):
        try:
            resolve_path(prefix)  # the index parses and every shard it names exists
            problems = verify_prefix(prefix, args.progress)
        except TorchckptError as exc:
            problems = [str(exc)]
        if problems:
            failed += 1
            print(f"FAILED {prefix}: {len(problems)} problem(s)", file=out)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
        else:
            with open_bundle(prefix) as reader:
                n, shards = len(reader.keys()), reader.header.num_shards
            print(f"OK {prefix}: {n} entries in {shards} shard(s), every checksum verified",
                  file=out)
    return 1 if failed else 0


def _load_map(path: str) -> list[tuple[str, str | None]]:
    """An assignment map from JSON: ``{pattern: target}`` or ``[[pattern, target], ...]``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise TorchckptError(f"cannot read assignment map '{path}': {exc}") from exc
    if not isinstance(data, (dict, list)):
        raise TorchckptError(f"assignment map '{path}' holds a JSON {type(data).__name__}, not "
                             "an object or a list of pairs")
    return list(data.items()) if isinstance(data, dict) else data  # checked when parsed


def cmd_convert(args: argparse.Namespace, out: IO[str]) -> int:
    if (args.model is None) == (not args.raw):
        print("torchckpt convert: pass --model MODULE:FACTORY (fill that torch model and write "
              "its state_dict, layouts converted: what load_state_dict accepts) or --raw (the "
              "checkpoint's tensors under their TF keys and in TF layouts), not "
              f"{'both' if args.raw else 'neither'}", file=sys.stderr)
        return 2
    rules = _load_map(args.assignment_map) if args.assignment_map else None
    if args.raw:
        return _convert_raw(args, rules, out)
    return _convert_model(args, rules, out)


def _convert_model(args: argparse.Namespace, rules: list[tuple[str, str | None]] | None,
                   out: IO[str]) -> int:
    import warnings

    from .convert import load_tf_weights, save_state_dict
    from .convert.export import build_model
    from .convert.flatten import parse_flatten_order

    model = build_model(args.model)
    with warnings.catch_warnings():  # the report's warnings are printed below, once
        warnings.simplefilter("ignore", UserWarning)
        report = load_tf_weights(model, args.path, assignment_map=rules, strict=not args.partial,
                                 flatten_order=parse_flatten_order(args.flatten_order))
    meta = {"format": "pt", "source": os.path.basename(report.path), "producer": "torchckpt",
            "model": args.model}
    n = save_state_dict(model, args.to, meta)
    if args.report:
        print(report.format(), file=out)
    print(f"wrote {n} tensors (the state_dict of {args.model}, {len(report.matched)} values "
          f"converted from the checkpoint) to {args.to}", file=out)
    if not report.ok:
        print(f"torchckpt convert: --partial: left unmatched:\n{report.problems()}",
              file=sys.stderr)
    for text in report.warnings:
        print(f"torchckpt convert: warning: {text}", file=sys.stderr)
    return 0


def _convert_raw(args: argparse.Namespace, pairs: list[tuple[str, str | None]] | None,
                 out: IO[str]) -> int:
    from .convert.export import raw_tensors, save_tensors

    with load_checkpoint(args.path) as reader:
        bar = Progress(len(reader.get_variable_to_shape_map()), "convert", args.progress)
        dump = raw_tensors(reader, pairs, lambda: bar.update(1))
        bar.close()
    save_tensors(dump.tensors, args.to, {"format": "pt", "source": os.path.basename(dump.prefix),
                                         "producer": "torchckpt"})
    print(f"wrote {len(dump.tensors)} tensors to {args.to} under TF names, in TF layouts (--raw)",
          file=out)
    if dump.left_out:
        print(f"left out {len(dump.left_out)} (strings, complex, values torch has no type for, "
              f"or not in the assignment map): {', '.join(dump.left_out)}", file=sys.stderr)
    for text in dump.warnings:
        print(f"torchckpt convert: warning: {text}", file=sys.stderr)
    return 0


def cmd_diff(args: argparse.Namespace, out: IO[str]) -> int:
    with open_bundle(resolve_path(args.a)) as a, open_bundle(resolve_path(args.b)) as b:
        ka, kb = set(_listed(a)), set(_listed(b))
        lines = [f"only in A: {_describe(a, k)}" for k in sorted(ka - kb)]
        lines += [f"only in B: {_describe(b, k)}" for k in sorted(kb - ka)]
        common = sorted(ka & kb)
        bar = Progress(len(common), "diff", args.progress)
        same = 0
        for key in common:
            bar.update(1)
            line = _diff_one(a, b, key, args.rtol, args.atol)
            if line:
                lines.append(line)
            else:
                same += 1
        bar.close()
    for line in lines:
        print(line, file=out)
    print(f"{same} of {len(ka | kb)} keys identical", file=out)
    return 1 if lines else 0


def _diff_one(a: BundleReader, b: BundleReader, key: bytes, rtol: float, atol: float) -> str:
    ea, eb = a.entry(key), b.entry(key)
    if ea.dtype != eb.dtype or ea.shape != eb.shape:
        return (f"changed: {_show(key)}  A: {dtype_name(ea.dtype)}{list(ea.shape)}  "
                f"B: {dtype_name(eb.dtype)}{list(eb.shape)}")
    if not has_array_form(ea.dtype):  # opaque bytes (iterator state): equal or not
        if ea.slices or bytes(a.read_raw(key)) == bytes(b.read_raw(key)):
            return ""
        return f"changed value: {_show(key)} ({dtype_name(ea.dtype)} bytes differ)"
    va, vb = _printable(a, key), _printable(b, key)
    if va.dtype == object:  # strings
        differ = int(np.sum(va != vb))
        return f"changed value: {_show(key)} ({differ} of {va.size} strings differ)" if differ \
            else ""
    if a.read_array(key).tobytes() == b.read_array(key).tobytes():
        return ""
    if (rtol or atol) and np.allclose(va, vb, rtol=rtol, atol=atol, equal_nan=True):
        return ""
    fa, fb = va.astype(np.float64), vb.astype(np.float64)
    differ = int(np.sum(~((fa == fb) | (np.isnan(fa) & np.isnan(fb)))))
    with np.errstate(invalid="ignore"):
        worst = float(np.nanmax(np.abs(fa - fb))) if fa.size else 0.0
    return (f"changed value: {_show(key)} (max abs diff {worst:.6g}, {differ} of {va.size} "
            "elements differ)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchckpt", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="list keys, dtypes and shapes (or values)")
    p.add_argument("path")
    p.add_argument("--tensor", help="print this tensor's value")
    p.add_argument("--all", action="store_true", help="print every tensor's value")
    p = sub.add_parser("graph", help="print the object graph as a tree")
    p.add_argument("path")
    p = sub.add_parser("verify", help="read every entry and verify every checksum")
    p.add_argument("path")
    p = sub.add_parser("convert", help="convert into a torch model's state_dict (safetensors)")
    p.add_argument("path")
    p.add_argument("--to", required=True, help="output .safetensors file")
    p.add_argument("--model", metavar="MODULE:FACTORY",
                   help="torch model to fill, e.g. mypkg.models:make_net or models.py:Net "
                        "(called with no arguments); its state_dict is written")
    p.add_argument("--raw", action="store_true",
                   help="write the checkpoint's tensors under their TF keys, in TF layouts")
    p.add_argument("--assignment-map", help="JSON {pattern: name} or [[pattern, name], ...]")
    p.add_argument("--flatten-order", action="append", metavar="ORDER|LINEAR=ORDER",
                   help="channels_first (default: torch.flatten of NCHW) or channels_last; "
                        "LINEAR=ORDER per Linear module (repeatable)")
    p.add_argument("--partial", action="store_true",
                   help="write what matched instead of failing on unmatched names "
                        "(strict=False)")
    p.add_argument("--report", action="store_true", help="print the whole conversion report")
    p = sub.add_parser("diff", help="compare two checkpoints")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rtol", type=float, default=0.0)
    p.add_argument("--atol", type=float, default=0.0)
    for p in sub.choices.values():
        p.add_argument("--progress", action="store_true", default=sys.stderr.isatty(),
                       help="show a progress bar (default: when stderr is a terminal)")
    return parser


COMMANDS = {"inspect": cmd_inspect, "graph": cmd_graph, "verify": cmd_verify,
            "convert": cmd_convert, "diff": cmd_diff}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except (TorchckptError, OSError) as exc:
        print(f"torchckpt {args.command}: error: {exc}", file=sys.stderr)
        return 2
