"""Every Python value from a file is checked before it lands.

A valid checkpoint is written by ``torchckpt.Checkpoint``; one value in it is
forged (a py_state JSON entry rewritten, or a scalar / state tensor replaced by
one of another dtype or size); restoring into fresh objects must raise a
``TorchckptError`` (``InvalidValueError``, or ``MismatchError`` for a tensor of
the wrong shape) naming the file, the checkpoint key and the field, and must
leave the object that owns the value as it was. Nothing may surface later, at
the first ``iter()`` of the loader or ``opt.step()``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

import torchckpt
from torchckpt import Checkpoint
from torchckpt.adapters.tensors import tensor_to_buffer, tf_dtype_of
from torchckpt.data import ResumableLoader
from torchckpt.errors import InvalidValueError, MismatchError, TorchckptError
from torchckpt.format import BundleReader, BundleWriter, DataType

# --- a run to forge ------------------------------------------------------------------------


@dataclass
class Run:
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    data: ResumableLoader
    ckpt: Checkpoint


def build(trained: bool) -> Run:
    """The objects of a small training run; ``trained``: one step done, mid-epoch."""
    torch.manual_seed(0 if trained else 1)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    scaler = torch.amp.GradScaler("cpu")
    data = ResumableLoader(DataLoader(list(range(20)), batch_size=3, shuffle=True,
                                      generator=torch.Generator().manual_seed(1)))
    ckpt = Checkpoint(model=model, opt=opt, sched=sched, scaler=scaler, data=data,
                      rng=torchckpt.RNGState(), step=0, rate=0.5, name="fresh", flag=False)
    if trained:
        train_step(model, opt, scaler)
        sched.step()
        it = iter(data)
        next(it), next(it)
        ckpt.step, ckpt.rate, ckpt.name, ckpt.flag = 7, 0.25, "run", True
    return Run(model, opt, sched, scaler, data, ckpt)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler) -> None:
    opt.zero_grad()
    loss = model(torch.randn(4, 3)).square().mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> str:
    run = build(trained=True)
    return run.ckpt.save(str(tmp_path_factory.mktemp("saved") / "ckpt"))


# --- forging -------------------------------------------------------------------------------

Change = Callable[[Any], Any]  # parsed py_state -> new py_state; or a tensor; or raw bytes


def forge(src: str, dst: str, changes: dict[str, Any]) -> str:
    """Copy bundle ``src`` to ``dst`` with values replaced: a callable rewrites the parsed
    JSON of a py_state (dumped back with Python's ``json``, so NaN and Infinity are
    bare tokens), a tensor replaces a value with any dtype and shape, bytes a string."""
    with BundleReader(src) as r:
        keys = {k.decode() for k in r.keys()}
        assert set(changes) <= keys, sorted(set(changes) - keys)
        w = BundleWriter(dst, sync=False)
        for key in sorted(keys):
            e, new = r.entry(key), changes.get(key)
            if callable(new):
                new = json.dumps(new(json.loads(r.read_array(key).item()))).encode()
            if isinstance(new, bytes):
                w.add_strings(key, [new], ())
            elif isinstance(new, torch.Tensor):
                w.add(key, tensor_to_buffer(new.contiguous()), tf_dtype_of(new.dtype), new.shape)
            elif e.dtype == DataType.DT_STRING:
                w.add_strings(key, list(r.read_array(key).reshape(-1)), e.shape)
            else:
                w.add(key, np.ascontiguousarray(r.read_array(key)), e.dtype, e.shape)
        w.finish()
    return dst


def at(*path: Any, value: Any) -> Change:
    """Set the JSON value at ``path`` (dict keys and list indices) to ``value``."""
    def change(state: Any) -> Any:
        state = copy.deepcopy(state)
        node = state
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return state
    return change


def py_state(owner: str) -> str:
    return f"{owner}/.ATTRIBUTES/py_state"


def placeholder_key(prefix: str, owner: str, *path: Any) -> str:
    """The ``tensor_<i>`` key of the tensor a py_state holds at ``path``."""
    with BundleReader(prefix) as r:
        node = json.loads(r.read_array(py_state(owner)).item())
    for step in path:
        node = node[step]
    return f"{owner}/.ATTRIBUTES/tensor_{node['__tensor__']}"


SLOT = "model/weight/.OPTIMIZER_SLOT/opt/{}/.ATTRIBUTES/VARIABLE_VALUE"


# --- what "unchanged" means for each owner ---------------------------------------------------

def snapshot(run: Run, owner: str) -> Any:
    """The owner's state. A slot variable is a node of its own that lands when its
    parameter is ready (perhaps long after the optimizer's hyperparameters, for a lazy
    module), so for a slot ("slot:<name>") the owner is that one state entry."""
    if owner.startswith("slot:"):
        return copy.deepcopy(run.opt.state.get(run.model.weight, {}).get(owner[5:]))
    if owner == "rng":
        return (torch.get_rng_state(), np.random.get_state(), random.getstate())
    if owner in ("step", "rate", "name", "flag"):
        return getattr(run.ckpt, owner)
    obj = {"opt": run.opt, "sched": run.sched, "scaler": run.scaler, "data": run.data}[owner]
    return copy.deepcopy(obj.state_dict())


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) \
            and a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


# --- the forged values -----------------------------------------------------------------------

NAN_TAG = {"__float__": "nan"}
CASES: list[tuple[str, str, Callable[[str], dict[str, Any]], str]] = [
    # (id, owner, changes given the saved prefix, the field the message names)
    ("complex-in-int-attribute", "step",
     lambda p: {"step/.ATTRIBUTES/VARIABLE_VALUE": torch.tensor(1 + 2j, dtype=torch.complex64)},
     "complex64"),
    ("float-in-int-attribute", "step",
     lambda p: {"step/.ATTRIBUTES/VARIABLE_VALUE": torch.tensor(7.5, dtype=torch.float64)},
     "an int"),
    ("bool-in-int-attribute", "step",
     lambda p: {"step/.ATTRIBUTES/VARIABLE_VALUE": torch.tensor(True)}, "an int"),
    ("int-in-bool-attribute", "flag",
     lambda p: {"flag/.ATTRIBUTES/VARIABLE_VALUE": torch.tensor(1)}, "a bool"),
    ("complex-in-float-attribute", "rate",
     lambda p: {"rate/.ATTRIBUTES/VARIABLE_VALUE": torch.tensor(1j, dtype=torch.complex128)},
     "a real number"),
    ("dict-in-str-attribute", "name", lambda p: {py_state("name"): lambda s: {"a": 1}},
     "a string"),
    ("number-in-str-attribute", "name", lambda p: {py_state("name"): lambda s: 3}, "a string"),
    ("nan-lr", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "lr",
                                                     value=float("nan"))},
     "param_groups[0].lr"),
    ("nan-lr-tagged", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "lr",
                                                            value=NAN_TAG)},
     "param_groups[0].lr"),
    ("string-lr", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "lr", value="1e-3")},
     "param_groups[0].lr"),
    ("negative-lr", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "lr", value=-1)},
     "param_groups[0].lr"),
    ("bool-lr", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "lr", value=True)},
     "param_groups[0].lr"),
    ("infinite-eps", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "eps",
                                                           value=float("inf"))},
     "param_groups[0].eps"),
    ("one-beta", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "betas",
                                                       value={"__tuple__": [0.9]})},
     "param_groups[0].betas"),
    ("beta-of-one", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "betas",
                                                          value=[0.9, 1.0])},
     "param_groups[0].betas[1]"),
    ("string-in-bool-hyperparameter", "opt",
     lambda p: {py_state("opt"): at("param_groups", 0, "maximize", value="yes")},
     "param_groups[0].maximize"),
    ("int-in-flag", "opt", lambda p: {py_state("opt"): at("param_groups", 0, "foreach",
                                                          value=3)},
     "param_groups[0].foreach"),
    ("dict-weight-decay", "opt", lambda p: {py_state("opt"): at("param_groups", 0,
                                                                "weight_decay", value={})},
     "param_groups[0].weight_decay"),
    ("capturable-on-cpu", "opt", lambda p: {py_state("opt"): at("param_groups", 0,
                                                                "capturable", value=True)},
     "param_groups[0].capturable"),
    ("amsgrad-without-its-state", "opt",
     lambda p: {py_state("opt"): at("param_groups", 0, "amsgrad", value=True)},
     "param_groups[0].amsgrad"),
    ("nan-step-slot", "slot:step", lambda p: {SLOT.format("step"): torch.tensor(float("nan"))},
     "step"),
    ("negative-step-slot", "slot:step", lambda p: {SLOT.format("step"): torch.tensor(-3.0)},
     "step"),
    ("complex-step-slot", "slot:step",
     lambda p: {SLOT.format("step"): torch.tensor(1j, dtype=torch.complex64)}, "complex64"),
    ("integer-moment-slot", "slot:exp_avg",
     lambda p: {SLOT.format("exp_avg"): torch.zeros(2, 3, dtype=torch.int32)}, "int32"),
    ("scheduler-state-not-a-dict", "sched", lambda p: {py_state("sched"): lambda s: [1, 2]},
     "a dict"),
    ("string-last-epoch", "sched", lambda p: {py_state("sched"): at("last_epoch",
                                                                    value="seven")},
     "last_epoch"),
    ("float-last-epoch", "sched", lambda p: {py_state("sched"): at("last_epoch", value=2.5)},
     "last_epoch"),
    ("nan-in-last-lr", "sched", lambda p: {py_state("sched"): at("_last_lr", 0, value=NAN_TAG)},
     "_last_lr[0]"),
    ("base-lrs-of-another-length", "sched",
     lambda p: {py_state("sched"): at("base_lrs", value=[0.1, 0.1])}, "base_lrs"),
    ("negative-step-count", "sched", lambda p: {py_state("sched"): at("_step_count",
                                                                      value=-5)},
     "_step_count"),
    ("scheduler-key-replacing-its-optimizer", "sched",
     lambda p: {py_state("sched"): at("optimizer", value=None)}, "optimizer"),
    ("string-gamma", "sched", lambda p: {py_state("sched"): at("gamma", value="x")}, "gamma"),
    ("nan-scale", "scaler", lambda p: {py_state("scaler"): at("scale", value=float("nan"))},
     "scale"),
    ("negative-scale", "scaler", lambda p: {py_state("scaler"): at("scale", value=-1.0)},
     "scale"),
    ("zero-growth-interval", "scaler", lambda p: {py_state("scaler"): at("growth_interval",
                                                                         value=0)},
     "growth_interval"),
    ("float-growth-tracker", "scaler", lambda p: {py_state("scaler"): at("_growth_tracker",
                                                                         value=2.5)},
     "_growth_tracker"),
    ("scaler-field-missing", "scaler",
     lambda p: {py_state("scaler"): lambda s: {k: v for k, v in s.items() if k != "scale"}},
     "scale"),
    ("infinite-batches-consumed", "data",
     lambda p: {py_state("data"): at("batches_consumed", value=float("inf"))},
     "batches_consumed"),
    ("huge-batches-consumed", "data",
     lambda p: {py_state("data"): at("batches_consumed", value=10 ** 30)}, "batches_consumed"),
    ("batches-consumed-past-the-epoch", "data",
     lambda p: {py_state("data"): at("batches_consumed", value=8)}, "batches_consumed"),
    ("float-batches-consumed", "data",
     lambda p: {py_state("data"): at("batches_consumed", value=2.0)}, "batches_consumed"),
    ("string-epoch", "data", lambda p: {py_state("data"): at("epoch", value="seven")}, "epoch"),
    ("huge-epoch", "data", lambda p: {py_state("data"): at("epoch", value=2 ** 63)}, "epoch"),
    ("string-in-epoch", "data", lambda p: {py_state("data"): at("in_epoch", value="yes")},
     "in_epoch"),
    ("loader-torch-rng-of-wrong-size", "data",
     lambda p: {placeholder_key(p, "data", "epoch_start", "rng", "torch"):
                torch.zeros(100, dtype=torch.uint8)}, "epoch_start.rng.torch"),
    ("loader-torch-rng-of-wrong-type", "data",
     lambda p: {placeholder_key(p, "data", "epoch_start", "rng", "torch"):
                torch.zeros(5056, dtype=torch.int8)}, "epoch_start.rng.torch"),
    ("loader-torch-rng-invalid", "data",
     lambda p: {placeholder_key(p, "data", "epoch_start", "rng", "torch"):
                torch.zeros(5056, dtype=torch.uint8)}, "epoch_start.rng.torch"),
    ("loader-numpy-position-past-the-key", "data",
     lambda p: {py_state("data"): at("epoch_start", "rng", "numpy", "pos", value=5000)},
     "epoch_start.rng.numpy.pos"),
    ("loader-python-gauss-a-string", "data",
     lambda p: {py_state("data"): at("epoch_start", "rng", "python", "gauss_next", value="x")},
     "epoch_start.rng.python.gauss_next"),
    ("loader-sampler-generator-of-wrong-size", "data",
     lambda p: {placeholder_key(p, "data", "epoch_start", "generators", 0):
                torch.zeros(16, dtype=torch.uint8)}, "epoch_start.generators[0]"),
    ("rng-torch-of-wrong-size", "rng",
     lambda p: {placeholder_key(p, "rng", "torch"): torch.zeros(4, dtype=torch.uint8)},
     "torch"),
    ("rng-torch-of-wrong-type", "rng",
     lambda p: {placeholder_key(p, "rng", "torch"): torch.zeros(5056, dtype=torch.float32)},
     "torch"),
    ("rng-python-version", "rng", lambda p: {py_state("rng"): at("python", "version", value=2)},
     "python.version"),
    ("rng-python-index-out-of-range", "rng",
     lambda p: {placeholder_key(p, "rng", "python", "internal"):
                torch.full((625,), 700, dtype=torch.int64)}, "python.internal[624]"),
    ("rng-python-state-too-short", "rng",
     lambda p: {placeholder_key(p, "rng", "python", "internal"):
                torch.zeros(624, dtype=torch.int64)}, "python.internal"),
    ("rng-numpy-word-out-of-range", "rng",
     lambda p: {placeholder_key(p, "rng", "numpy", "key"):
                torch.full((624,), 2 ** 40, dtype=torch.int64)}, "numpy.key"),
    ("rng-numpy-position", "rng", lambda p: {py_state("rng"): at("numpy", "pos", value=625)},
     "numpy.pos"),
    ("rng-cuda-not-a-list", "rng", lambda p: {py_state("rng"): at("cuda", value=5)}, "cuda"),
    ("rng-not-a-dict", "rng", lambda p: {py_state("rng"): lambda s: "state"}, ""),
]


@pytest.mark.parametrize("owner, changes, field", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_forged_value_is_refused_naming_key_and_field(tmp_path, saved, owner, changes,
                                                      field) -> None:
    edits = changes(saved)
    forged = forge(saved, str(tmp_path / "forged"), edits)
    run = build(trained=False)
    before = snapshot(run, owner)
    with pytest.raises((InvalidValueError, MismatchError)) as info:
        run.ckpt.restore(forged)
    err, message = info.value, str(info.value)
    assert isinstance(err, TorchckptError)
    if isinstance(err, InvalidValueError):
        assert err.path is not None and os.path.basename(err.path) == "forged.index", message
        assert "forged.index" in message
    key = err.key
    assert key in message
    assert key in edits or key == py_state(owner), (key, sorted(edits))
    assert field in message, message
    assert same(snapshot(run, owner), before)


def test_wrong_slot_shape_is_a_mismatch(tmp_path, saved) -> None:
    forged = forge(saved, str(tmp_path / "forged"), {SLOT.format("exp_avg"): torch.zeros(3)})
    run = build(trained=False)
    with pytest.raises(MismatchError, match="exp_avg") as info:
        run.ckpt.restore(forged)
    assert info.value.key == SLOT.format("exp_avg")
    assert "exp_avg" not in run.opt.state.get(run.model.weight, {})


def test_one_message_in_full(tmp_path, saved) -> None:
    forged = forge(saved, str(tmp_path / "forged"),
                   {py_state("opt"): at("param_groups", 0, "lr", value="1e-3")})
    with pytest.raises(InvalidValueError) as info:
        build(trained=False).ckpt.restore(forged)
    err = info.value
    assert (err.key, err.field) == ("opt/.ATTRIBUTES/py_state", "param_groups[0].lr")
    assert str(err) == (f"invalid value in checkpoint '{forged}.index' for "
                        "'opt/.ATTRIBUTES/py_state' at param_groups[0].lr: expected a finite "
                        "real number in [0, 3.40282e+38], found str '1e-3'")


def test_unforged_checkpoint_restores_and_resumes(tmp_path, saved) -> None:
    run = build(trained=False)
    run.ckpt.restore(forge(saved, str(tmp_path / "copy"), {})).assert_consumed()
    assert (run.ckpt.step, run.ckpt.rate, run.ckpt.name, run.ckpt.flag) == (7, 0.25, "run", True)
    assert run.data.batches_consumed == 2 and len(list(run.data)) == 5
    train_step(run.model, run.opt, run.scaler)
    run.sched.step()
    assert all(bool(torch.isfinite(p).all()) for p in run.model.parameters())


# --- states torch writes itself restore (no false refusals) ----------------------------------

def _scheduler_cases() -> list[tuple[str, Callable[[torch.optim.Optimizer], Any]]]:
    sched = torch.optim.lr_scheduler
    return [
        ("multistep", lambda o: sched.MultiStepLR(o, [1, 3])),
        ("plateau", lambda o: sched.ReduceLROnPlateau(o, patience=0)),
        ("warm-restarts", lambda o: sched.CosineAnnealingWarmRestarts(o, 3)),
        ("cyclic", lambda o: sched.CyclicLR(o, 0.01, 0.1, step_size_up=2)),
        ("one-cycle", lambda o: sched.OneCycleLR(o, 0.1, total_steps=10)),
        ("lambda", lambda o: sched.LambdaLR(o, lambda e: 0.9 ** e)),
        ("sequential", lambda o: sched.SequentialLR(
            o, [sched.ConstantLR(o), sched.ExponentialLR(o, 0.9)], milestones=[2])),
        ("swa", lambda o: torch.optim.swa_utils.SWALR(o, 0.05)),
    ]


@pytest.mark.parametrize("make", [c[1] for c in _scheduler_cases()],
                         ids=[c[0] for c in _scheduler_cases()])
def test_saved_scheduler_states_restore(tmp_path, make) -> None:
    def setup() -> tuple[torch.optim.Optimizer, Any]:
        p = torch.nn.Parameter(torch.ones(2))
        opt = torch.optim.SGD([p], lr=1, momentum=0.9)  # an int lr, as torch allows
        return opt, make(opt)

    opt, sched = setup()
    for i in range(3):
        opt.step()
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(1.0)
        elif isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts):
            sched.step(i + 0.5)  # fractional epochs, as torch documents
        else:
            sched.step()
    path = Checkpoint(opt=opt, sched=sched).save(str(tmp_path / "c"))
    opt2, sched2 = setup()
    Checkpoint(opt=opt2, sched=sched2).restore(path).assert_consumed()
    assert same(sched2.state_dict(), sched.state_dict())
    assert type(getattr(sched2, "milestones", None)) is type(getattr(sched, "milestones", None))
    sched2.step(1.0) if isinstance(sched2, torch.optim.lr_scheduler.ReduceLROnPlateau) \
        else sched2.step()


def _closure_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """One optimizer step with a closure (LBFGS needs one; the others accept it)."""
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = model(torch.ones(4, 3)).square().mean()
        loss.backward()
        return loss
    opt.step(closure)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.LBFGS(ps, lr=1, history_size=3),
    lambda ps: torch.optim.RMSprop(ps, momentum=0.5, centered=True),
    lambda ps: torch.optim.ASGD(ps),
    lambda ps: torch.optim.NAdam(ps),
    lambda ps: torch.optim.Adagrad(ps),
    lambda ps: torch.optim.Rprop(ps),
    lambda ps: torch.optim.Adam(ps, lr=torch.tensor(0.01)),
], ids=["lbfgs", "rmsprop", "asgd", "nadam", "adagrad", "rprop", "adam-tensor-lr"])
def test_saved_optimizer_states_restore(tmp_path, make) -> None:
    def setup() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        return model, make(model.parameters())

    model, opt = setup()
    _closure_step(model, opt)
    _closure_step(model, opt)
    path = Checkpoint(model=model, opt=opt).save(str(tmp_path / "c"))
    model2, opt2 = setup()
    Checkpoint(model=model2, opt=opt2).restore(path).assert_consumed()
    assert same(opt2.state_dict(), opt.state_dict())
    _closure_step(model, opt)
    _closure_step(model2, opt2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_infinite_float_attribute_restores(tmp_path) -> None:
    path = Checkpoint(best=float("inf"), worst=float("-inf")).save(str(tmp_path / "c"))
    ckpt = Checkpoint(best=0.5, worst=0.5)
    ckpt.restore(path).assert_consumed()
    assert (ckpt.best, ckpt.worst) == (float("inf"), float("-inf"))


def test_int_attribute_into_a_float_attribute(tmp_path) -> None:
    path = Checkpoint(loss=3).save(str(tmp_path / "c"))
    ckpt = Checkpoint(loss=0.5)
    ckpt.restore(path)
    assert ckpt.loss == 3.0 and type(ckpt.loss) is float


# --- user objects: their load_state_dict is the check; its errors become ours ------------------

class Strict:
    """A user object whose load_state_dict refuses what it cannot use."""

    def __init__(self) -> None:
        self.n = 1

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state["n"], int):
            raise TypeError(f"n must be an int, got {state['n']!r}")
        self.n = state["n"]


class Buggy(Strict):
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.undefined_attribute.append(state)  # a bug, not bad data


def test_user_load_state_dict_error_names_key(tmp_path) -> None:
    saved = Checkpoint(obj=Strict()).save(str(tmp_path / "c"))
    forged = forge(saved, str(tmp_path / "forged"), {py_state("obj"): at("n", value="x")})
    target = Strict()
    with pytest.raises(InvalidValueError, match="Strict.load_state_dict refused") as info:
        Checkpoint(obj=target).restore(forged)
    assert info.value.key == py_state("obj") and "forged.index" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)
    assert target.n == 1
    forged = forge(saved, str(tmp_path / "forged2"), {py_state("obj"): lambda s: {}})
    with pytest.raises(InvalidValueError, match="KeyError"):
        Checkpoint(obj=Strict()).restore(forged)


def test_bug_in_user_load_state_dict_is_not_disguised(tmp_path) -> None:
    saved = Checkpoint(obj=Strict()).save(str(tmp_path / "c"))
    with pytest.raises(AttributeError, match="undefined_attribute"):
        Checkpoint(obj=Buggy()).restore(saved)


def test_direct_load_state_dict_calls_are_checked_too() -> None:
    sd = torchckpt.RNGState().state_dict()
    before = torch.get_rng_state()
    bad = dict(sd, python=dict(sd["python"], gauss_next=float("nan")))
    with pytest.raises(InvalidValueError, match="python.gauss_next") as info:
        torchckpt.RNGState().load_state_dict(bad)
    assert info.value.path is None and info.value.key is None
    assert torch.equal(torch.get_rng_state(), before)


# --- random mutations: refused at restore, or everything still runs ---------------------------

def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every value of a JSON document (containers and their items)."""
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_leaves(v, path + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_leaves(v, path + (i,)))
    return out


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
    st.sampled_from([-1, 0, 1, 2, 624, 625, 5056, 2 ** 31, 2 ** 63]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
    st.sampled_from([{"__float__": "nan"}, {"__float__": "-inf"}, {"__tensor__": 0},
                     {"__tensor__": 1}, {"__tensor__": 2}, {"__tensor__": 3}]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=2),
    st.builds(lambda xs: {"__tuple__": xs}, st.lists(inner, max_size=3))), max_leaves=4)
