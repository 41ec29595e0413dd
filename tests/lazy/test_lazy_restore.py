"""Values that wait for their objects.

(a) objects attached to the Checkpoint after ``restore()``; (b) lazy modules
restored before their first forward; (d) Adam restored before its first step
continues bit for bit, for eager, lazy, meta-device and later-registered
parameters. Plus: a mismatch found when a deferred value lands names the key
and both sides; every hook is removed once its value landed; an abandoned
restore neither warns at garbage collection nor keeps the model alive.
"""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
from lazy_helpers import (
    assert_optimizer_state_equal,
    assert_state_equal,
    batch,
    make,
    train_steps,
    trained,
)
from torch import nn
from torch.nn.modules import module as torch_module

from torchckpt import Checkpoint, CheckpointOptions, MismatchError, UnmatchedError
from torchckpt.adapters.module import default_watches

K, N = 3, 3


@pytest.fixture()
def saved(tmp_path):
    """A trained eager model + Adam, saved; and both continued N steps (the reference)."""
    model, opt = trained(steps=K)
    path = Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "c"))
    reference = (model, opt)
    return path, reference


def continue_reference(reference):
    model, opt = reference
    train_steps(model, opt, K, N)
    return model, opt


def registration_hook_counts() -> tuple[int, int, int]:
    """torch's global registration hooks, after dropping those of earlier tests' restores."""
    gc.collect()
    default_watches.sweep()
    return (len(torch_module._global_module_registration_hooks),
            len(torch_module._global_parameter_registration_hooks),
            len(torch_module._global_buffer_registration_hooks))


# --- (a) objects attached later ------------------------------------------------------------

@pytest.mark.parametrize("model_first", [True, False])
def test_objects_attached_after_restore(saved, model_first: bool) -> None:
    path, (ref_model, ref_opt) = saved
    ckpt = Checkpoint()
    status = ckpt.restore(path)
    with pytest.raises(UnmatchedError) as err:
        status.assert_consumed()
    assert "model.0.weight" in err.value.pending
    assert "optimizer state 'exp_avg' of model.0.weight" in err.value.pending

    torch.manual_seed(5)
    model = make(lazy=False)
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    if model_first:
        ckpt.model = model
        assert "optimizer" in status.report().pending
        ckpt.optimizer = opt
    else:
        ckpt.optimizer = opt
        assert "optimizer state 'exp_avg' of model.0.weight" in status.report().pending
        ckpt.model = model
    status.assert_consumed()
    assert_state_equal(ref_model, model)
    assert_optimizer_state_equal(ref_opt, opt)
    assert opt.param_groups[0]["lr"] == 1e-2
    train_steps(model, opt, K, N)
    continue_reference((ref_model, ref_opt))
    assert_state_equal(ref_model, model)


def test_submodule_and_parameter_registered_later(saved) -> None:
    path, (ref_model, _) = saved
    model = nn.Sequential()
    ckpt = Checkpoint(model=model)
    status = ckpt.restore(path)
    torch.manual_seed(9)
    full = make(lazy=False)
    for name, child in full.named_children():  # register one by one, as a builder would
        model.add_module(name, child)
    late = nn.Module()
    model.add_module("extra", late)  # not in the checkpoint: ignored
    status.expect_partial()
    assert_state_equal(ref_model, full)
    bare = nn.Linear(2, 2)  # a parameter assigned after restore lands at registration
    del bare.weight
    ckpt2 = Checkpoint(model=nn.Sequential(*[nn.Identity()] * 7, bare))
    ckpt2.restore(path).expect_partial()
    bare.weight = nn.Parameter(torch.zeros(2, 6))
    assert torch.equal(bare.weight, ref_model[7].weight)


# --- (b) lazy modules ----------------------------------------------------------------------

@pytest.mark.parametrize("train_mode", [False, True])
def test_lazy_first_forward_matches_saved_model(saved, train_mode: bool) -> None:
    path, (ref_model, _) = saved
    lazy = make(lazy=True)
    status = Checkpoint(model=lazy).restore(path)
    assert "model.0.weight" in status.report().pending
    assert "model.1.num_batches_tracked" in status.report().pending  # reset by init: waits
    status.assert_existing_objects_matched()  # lazy placeholders are matched, just waiting
    ref_model.train(train_mode)
    lazy.train(train_mode)
    x = batch(99)
    out = lazy(x)
    assert torch.equal(out, ref_model(x))
    assert type(lazy[0]) is nn.Conv2d and type(lazy[4]) is nn.Linear
    assert_state_equal(ref_model, lazy)
    status.assert_existing_objects_matched()
    assert all(p.startswith("optimizer") for p in status.report().pending)  # no optimizer here
    assert not lazy[0]._forward_pre_hooks and not lazy[4]._forward_pre_hooks


