"""``torchckpt.Checkpoint`` has ``tf.train.Checkpoint``'s semantics.

save/write numbering and the state file, restore/read and ``save_counter``,
``restore(None)``, attributes assigned after construction, untrackable values
refused at construction, every kind of tracked value, tied weights, in-place
restores, and shape/dtype mismatches that name the key and both sides.
"""

from __future__ import annotations

import os

import pytest
import torch
from ckpt_helpers import Net
from torch import nn

from torchckpt import (
    Checkpoint,
    CheckpointNotFoundError,
    MismatchError,
    UnmatchedError,
    UnsupportedFormatError,
    UntrackableError,
    latest_checkpoint,
    list_variables,
)
from torchckpt.format import BundleReader


def keys_of(prefix: str) -> set[str]:
    with BundleReader(prefix) as r:
        return {k.decode() for k in r.keys()}


def test_save_numbers_prefixes_and_updates_state_file(tmp_path) -> None:
    ckpt = Checkpoint(w=torch.ones(2))
    first = ckpt.save(str(tmp_path / "ckpt"))
    second = ckpt.save(str(tmp_path / "ckpt"))
    assert (os.path.basename(first), os.path.basename(second)) == ("ckpt-1", "ckpt-2")
    assert ckpt.save_counter == 2
    assert latest_checkpoint(str(tmp_path)) == second
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" in keys_of(second)


def test_write_has_no_number_no_state_file_no_counter(tmp_path) -> None:
    ckpt = Checkpoint(w=torch.ones(2))
    assert ckpt.write(str(tmp_path / "plain")) == str(tmp_path / "plain")
    assert ckpt.save_counter == 0 and not (tmp_path / "checkpoint").exists()
    assert keys_of(str(tmp_path / "plain")) == {"_CHECKPOINTABLE_OBJECT_GRAPH",
                                                 "w/.ATTRIBUTES/VARIABLE_VALUE"}
    path = ckpt.save(str(tmp_path / "ckpt"))
    ckpt.write(str(tmp_path / "plain2"))
    assert ckpt.save_counter == 1 and latest_checkpoint(str(tmp_path)) == path


def test_restore_from_directory_takes_latest(tmp_path) -> None:
    w = torch.zeros(2)
    ckpt = Checkpoint(w=w)
    ckpt.save(str(tmp_path / "c"))
    w.fill_(7)
    ckpt.save(str(tmp_path / "c"))
    w2 = torch.zeros(2)
    Checkpoint(w=w2).restore(str(tmp_path)).assert_consumed()
    assert w2.tolist() == [7, 7]
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint"):
        Checkpoint(w=w2).restore(str(tmp_path / "missing"))


def test_restore_none_does_nothing_and_its_assertions_fail(tmp_path) -> None:
    w = torch.full((2,), 3.0)
    ckpt = Checkpoint(w=w)
    status = ckpt.restore(None)
    assert w.tolist() == [3.0, 3.0] and ckpt.save_counter == 0
    for check in (status.assert_consumed, status.assert_existing_objects_matched,
                  status.assert_nontrivial_match):
        with pytest.raises(UnmatchedError, match="save_path=None"):
            check()
    assert status.expect_partial() is status
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" not in keys_of(ckpt.write(str(tmp_path / "p")))


def test_read_does_not_create_save_counter(tmp_path) -> None:
    src = Checkpoint(w=torch.ones(2))
    src.save(str(tmp_path / "c"))
    saved = src.save(str(tmp_path / "c"))

    reader = Checkpoint(w=torch.zeros(2))
    status = reader.read(saved)
    status.assert_existing_objects_matched()
    with pytest.raises(UnmatchedError) as err:  # TF: read(path).assert_consumed() fails too
        status.assert_consumed()
    assert "save_counter" in str(err.value) and "save_counter" in err.value.pending
    assert reader.save_counter == 0
    # the value waits for the counter: the next save() continues the numbering
    assert os.path.basename(reader.save(str(tmp_path / "c"))) == "c-3"
    status.assert_consumed()

    restorer = Checkpoint(w=torch.zeros(2))
    restorer.restore(saved).assert_consumed()
    assert restorer.save_counter == 2
    written = src.write(str(tmp_path / "w"))  # with save_counter: src has one
    Checkpoint(w=torch.zeros(2)).restore(written).assert_consumed()


def test_write_then_restore_leaves_save_counter_unmatched_as_tf_does(tmp_path) -> None:
    """TF 2.21: restore() of a write()-written file creates save_counter, which nothing in
    the file matches, so assert_existing_objects_matched() fails; read() is the pair."""
    path = Checkpoint(w=torch.ones(2)).write(str(tmp_path / "w"))
    status = Checkpoint(w=torch.zeros(2)).restore(path)
    with pytest.raises(UnmatchedError) as err:
        status.assert_existing_objects_matched()
    assert err.value.unmatched_live == ["save_counter"]
    Checkpoint(w=torch.zeros(2)).read(path).assert_consumed()


