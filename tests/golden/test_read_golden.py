"""Every tensor of every TF-written fixture reads back bit-exactly.

The expected values are what TensorFlow's own ``get_tensor`` returned when the
fixtures were made (tests/data/tf/README.md); no TensorFlow is needed here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pytest
import torch

import torchckpt
from golden_data import BY_ID, DATA, GOLDENS, OBJECT_GRAPH_KEY, Golden, expected_tensor, same_bits

TF_TO_TORCH_NAME = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
                    "float64": torch.float64, "int8": torch.int8, "int16": torch.int16,
                    "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8,
                    "uint16": torch.uint16, "uint32": torch.uint32, "uint64": torch.uint64,
                    "bool": torch.bool, "complex64": torch.complex64,
                    "complex128": torch.complex128, "string": "string"}


def test_manifest_hashes_match() -> None:
    """Runs first (file order): an accidental edit of a golden file fails loudly."""
    with open(os.path.join(DATA, "MANIFEST.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["files"], "empty manifest"
    for rel, digest in manifest["files"].items():
        with open(os.path.join(DATA, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, f"{rel} changed"
    on_disk = {os.path.relpath(os.path.join(dp, n), DATA)
               for dp, _, names in os.walk(DATA) for n in names}
    assert on_disk - {"MANIFEST.json"} == set(manifest["files"])


@pytest.mark.parametrize("g", GOLDENS, ids=lambda g: g.id)
def test_every_tensor_bit_exact(g: Golden) -> None:
    with torchckpt.load_checkpoint(g.prefix) as reader:
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
        has_graph = g.meta["checkpoint_kind"] == "object-based"
        assert set(shapes) == set(g.meta["keys"]) | ({OBJECT_GRAPH_KEY} if has_graph else set())
        for key in g.meta["keys"]:
            assert shapes[key] == g.meta["shapes"][key], key
            assert dtypes[key] == TF_TO_TORCH_NAME[g.meta["dtypes"][key]], key
            got, want = reader.get_tensor(key), expected_tensor(g, key)
            if isinstance(want, torch.Tensor):
                assert isinstance(got, torch.Tensor) and same_bits(got, want), key
            elif want.ndim == 0:
                assert got == want.item(), key  # a scalar string is plain bytes, as in TF
            else:
                assert isinstance(got, np.ndarray) and got.dtype == object, key
                assert got.shape == want.shape and got.tolist() == want.tolist(), key
        if has_graph:
            assert reader.get_tensor(OBJECT_GRAPH_KEY) == g.object_graph
            assert shapes[OBJECT_GRAPH_KEY] == [] and dtypes[OBJECT_GRAPH_KEY] == "string"


def test_special_values_survive() -> None:
    """NaN, infinities, -0.0, subnormals, bfloat16 and non-UTF-8 strings, spelled out."""
    g = BY_ID["dtype_zoo/ckpt-1"]
    with torchckpt.load_checkpoint(g.prefix) as reader:
        floats = [reader.get_tensor(k) for k in g.meta["keys"]
                  if g.meta["dtypes"][k] in ("float32", "float64", "float16", "bfloat16")]
        flat = [v for t in floats for v in t.double().reshape(-1).tolist()]
        assert any(math.isnan(v) for v in flat)
        assert any(math.isinf(v) for v in flat)
        assert any(v == 0.0 and math.copysign(1, v) < 0 for v in flat)
        brain = reader.get_tensor("box/brain/.ATTRIBUTES/VARIABLE_VALUE")
        assert brain.dtype == torch.bfloat16
        words = reader.get_tensor("box/words/.ATTRIBUTES/VARIABLE_VALUE")
        assert words.tolist() == [b"alpha", b"", "b\u00e9ta".encode(), b"\x01\x02\xff"]
        assert reader.get_tensor("box/title/.ATTRIBUTES/VARIABLE_VALUE") == b"fixture string"
        assert reader.get_tensor("box/none_2x0/.ATTRIBUTES/VARIABLE_VALUE").shape == (2, 0)
        assert reader.get_tensor("box/scalar_f/.ATTRIBUTES/VARIABLE_VALUE").shape == ()


def test_partitioned_variable_is_reassembled() -> None:
    g = BY_ID["partitioned/model.ckpt"]
    with torchckpt.load_checkpoint(g.prefix) as reader:
        table = reader.get_tensor("lookup/table")
        assert table.shape == (7, 5)
        assert same_bits(table, expected_tensor(g, "lookup/table"))
        # the shape map lists the full key only; debug_string lists the slice keys instead
        assert sorted(reader.get_variable_to_shape_map()) == ["lookup/scale", "lookup/table"]
        lines = reader.debug_string().splitlines()
        assert lines[-1] == b"lookup/scale (DT_FLOAT) [5]"
        assert [ln.startswith(b"\x00lookup/table") for ln in lines] == [True, True, False]
        # the two stored parts are the rows 0-3 and 4-6 of the whole
        slice_keys = [k for k in reader._bundle.keys() if k.startswith(b"\x00")]
        parts = [reader.get_tensor(k) for k in slice_keys]
        assert [tuple(p.shape) for p in parts] == [(4, 5), (3, 5)]
        assert same_bits(torch.cat(parts), table)
        assert reader.has_tensor(slice_keys[0]) and reader.has_tensor("lookup/table")


def test_checkpoint_manager_folder() -> None:
    folder = os.path.join(DATA, "ckpt_manager")
    assert torchckpt.latest_checkpoint(folder) == os.path.join(folder, "step-40")
    key = "state/weights/.ATTRIBUTES/VARIABLE_VALUE"
    newest = torchckpt.load_variable(folder, key)  # a directory means its latest checkpoint
    assert same_bits(newest, expected_tensor(BY_ID["ckpt_manager/step-40"], key))
    older = torchckpt.load_variable(os.path.join(folder, "step-30"), key)
    assert same_bits(older, expected_tensor(BY_ID["ckpt_manager/step-30"], key))
    assert not torch.equal(older, newest)
    assert torchckpt.load_variable(folder, "save_counter/.ATTRIBUTES/VARIABLE_VALUE").item() == 4


@pytest.mark.parametrize("folder", sorted({g.folder for g in GOLDENS}))
def test_latest_checkpoint_of_each_folder(folder: str) -> None:
    directory = os.path.join(DATA, folder)
    latest = BY_ID[[g.id for g in GOLDENS if g.folder == folder][-1]]
    assert torchckpt.latest_checkpoint(directory) == latest.prefix
    assert torchckpt.list_variables(directory) == torchckpt.list_variables(latest.prefix)


def test_list_variables_is_sorted_pairs() -> None:
    g = BY_ID["tf1_name_based/model.ckpt-2"]
    pairs = torchckpt.list_variables(g.prefix)
    assert pairs == sorted((k, g.meta["shapes"][k]) for k in g.meta["keys"])
    assert ("global_step", []) in pairs