_OWNERS = ["opt", "sched", "scaler", "data", "rng"]


@given(owner=st.sampled_from(_OWNERS), choice=st.integers(0, 10 ** 6), value=_VALUES)
def test_random_forged_python_state_is_refused_or_harmless(tmp_path_factory, saved, owner,
                                                           choice, value) -> None:
    with BundleReader(saved) as r:
        state = json.loads(r.read_array(py_state(owner)).item())
    paths = _leaves(state)
    path = paths[choice % len(paths)]
    forged = forge(saved, str(tmp_path_factory.mktemp("forged") / "c"),
                   {py_state(owner): at(*path, value=value)})
    run = build(trained=False)
    before = snapshot(run, owner)
    try:
        run.ckpt.restore(forged)
    except TorchckptError:
        assert same(snapshot(run, owner), before), (owner, path, value)
        return
    # accepted: the loader, optimizer, scheduler, scaler and generators all still work
    batches = list(run.data)
    assert all(isinstance(b, torch.Tensor) for b in batches)
    list(run.data)
    train_step(run.model, run.opt, run.scaler)
    run.sched.step()
    torch.rand(2), np.random.standard_normal(), random.gauss(0.0, 1.0), random.random()


# --- other holders of generator states and loader counters ------------------------------------

def test_forged_generator_state_is_refused(tmp_path) -> None:
    g = torch.Generator().manual_seed(3)
    saved = Checkpoint(gen=g).save(str(tmp_path / "c"))
    key = "gen/.ATTRIBUTES/VARIABLE_VALUE"
    forged = forge(saved, str(tmp_path / "forged"), {key: torch.zeros(5056, dtype=torch.uint8)})
    live = torch.Generator().manual_seed(4)
    before = live.get_state()
    with pytest.raises(InvalidValueError, match="generator state") as info:
        Checkpoint(gen=live).restore(forged)
    assert info.value.key == key and "forged.index" in str(info.value)
    assert torch.equal(live.get_state(), before)