def test_lazy_value_with_wrong_inferred_shape_names_key_and_sides(saved) -> None:
    path, _ = saved
    lazy = make(lazy=True)
    Checkpoint(model=lazy).restore(path)
    with pytest.raises(MismatchError) as err:
        lazy(torch.randn(4, 3, 5, 5))  # 3 input channels; the checkpoint has 2
    assert err.value.key == "model/0/weight/.ATTRIBUTES/VARIABLE_VALUE"
    assert "[3, 2, 3, 3]" in str(err.value) and "[3, 3, 3, 3]" in str(err.value)


def test_attached_value_with_wrong_shape_names_key_and_sides(saved) -> None:
    path, _ = saved
    ckpt = Checkpoint()
    ckpt.restore(path)
    wrong = make(lazy=False)
    wrong[7] = nn.Linear(6, 5)
    with pytest.raises(MismatchError, match=r"model/7/weight/\.ATTRIBUTES/VARIABLE_VALUE.*"
                                            r"\[2, 6\].*\[5, 6\]"):
        ckpt.model = wrong


# --- (d) Adam before its first step ---------------------------------------------------------

def _lazy_setup():
    model = make(lazy=True)
    return model, torch.optim.Adam(model.parameters(), lr=0.5)


def _meta_setup():
    with torch.device("meta"):
        model = make(lazy=False)
    return model, torch.optim.Adam(model.parameters(), lr=0.5)


def _eager_setup():
    torch.manual_seed(3)
    model = make(lazy=False)
    return model, torch.optim.Adam(model.parameters(), lr=0.5)


@pytest.mark.parametrize("setup", [_eager_setup, _lazy_setup, _meta_setup],
                         ids=["eager", "lazy", "meta"])
def test_adam_restored_before_first_step_continues_bitwise(saved, setup) -> None:
    path, reference = saved
    model, opt = setup()
    status = Checkpoint(model=model, optimizer=opt).restore(path)
    train_steps(model, opt, K, N)
    status.assert_consumed()
    ref_model, ref_opt = continue_reference(reference)
    assert_state_equal(ref_model, model)
    assert_optimizer_state_equal(ref_opt, opt)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_meta_model_materializes_on_the_chosen_device(saved) -> None:
    path, (ref_model, _) = saved
    with torch.device("meta"):
        model = make(lazy=False)
    weight = model[0].weight
    Checkpoint(model=model).restore(path, CheckpointOptions(device="cpu")).expect_partial()
    assert model[0].weight is weight and isinstance(weight, nn.Parameter) and weight.requires_grad
    assert all(t.device == torch.device("cpu") for t in model.state_dict().values())
    assert_state_equal(ref_model, model)


def test_adam_state_of_a_layer_attached_later(saved) -> None:
    path, reference = saved
    torch.manual_seed(3)
    model = make(lazy=False)
    head = model[7]
    del model[7]
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    status = Checkpoint(model=model, optimizer=opt).restore(path)
    assert "optimizer state 'exp_avg' of model.7.weight" in status.report().pending
    model.append(head)  # registered later: values and Adam state land now
    opt.add_param_group({"params": list(head.parameters()), "lr": 1e-2})  # as saved
    status.assert_consumed()
    train_steps(model, opt, K, N)
    ref_model, ref_opt = continue_reference(reference)
    assert_state_equal(ref_model, model)
    assert_optimizer_state_equal(ref_opt, opt)


# --- hooks and lifetime ----------------------------------------------------------------------

def test_hooks_are_removed_once_values_land(saved) -> None:
    path, _ = saved
    baseline = registration_hook_counts()
    ckpt = Checkpoint()
    status = ckpt.restore(path)
    ckpt.model = lazy = make(lazy=True)
    assert default_watches.installed
    ckpt.optimizer = torch.optim.Adam(lazy.parameters())
    lazy(batch(0))
    status.assert_consumed()
    assert not default_watches.installed and registration_hook_counts() == baseline
    assert all(not m._forward_pre_hooks for m in lazy.modules())
    assert not ckpt._watchers


def test_abandoned_restore_does_not_warn_or_keep_the_model_alive(saved) -> None:
    path, _ = saved
    baseline = registration_hook_counts()
    model = nn.Sequential(nn.LazyConv2d(3, 3))  # the rest of the checkpoint never arrives
    ref = weakref.ref(model)
    ckpt = Checkpoint(model=model)
    status = ckpt.restore(path)
    assert status.report().pending
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del model, ckpt, status
        gc.collect()
    assert ref() is None
    nn.Sequential().add_module("x", nn.Identity())  # the leftover torch hooks are inert
    default_watches.sweep()  # as every new watch does
    assert registration_hook_counts() == baseline
