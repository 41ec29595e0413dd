"""A TF2 training checkpoint that tracks a ``tf.data`` iterator (a DT_VARIANT entry).

The checkpoint opens, lists, verifies and converts (model and optimizer state);
only reading the iterator's value is refused, with the key and dtype named.
"""

from __future__ import annotations

import convert_torch_models as T
import numpy as np
import pytest
import torch
from convert_helpers import rel_error

import torchckpt
from torchckpt.cli import main
from torchckpt.convert import load_tf_weights
from torchckpt.errors import UnsupportedFormatError

pytestmark = pytest.mark.tf

KEY = "train_iterator/.ATTRIBUTES/ITERATOR_STATE"


def test_iterator_state_is_listed_with_tf_dtype_name(tf_models) -> None:
    folder = tf_models / "iterator"
    assert KEY in dict(torchckpt.list_variables(folder))
    with torchckpt.load_checkpoint(folder) as reader:
        assert reader.get_variable_to_dtype_map()[KEY] == "variant"
        assert f"{KEY} (DT_VARIANT) [".encode() in reader.debug_string()
        with pytest.raises(UnsupportedFormatError) as info:
            reader.get_tensor(KEY)
    assert info.value.key == KEY.encode() and "DT_VARIANT" in str(info.value)


def test_cli_inspect_graph_verify_and_diff(tf_models, capsys) -> None:
    folder = str(tf_models / "iterator")
    assert main(["inspect", folder]) == 0
    assert f"{KEY} (DT_VARIANT) [" in capsys.readouterr().out
    assert main(["inspect", folder, "--tensor", KEY]) == 0
    assert "<variant value, " in capsys.readouterr().out
    assert main(["graph", folder]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "train_iterator (node" in x)
    assert "= variant[" in line and line.endswith(KEY)  # saved under a longer key than named
    assert main(["verify", folder]) == 0  # the variant payload's own checksum scheme
    assert capsys.readouterr().out.startswith("OK ")
    assert main(["diff", folder, folder]) == 0


def test_model_and_optimizer_convert_past_the_iterator(tf_models) -> None:
    folder = tf_models / "iterator"
    model = T.IteratorNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    report = load_tf_weights(model, folder, optimizer=opt)  # strict
    assert report.ok
    assert "torch has no type for it" in report.skipped[KEY]
    assert int(opt.state_dict()["state"][0]["step"]) == 1
    with np.load(folder / "ref.npz", allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    with torch.no_grad():
        assert rel_error(model(torch.from_numpy(x)), y) < 1e-5


def test_restore_carries_on_past_the_iterator(tf_models) -> None:
    status = torchckpt.Checkpoint(model=torch.nn.Linear(4, 5)).restore(tf_models / "iterator")
    report = status.report()
    assert "train_iterator" in report.unused_in_checkpoint + report.pending


def test_restore_with_a_live_object_at_the_iterator_reports_it_unmatched(tf_models) -> None:
    """A torch object bound where TF kept a tf.data iterator gets no value (the state is
    TF's opaque DT_VARIANT) and the restore goes on: the rest lands, the report says so."""
    loader_state = torchckpt.Checkpoint(position=0)
    ckpt = torchckpt.Checkpoint(model=torch.nn.Linear(4, 5), train_iterator=loader_state)
    report = ckpt.restore(tf_models / "iterator").report()
    assert any(p.startswith("train_iterator") for p in report.unused_in_checkpoint)
    assert any(p.startswith("train_iterator") for p in report.unmatched_live)
    assert loader_state.position == 0