def _stateful_loader() -> ResumableLoader:
    from torchdata.stateful_dataloader import StatefulDataLoader  # a test dependency
    return ResumableLoader(StatefulDataLoader(list(range(20)), batch_size=3, shuffle=True,
                                              generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("path, value, field", [
    (("loader", "_num_yielded"), 10 ** 30, "loader._num_yielded"),
    (("loader", "_sampler_iter_state", "samples_yielded"), float("inf"),
     "loader._sampler_iter_state.samples_yielded"),
    (("loader", "_iterator_finished"), "no", "loader._iterator_finished"),
    (("generators",), [], "generators"),
], ids=["huge-count", "infinite-count", "string-flag", "generators-missing"])
def test_forged_stateful_loader_state_is_refused(tmp_path, path, value, field) -> None:
    data = _stateful_loader()
    it = iter(data)
    next(it), next(it)
    saved = Checkpoint(data=data).save(str(tmp_path / "c"))
    forged = forge(saved, str(tmp_path / "forged"), {py_state("data"): at(*path, value=value)})
    live = _stateful_loader()
    with pytest.raises(InvalidValueError) as info:
        Checkpoint(data=live).restore(forged)
    assert info.value.key == py_state("data") and info.value.field == field, str(info.value)
    assert len(list(live)) == 7  # untouched: a whole fresh epoch


def _lbfgs_run(tmp_path) -> tuple[str, Callable[[], tuple[torch.nn.Module, Any]]]:
    def setup() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        return model, torch.optim.LBFGS(model.parameters(), lr=1, history_size=3)

    model, opt = setup()
    _closure_step(model, opt)
    _closure_step(model, opt)
    return Checkpoint(model=model, opt=opt).save(str(tmp_path / "c")), setup


@pytest.mark.parametrize("what", ["longer-than-history", "unequal-lengths", "short-al",
                                  "wrong-size-direction"])
def test_forged_lbfgs_history_is_refused_at_restore(tmp_path, what) -> None:
    """step() indexes LBFGS's history lists by each other's lengths and multiplies the flat
    direction tensors with the gradient: a history it would run past is refused first."""
    path, setup = _lbfgs_run(tmp_path)

    def change(state: Any) -> Any:
        history = state["state"]["0"]
        if what == "longer-than-history":
            for key in ("old_dirs", "old_stps", "ro", "al"):
                history[key] = history[key] * 4  # past history_size=3
        elif what == "unequal-lengths":
            history["ro"] = history["ro"] * 2
        elif what == "short-al":
            history["al"] = []
        return state

    changes: dict[str, Any] = {"opt/.ATTRIBUTES/py_state": change}
    if what == "wrong-size-direction":
        with BundleReader(path) as r:
            state = json.loads(r.read_array("opt/.ATTRIBUTES/py_state").item())
        index = state["state"]["0"]["old_dirs"][0]["__tensor__"]
        changes = {f"opt/.ATTRIBUTES/tensor_{index}": torch.zeros(5)}
    forged = forge(path, str(tmp_path / "forged"), changes)
    model, opt = setup()
    with pytest.raises(InvalidValueError) as info:
        Checkpoint(model=model, opt=opt).restore(forged)
    assert "opt/.ATTRIBUTES/py_state" in str(info.value) or "tensor_" in str(info.value)
    assert not opt.state  # nothing landed