def test_attributes_assigned_later_are_tracked(tmp_path) -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = Checkpoint(model=model)
    ckpt.scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    ckpt.extra = {"lr": 0.25, "steps": [1, 2], "name": "run-1", "flag": True}
    ckpt.scheduler.last_epoch = 5
    path = ckpt.save(str(tmp_path / "c"))
    assert {"scheduler/.ATTRIBUTES/py_state", "extra/lr/.ATTRIBUTES/VARIABLE_VALUE",
            "extra/steps/1/.ATTRIBUTES/VARIABLE_VALUE", "extra/name/.ATTRIBUTES/py_state",
            "extra/flag/.ATTRIBUTES/VARIABLE_VALUE"} <= keys_of(path)

    m2 = nn.Linear(2, 2)
    fresh = Checkpoint(model=m2)
    fresh.scheduler = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(m2.parameters(), lr=1),
                                                      step_size=3)
    fresh.extra = {"lr": 0.0, "steps": [0, 0], "name": "", "flag": False}
    fresh.restore(path).assert_consumed()
    assert fresh.extra == {"lr": 0.25, "steps": [1, 2], "name": "run-1", "flag": True}
    assert fresh.scheduler.last_epoch == 5 and torch.equal(m2.weight, model.weight)

    del fresh.extra
    assert not any(k.startswith("extra/") for k in keys_of(fresh.write(str(tmp_path / "w"))))


@pytest.mark.parametrize("value, names", [
    (object(), "builtins.object"),
    ({"a": {"b": [1, object()]}}, "a.b.1: cannot checkpoint a builtins.object"),
    ({"x": {1: torch.ones(1)}}, "x: dict key 1 is not a string"),
    (lambda: 0, "attribute .bad.: cannot checkpoint a builtins.function"),
])
def test_untrackable_value_is_refused_at_construction(value, names) -> None:
    with pytest.raises(UntrackableError, match=names):
        Checkpoint(model=nn.Linear(1, 1), bad=value)
    ckpt = Checkpoint()
    with pytest.raises(UntrackableError):
        ckpt.bad = value
    assert "bad" not in ckpt.__dict__["_objects"]


def test_every_kind_of_value_round_trips(tmp_path) -> None:
    gen = torch.Generator().manual_seed(5)
    values = dict(t=torch.arange(6, dtype=torch.int32).reshape(2, 3), i=7, f=2.5, b=True,
                  s="text", nested={"a": [1.5, {"b": torch.ones(2, dtype=torch.float64)}]},
                  g=gen, bf=torch.tensor([1.5, -2.0], dtype=torch.bfloat16))
    path = Checkpoint(**values).save(str(tmp_path / "c"))
    expected_state = gen.get_state()

    t = torch.zeros(2, 3, dtype=torch.int32)
    b64 = torch.zeros(2, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    bf = torch.zeros(2, dtype=torch.bfloat16)
    fresh = Checkpoint(t=t, i=0, f=0.0, b=False, s="", nested={"a": [0.0, {"b": b64}]}, g=g,
                       bf=bf)
    fresh.restore(path).assert_consumed()
    assert (fresh.i, fresh.f, fresh.b, fresh.s) == (7, 2.5, True, "text")
    assert fresh.nested["a"][0] == 1.5 and fresh.t is t and t.flatten().tolist() == list(range(6))
    assert b64.tolist() == [1.0, 1.0] and bf.tolist() == [1.5, -2.0]
    assert torch.equal(g.get_state(), expected_state)


def test_restore_is_in_place_and_tied_weights_stay_tied(tmp_path) -> None:
    torch.manual_seed(0)
    model = Net()
    path = Checkpoint(model=model).save(str(tmp_path / "c"))
    keys = keys_of(path)
    assert "model/embed/weight/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert not any(k.startswith("model/head/") for k in keys)  # one node, two edges

    torch.manual_seed(1)
    fresh = Net()
    weight = fresh.embed.weight
    fresh.fc1.weight.requires_grad_(False)
    Checkpoint(model=fresh).restore(path).assert_consumed()
    assert fresh.embed.weight is weight and fresh.head.weight is weight  # still tied
    assert weight.requires_grad and not fresh.fc1.weight.requires_grad
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_deterministic_bytes(tmp_path) -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 3, dtype=torch.long)).sum().backward()
    opt.step()
    ckpt = Checkpoint(model=model, optimizer=opt)
    a, b = ckpt.write(str(tmp_path / "a")), ckpt.write(str(tmp_path / "b"))
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    assert [n for n, _ in list_variables(a)] == [n for n, _ in list_variables(b)]


@pytest.mark.parametrize("live, what, saved_side, live_side", [
    (nn.Linear(4, 5), "shape", "[3, 4]", "[5, 4]"),
    (nn.Linear(4, 3).double(), "dtype", "torch.float32", "torch.float64"),
])
def test_mismatch_names_key_and_both_sides(tmp_path, live, what, saved_side, live_side) -> None:
    path = Checkpoint(model=nn.Linear(4, 3)).save(str(tmp_path / "c"))
    with pytest.raises(MismatchError) as err:
        Checkpoint(model=live).restore(path)
    msg = str(err.value)
    assert err.value.key == "model/weight/.ATTRIBUTES/VARIABLE_VALUE" and err.value.key in msg
    assert what in msg and saved_side in msg and live_side in msg


def test_tf1_name_based_checkpoint_is_a_clear_error() -> None:
    prefix = os.path.join(os.path.dirname(__file__), "..", "data", "tf", "tf1_name_based",
                          "model.ckpt-2")
    with pytest.raises(UnsupportedFormatError, match="not an object-based checkpoint"):
        Checkpoint(model=nn.Linear(2, 2)).restore(prefix)
