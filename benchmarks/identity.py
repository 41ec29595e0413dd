"""Byte-identity check for the format layer: rewrite every TF fixture and compare files.

Run after any change to ``torchckpt/format`` that is meant to be speed-only::

    python benchmarks/identity.py [FIXTURES_DIR]

For each bundle under the fixtures folder (default ``../shared/fixtures/tf``), every
entry is read with :class:`BundleReader` and written again with :class:`BundleWriter`
in the data file's own order (shard, offset), then the new ``.index`` and ``.data``
files must equal TensorFlow's byte for byte.
"""

from __future__ import annotations

import filecmp
import glob
import os
import sys
import tempfile

from torchckpt.format import BundleReader, BundleWriter
from torchckpt.format.dtypes import DataType

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "fixtures", "tf"))


def rewrite(prefix: str, out_prefix: str) -> None:
    """Copy the bundle at ``prefix`` to ``out_prefix`` through the writer."""
    with BundleReader(prefix) as r:
        w = BundleWriter(out_prefix, num_shards=r.header.num_shards, sync=False)
        entries = {k: r.entry(k) for k in r.keys()}
        full = {k: e for k, e in entries.items() if e.slices}
        parts = sorted((e.shard_id, e.offset, k) for k, e in entries.items() if not e.slices)
        for shard, _, k in parts:
            e = entries[k]
            if e.dtype == DataType.DT_STRING:
                w.add_strings(k, list(r.read_array(k).reshape(-1)), e.shape, shard=shard)
            else:
                w.add(k, r.read_raw(k), e.dtype, e.shape, shard=shard)
        for k, e in full.items():
            w.add_entry(k, e)
        w.finish()


def check(root: str) -> int:
    """Return the number of mismatching files (0 = all byte-identical)."""
    bad = 0
    prefixes = sorted(p[:-len(".index")] for p in glob.glob(os.path.join(root, "*", "*.index")))
    with tempfile.TemporaryDirectory() as tmp:
        for prefix in prefixes:
            out = os.path.join(tmp, os.path.relpath(prefix, root))
            rewrite(prefix, out)
            for src in sorted(glob.glob(glob.escape(prefix) + ".index")
                              + glob.glob(glob.escape(prefix) + ".data-*")):
                dst = out + src[len(prefix):]
                same = filecmp.cmp(src, dst, shallow=False)
                bad += not same
                print(f"{'ok  ' if same else 'DIFF'} {os.path.relpath(src, root)}")
    return bad


if __name__ == "__main__":
    n = check(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
    print("byte-identical" if n == 0 else f"{n} file(s) differ")
    sys.exit(1 if n else 0)
