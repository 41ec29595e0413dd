"""save_state_dict / load_state_dict: nested structures round-trip with their types, no pickle."""

from __future__ import annotations

import collections
import math
import os

import pytest
import torch

import torchckpt
from torchckpt.errors import CorruptCheckpointError, UntrackableError
from torchckpt.format import BundleReader
from torchckpt.state_dict import STRUCTURE_KEY

WEIRD_KEYS = ["a.b", "a/b", "q'uote", 'd"q', "{brace}", "ModelCheckpoint{'monitor': None}", ""]


def sample() -> dict:
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters(), betas=(0.8, 0.9))
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {
        "state_dict": collections.OrderedDict(lin.state_dict()),
        "optimizer_states": [opt.state_dict()],  # int keys, tuples, None, bools
        "nested": {k: {1: [k, (None, True, False)]} for k in WEIRD_KEYS},
        "floats": [0.1, -0.0, math.inf, -math.inf, 1e-310, 2.0**-1074, 1 / 3],
        "ints": [0, -1, 2**63, -(2**100)],
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "ranks": [torch.arange(24, dtype=torch.int16).reshape(2, 3, 4), torch.empty(0, 5),
                  torch.ones(1, 1, 1, 1, 1, dtype=torch.bfloat16), torch.tensor([True, False])],
        "complex": torch.tensor([1 + 2j], dtype=torch.complex64),
        "parameter": torch.nn.Parameter(torch.ones(3), requires_grad=False),
        7: "int key at the top",
        "tuple": (1, (2, [3])),
        "empty": [{}, [], (), collections.OrderedDict()],
    }


def assert_same(a, b, where="obj") -> None:
    assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.view(-1).view(torch.uint8) if a.numel() else a,
                           b.view(-1).view(torch.uint8) if b.numel() else b), where
        assert a.requires_grad == b.requires_grad, where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a.hex() == b.hex(), where
    else:
        assert a == b, where


def test_round_trip_types_and_values(tmp_path) -> None:
    obj = sample()
    assert torchckpt.save_state_dict(obj, tmp_path / "sd") == str(tmp_path / "sd")
    assert_same(obj, torchckpt.load_state_dict(tmp_path / "sd"))


def test_nan_round_trips(tmp_path) -> None:
    torchckpt.save_state_dict({"x": math.nan}, tmp_path / "sd")
    assert math.isnan(torchckpt.load_state_dict(tmp_path / "sd")["x"])


def test_mmap_load_shares_the_file_and_is_copy_on_write(tmp_path) -> None:
    obj = {"w": torch.arange(1000, dtype=torch.float32), "b": torch.arange(3, dtype=torch.int8)}
    torchckpt.save_state_dict(obj, tmp_path / "sd")
    out = torchckpt.load_state_dict(tmp_path / "sd", mmap=True)
    assert_same(obj, out)
    out["w"][0] = 42.0  # private mapping: the file is unchanged
    assert torchckpt.load_state_dict(tmp_path / "sd")["w"][0].item() == 0.0


def test_map_location_meta_is_refused_for_mmap(tmp_path) -> None:
    torchckpt.save_state_dict({"w": torch.ones(2)}, tmp_path / "sd")
    with pytest.raises(ValueError, match="mmap"):
        torchckpt.load_state_dict(tmp_path / "sd", mmap=True, map_location="meta")


def test_shared_tensor_stored_once_and_shared_after_load(tmp_path) -> None:
    t = torch.ones(4)
    torchckpt.save_state_dict({"a": t, "b": [t]}, tmp_path / "sd")
    with BundleReader(str(tmp_path / "sd")) as reader:
        assert len([k for k in reader.keys() if k != STRUCTURE_KEY.encode()]) == 1
    out = torchckpt.load_state_dict(tmp_path / "sd")
    assert out["a"] is out["b"][0]


def test_int_and_str_keys_with_the_same_text_stay_apart(tmp_path) -> None:
    obj = {0: torch.zeros(1), "0": torch.ones(1)}
    torchckpt.save_state_dict(obj, tmp_path / "sd")
    assert_same(obj, torchckpt.load_state_dict(tmp_path / "sd"))


def test_unsupported_value_names_its_place(tmp_path) -> None:
    with pytest.raises(UntrackableError, match=r"obj\['hyper_parameters'\]\['net'\]"):
        torchckpt.save_state_dict({"hyper_parameters": {"net": object()}}, tmp_path / "sd")
    with pytest.raises(UntrackableError, match=r"obj\['x'\]: key \(1, 2\)"):
        torchckpt.save_state_dict({"x": {(1, 2): 1}}, tmp_path / "sd")
    assert not os.path.exists(tmp_path / "sd.index")


def test_files_are_plain_tf_bundles_without_pickle(tmp_path) -> None:
    torchckpt.save_state_dict(sample(), tmp_path / "sd")
    for name in os.listdir(tmp_path):
        data = (tmp_path / name).read_bytes()
        assert b"\x80\x02" not in data[:2] and b"torch._utils" not in data
    names = dict(torchckpt.list_variables(str(tmp_path / "sd")))
    assert names["state_dict/weight/.ATTRIBUTES/VARIABLE_VALUE"] == [2, 3]


def test_a_checkpoint_without_structure_is_a_clear_error(tmp_path) -> None:
    ckpt = torchckpt.Checkpoint(w=torch.ones(2))
    path = ckpt.write(str(tmp_path / "ck"))
    with pytest.raises(CorruptCheckpointError, match="not written by save_state_dict"):
        torchckpt.load_state_dict(path)


def test_forged_structure_is_a_corrupt_checkpoint(tmp_path) -> None:
    from torchckpt.format import BundleWriter
    for text in [b"{", b'{"format":"torchckpt-nested","version":1,"root":{"x":1}}',
                 b'{"format":"torchckpt-nested","version":1,"root":' + b"[" * 5000 + b"]" * 5000
                 + b"}", b'{"format":"torchckpt-nested","version":1,"root":{"tensor":"nope"}}']:
        w = BundleWriter(str(tmp_path / "f"))
        w.add_strings(STRUCTURE_KEY, [text], ())
        w.finish()
        with pytest.raises(torchckpt.TorchckptError):
            torchckpt.load_state_dict(tmp_path / "f")


def test_checksum_is_verified(tmp_path) -> None:
    torchckpt.save_state_dict({"w": torch.arange(64, dtype=torch.float32)}, tmp_path / "sd")
    data = tmp_path / "sd.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(torchckpt.ChecksumMismatchError, match="VARIABLE_VALUE"):
        torchckpt.load_state_dict(tmp_path / "sd")


@pytest.mark.tf
def test_tensorflow_reads_the_tensors(tmp_path, tf) -> None:
    obj = sample()
    torchckpt.save_state_dict(obj, tmp_path / "sd")
    reader = tf.train.load_checkpoint(str(tmp_path / "sd"))
    w = reader.get_tensor("state_dict/weight/.ATTRIBUTES/VARIABLE_VALUE")
    assert (w == obj["state_dict"]["weight"].numpy()).all()
