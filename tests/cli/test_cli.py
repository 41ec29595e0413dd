"""The ``torchckpt`` command line on every TF fixture and on torchckpt-written
checkpoints; ``verify`` catches a flipped byte; ``convert --raw`` writes safetensors that
``safetensors.torch.load_file`` reads (``convert --model``: tests/cli/test_cli_convert.py)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import torchckpt
from processes import run_isolated
from torchckpt.cli import main
from torchckpt.format import BundleWriter, DataType
from torchckpt.format.dtypes import DataType as DT

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "tf"
PREFIXES = sorted(p.with_name(p.name[:-len(".meta.json")]) for p in FIXTURES.glob("*/*.meta.json"))
IDS = [f"{p.parent.name}/{p.name}" for p in PREFIXES]


def meta(prefix: Path) -> dict:
    return json.loads(prefix.with_name(prefix.name + ".meta.json").read_text())


def expected(prefix: Path) -> dict[str, np.ndarray]:
    with np.load(prefix.with_name(prefix.name + ".expected.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("prefix", PREFIXES, ids=IDS)
def test_inspect_lists_every_key(capsys, prefix: Path) -> None:
    m = meta(prefix)
    code, out, _ = run(capsys, "inspect", prefix)
    assert code == 0
    lines = out.splitlines()
    for key in m["keys"]:
        dims = ",".join(str(d) for d in m["shapes"][key])
        assert f"{key} (DT_" in out and any(line.startswith(f"{key} (") and
                                            line.endswith(f"[{dims}]") for line in lines), key
    total = sum(int(np.prod(s)) for s in m["shapes"].values()) + (1 if m.get("has_object_graph")
                                                                  else 0)
    assert lines[-1] == f"# Total number of params: {total}"


@pytest.mark.parametrize("prefix", PREFIXES, ids=IDS)
def test_graph_shows_every_key(capsys, prefix: Path) -> None:
    m = meta(prefix)
    code, out, _ = run(capsys, "graph", prefix)
    assert code == 0
    if m["checkpoint_kind"] == "name-based":
        assert "has no object graph" in out
    else:
        assert out.startswith("(root) (node 0)")
        for key in m["keys"]:
            assert key in out, key


def test_graph_shows_slot_links_and_shared_nodes(capsys) -> None:
    _, out, _ = run(capsys, "graph", FIXTURES / "keras2_adam")
    assert "slot 'm' of net.layer_with_weights-0.kernel (node " in out
    assert "layer-1 -> net.layer_with_weights-0 (node " in out
    assert "optimizer -> opt (node 2)" in out


@pytest.mark.parametrize("prefix", PREFIXES, ids=IDS)
def test_verify_passes_on_every_fixture(capsys, prefix: Path) -> None:
    code, out, err = run(capsys, "verify", prefix)
    assert code == 0 and out.startswith(f"OK {prefix}") and not err


def test_verify_directory_checks_every_listed_checkpoint(capsys) -> None:
    code, out, _ = run(capsys, "verify", FIXTURES / "ckpt_manager")
    assert code == 0
    folder = FIXTURES / "ckpt_manager"
    assert [line.split(":")[0] for line in out.splitlines()] == [
        f"OK {folder / 'step-30'}", f"OK {folder / 'step-40'}"]


def _copy(case: str, tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / case, tmp_path / case)
    return tmp_path / case


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_detects_a_flipped_data_byte(capsys, tmp_path) -> None:
    folder = _copy("keras2_adam", tmp_path)
    m = meta(folder / "ckpt-1")
    # flip a byte in the middle of the kernel of the first layer
    from torchckpt.format import BundleReader
    key = "net/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    with BundleReader(str(folder / "ckpt-1")) as reader:
        entry = reader.entry(key)
    _flip(folder / "ckpt-1.data-00000-of-00001", entry.offset + entry.size // 2)
    code, out, err = run(capsys, "verify", folder)
    assert code == 1
    assert out.startswith(f"FAILED {folder / 'ckpt-1'}: 1 problem(s)")
    assert "checksum mismatch" in err and key in err
    assert len(m["keys"]) > 1  # the other entries were still read


def test_verify_detects_a_flipped_index_byte_and_a_missing_shard(capsys, tmp_path) -> None:
    folder = _copy("tf1_name_based", tmp_path)
    _flip(folder / "model.ckpt-2.index", 20)
    code, out, err = run(capsys, "verify", folder / "model.ckpt-2")
    assert code == 1 and "FAILED" in out and "corrupt checkpoint" in err
    folder = _copy("partitioned", tmp_path)
    (folder / "model.ckpt.data-00000-of-00001").unlink()
    code, out, err = run(capsys, "verify", folder / "model.ckpt")
    assert code == 1 and "data shard file is missing" in err


@pytest.mark.parametrize("prefix", PREFIXES, ids=IDS)
def test_convert_writes_safetensors(capsys, tmp_path, prefix: Path) -> None:
    out_file = tmp_path / "out.safetensors"
    code, out, _ = run(capsys, "convert", prefix, "--raw", "--to", out_file)
    assert code == 0 and out.startswith("wrote ")
    loaded = load_file(str(out_file))
    want = expected(prefix)
    m = meta(prefix)
    numeric = [k for k in m["keys"] if m["dtypes"][k] not in ("string", "complex64", "complex128")]
    assert sorted(loaded) == sorted(numeric)
    for key in numeric:
        value = loaded[key]
        if m["dtypes"][key] == "bfloat16":
            value = value.view(torch.int16).numpy().view(np.uint16)
        else:
            value = value.numpy()
        assert np.array_equal(value, want[key], equal_nan=True), key


def test_convert_with_an_assignment_map(capsys, tmp_path) -> None:
    amap = tmp_path / "map.json"
    amap.write_text(json.dumps([[".*/Momentum", None],  # first match wins: skips go first
                                ["classifier/fc_0/", "hidden"],
                                ["classifier/out/(weights|biases)", r"out.\1"]]))
    out_file = tmp_path / "out.safetensors"
    code, _, err = run(capsys, "convert", FIXTURES / "tf1_name_based", "--raw", "--to", out_file,
                       "--assignment-map", amap)
    assert code == 0
    loaded = load_file(str(out_file))
    assert sorted(loaded) == ["hidden.biases", "hidden.weights", "out.biases", "out.weights"]
    np.testing.assert_array_equal(loaded["out.weights"].numpy(),  # names only: layout as stored
                                  expected(FIXTURES / "tf1_name_based/model.ckpt-2")[
                                      "classifier/out/weights"])
    assert "left out 5" in err and "global_step" in err


def test_inspect_one_tensor_and_all(capsys) -> None:
    zoo = FIXTURES / "dtype_zoo"
    code, out, _ = run(capsys, "inspect", zoo, "--tensor", "box/brain")  # object name is enough
    assert code == 0
    assert out.startswith("tensor: box/brain/.ATTRIBUTES/VARIABLE_VALUE (DT_BFLOAT16) [2,2]")
    assert "-3.5" in out and "nan" in out
    code, out, _ = run(capsys, "inspect", zoo, "--tensor", "box/words/.ATTRIBUTES/VARIABLE_VALUE")
    assert "b'alpha'" in out
    code, out, _ = run(capsys, "inspect", FIXTURES / "partitioned", "--all")
    assert code == 0 and out.count("tensor: ") == 2  # the sliced table, reassembled, once
    code, _, err = run(capsys, "inspect", zoo, "--tensor", "box/int1")
    assert code == 2 and "did you mean" in err


def test_diff(capsys) -> None:
    manager = FIXTURES / "ckpt_manager"
    code, out, _ = run(capsys, "diff", manager / "step-30", manager / "step-30")
    assert code == 0 and out.strip() == "4 of 4 keys identical"
    code, out, _ = run(capsys, "diff", manager / "step-30", manager / "step-40")
    assert code == 1
    assert "changed value: state/weights/.ATTRIBUTES/VARIABLE_VALUE (max abs diff" in out
    code, out, _ = run(capsys, "diff", manager / "step-30", FIXTURES / "keras2_adam")
    assert code == 1 and "only in A: state/epoch" in out and "only in B: opt/iter" in out


def test_progress_bar_on_request(capsys, monkeypatch) -> None:
    code, _, err = run(capsys, "verify", FIXTURES / "keras2_adam", "--progress")
    assert code == 0 and "verify ckpt-1" in err  # tqdm's bar where tqdm is installed
    monkeypatch.setitem(sys.modules, "tqdm", None)  # without tqdm: the built-in bar
    code, _, err = run(capsys, "verify", FIXTURES / "keras2_adam", "--progress")
    assert code == 0 and "verify ckpt-1 [" in err and "100%" in err


def test_errors_exit_2(capsys, tmp_path) -> None:
    code, _, err = run(capsys, "inspect", tmp_path / "nothing")
    assert code == 2 and "torchckpt inspect: error: no checkpoint at" in err


def _torchckpt_written(tmp_path: Path) -> list[str]:
    """A checkpoint from torchckpt.Checkpoint and one from the BundleWriter."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    saved = torchckpt.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ours" / "ckpt"))
    writer = BundleWriter(str(tmp_path / "raw" / "raw"), sync=False)
    writer.add("w", np.arange(6, dtype=np.float32), DT.DT_FLOAT, (2, 3))
    writer.add("h", np.arange(4, dtype=np.uint16), DataType.DT_BFLOAT16, (4,))
    writer.add_strings("s", [b"x", b"yz"], (2,))
    writer.finish()
    return [saved, str(tmp_path / "raw" / "raw")]


def test_every_command_on_torchckpt_written_checkpoints(capsys, tmp_path) -> None:
    for prefix in _torchckpt_written(tmp_path):
        assert run(capsys, "inspect", prefix, "--all")[0] == 0
        assert run(capsys, "graph", prefix)[0] == 0
        assert run(capsys, "verify", prefix)[1].startswith("OK ")
        assert run(capsys, "convert", prefix, "--raw", "--to", tmp_path / "x.safetensors")[0] == 0
        assert load_file(str(tmp_path / "x.safetensors"))
        assert run(capsys, "diff", prefix, prefix)[0] == 0
    ours = _torchckpt_written(tmp_path / "again")[0]
    code, out, _ = run(capsys, "graph", ours)
    assert "slot 'exp_avg' of model.0.weight" in out


def test_python_dash_m(tmp_path) -> None:
    proc = run_isolated([sys.executable, "-m", "torchckpt", "verify",
                        str(FIXTURES / "keras2_adam")], timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("OK ")
