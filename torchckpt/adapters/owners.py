"""What torch's own objects accept as state from a file: LR schedulers, ``GradScaler``
and optimizer param groups (schemas of :mod:`.schema`).

Each ``check_*`` function takes the live object and the state read from a file,
and returns the state to land, or raises
:class:`~torchckpt.errors.InvalidValueError` naming the field. Nothing is
changed on the live object, so a refused restore leaves it as it was.

The rules are the live values' types (:func:`.schema.conform`) plus, by key
name, the ranges torch's constructors enforce (a learning rate is a finite
number >= 0, ``betas`` lie in [0, 1), a ``GradScaler`` scale is > 0) and the
ones its ``step()`` needs (``last_epoch`` is an int, ``capturable`` needs an
accelerator). Other objects with ``state_dict()`` are the user's: their own
``load_state_dict`` is their check, and :class:`.stateful.StatefulAdapter`
turns its errors into torchckpt errors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import lr_scheduler, swa_utils

from ..errors import InvalidValueError
from .schema import (
    Rule,
    Schema,
    as_int,
    check_state,
    choice,
    counter,
    each,
    plain,
    real,
    refuse,
    scalar_or_each,
)

# torch hands hyperparameters to float32 kernels as scalars: a larger one is an error
# there ("value cannot be converted to type float without overflow"), at the first step
_FLOAT32 = torch.finfo(torch.float32)
_RATE = real(lo=0, hi=_FLOAT32.max)  # learning rates, momenta, minimum rates


def _flag(found: Any, live: Any, field: str, schema: Schema) -> Any:
    """A switch that torch keeps as True, False or None (``foreach``, ``fused``)."""
    if found is not None and not isinstance(found, bool):
        refuse(field, "a bool or None", found)
    return found


# --- optimizers ----------------------------------------------------------------------------

#: Param-group hyperparameters. Numbers are reals whatever the live type (torch's
#: defaults mix ``weight_decay=0`` with ``lr=1e-3``), except the LBFGS counts.
OPTIMIZER_GROUP = Schema(real_ints=True, magnitude=_FLOAT32.max, fields={
    **dict.fromkeys(("lr", "initial_lr", "max_lr", "min_lr", "swa_lr", "weight_decay",
                     "momentum", "max_momentum", "base_momentum", "lr_decay",
                     "initial_accumulator_value", "alpha", "lambd", "momentum_decay"), _RATE),
    "eps": scalar_or_each(_RATE),
    "betas": each(real(lo=0, hi=1, hi_open=True)),
    "rho": real(lo=0, hi=1),
    "max_iter": counter(lo=1), "max_eval": counter(lo=1), "history_size": counter(lo=1),
    "line_search_fn": choice(None, "strong_wolfe"),
    **dict.fromkeys(("foreach", "fused", "capturable", "differentiable", "maximize",
                     "amsgrad", "nesterov", "centered", "decoupled_weight_decay"), _flag),
})

#: Switches that decide which per-parameter state ``step()`` reads: flipping one
#: without the state to match fails at the first step (``KeyError: 'max_exp_avg_sq'``).
_LAYOUT_SWITCHES = ("amsgrad", "centered")


def check_optimizer_group(optimizer: torch.optim.Optimizer, live: dict[str, Any],
                          found: Any, field: str) -> dict[str, Any]:
    """The hyperparameters to land in param group ``live`` (without ``params``).

    Raises:
        InvalidValueError: a value of the wrong type or range, or a combination
            that torch's step cannot run (see :func:`_check_modes`).
    """
    template = {k: v for k, v in live.items() if k != "params"}
    group = check_state(found, template, OPTIMIZER_GROUP, field)
    group.pop("params", None)  # "params" is the live group's own list; a file never sets it
    _check_modes(optimizer, live, {**template, **group}, field)
    return group


def _check_modes(optimizer: torch.optim.Optimizer, live: dict[str, Any],
                 merged: dict[str, Any], field: str) -> None:
    """Combinations torch's constructors refuse, or that its step cannot run."""
    def at(key: str) -> str:
        return f"{field}.{key}"

    if merged.get("differentiable") and (merged.get("fused") or merged.get("foreach")):
        refuse(at("differentiable"), "False with fused or foreach kernels", True)
    if merged.get("capturable") and any(p.device.type == "cpu" for p in live["params"]):
        refuse(at("capturable"), "False for parameters on the CPU (capturable kernels need "
               "an accelerator)", True)
    if isinstance(merged.get("lr"), torch.Tensor) and merged.get("foreach") \
            and not merged.get("capturable"):
        refuse(at("foreach"), "not True with a tensor lr unless capturable", True)
    for key in _LAYOUT_SWITCHES:
        if key in live and bool(merged.get(key)) != bool(live[key]):
            refuse(at(key), f"{bool(live[key])}, as the live optimizer was built (it decides "
                   "which state step() reads)", merged.get(key))
    if isinstance(optimizer, torch.optim.RMSprop) and "momentum" in live \
            and (merged["momentum"] > 0) != (live["momentum"] > 0):
        refuse(at("momentum"), f"{'> 0' if live['momentum'] > 0 else '0'}, as the live "
               "RMSprop was built (a momentum buffer exists only with momentum)",
               merged["momentum"])


#: Non-tensor per-parameter state torch's optimizers keep (LBFGS), by name.
OPTIMIZER_STATE = Schema(real_ints=True, finite=False, fields={
    "func_evals": counter(), "n_iter": counter(), "t": real(), "step": real(lo=0),
})


#: LBFGS's curvature history: pairs of flat direction / step tensors and their 0-d
#: ``ro``; ``al`` is the scratch list ``step()`` indexes by history position.
_LBFGS_PAIRS = ("old_dirs", "old_stps", "ro")


def check_lbfgs_history(optimizer: torch.optim.Optimizer, state: dict[str, Any],
                        field: str) -> None:
    """Refuse an LBFGS history that ``step()`` would index past, or whose tensors do not
    fit the parameters (found lists must agree in length, hold at most ``history_size``
    entries, with ``al`` at least as long, and flat tensors of the parameters' size).

    Raises:
        InvalidValueError: naming the field.
    """
    if not isinstance(optimizer, torch.optim.LBFGS) or not any(k in state for k in _LBFGS_PAIRS):
        return
    group = optimizer.param_groups[0]
    flat = sum(p.numel() for p in group["params"])
    lists: dict[str, list[Any]] = {}
    for key in _LBFGS_PAIRS:
        value = state.get(key)
        if not isinstance(value, list):
            refuse(f"{field}.{key}", "a list (LBFGS history)", value)
        lists[key] = value
    n = len(lists["old_dirs"])
    if any(len(v) != n for v in lists.values()) or n > group["history_size"]:
        refuse(f"{field}.old_dirs", "old_dirs, old_stps and ro of one length <= history_size "
               f"({group['history_size']})", {k: len(v) for k, v in lists.items()})
    al = state.get("al")
    if al is not None and (not isinstance(al, list) or len(al) < n):
        refuse(f"{field}.al", f"a list of at least {n} entries", al)
    for key, numel in (("old_dirs", flat), ("old_stps", flat), ("ro", 1)):
        for i, t in enumerate(lists[key]):
            if not isinstance(t, torch.Tensor) or t.numel() != numel or not t.is_floating_point():
                refuse(f"{field}.{key}[{i}]", f"a floating tensor of {numel} elements", t)


# --- LR schedulers -------------------------------------------------------------------------

def _milestones(found: Any, live: Any, field: str, schema: Schema) -> Any:
    """MultiStepLR's ``Counter`` of epoch -> count (a plain dict after JSON)."""
    if not isinstance(found, dict):
        refuse(field, "a dict of epoch -> count", found)
    for epoch, count in found.items():
        as_int(epoch, f"{field} key", 0)
        as_int(count, f"{field}[{epoch!r}]", 1)
    return type(live)(found) if isinstance(live, dict) else found


def _same_none(found: Any, live: Any, field: str, schema: Schema) -> Any:
    """A callable's attributes where the live scheduler has a callable object, else None."""
    if live is None:
        if found is not None:
            refuse(field, "None (the live scheduler has no such callable object)", found)
        return None
    return check_state(found, live, schema, field)


def _callable_state(found: Any, live: Any, field: str, schema: Schema) -> Any:
    """LambdaLR's saved attributes of a callable object (None for a function)."""
    if found is None:
        return None
    if not isinstance(found, dict):
        refuse(field, "None or a dict of a callable object's attributes", found)
    return check_state(found, live, schema, field) if isinstance(live, dict) \
        else plain(found, field, schema)


def _same_keys(found: Any, live: Any, field: str, schema: Schema) -> Any:
    """A dict with exactly the live dict's keys (OneCycleLR's phases: step() reads each)."""
    if isinstance(live, dict) and (not isinstance(found, dict) or set(found) != set(live)):
        refuse(field, f"a dict with the keys {sorted(map(str, live))}", found)
    return check_state(found, live, schema, field)


_SCHEDULER_FIELDS: dict[str, Rule] = {
    "last_epoch": counter(lo=-1), "_step_count": counter(lo=0),
    **dict.fromkeys(("base_lrs", "_last_lr", "min_lrs", "max_lrs", "base_momentums",
                     "max_momentums"), each(_RATE)),
    "eta_min": _RATE, "default_min_lr": _RATE,
    "T_cur": real(lo=-1),  # fractional with step(epoch + i / iters), as torch documents
    # periods that step() divides by or takes a modulo of
    **dict.fromkeys(("step_size", "T_0", "T_i", "T_mult", "total_steps"), counter(lo=1)),
    "T_max": real(lo=0, lo_open=True),
    "end_step": real(),  # OneCycleLR phases: a float or an int
    "best": real(finite=False), "mode_worse": real(finite=False),  # ReduceLROnPlateau: inf
    "milestones": _milestones, "_scale_fn_custom": _same_none,
    "lr_lambdas": each(_callable_state), "_schedule_phases": each(_same_keys),
}

# Names whose meaning differs per scheduler class ("mode"): rules by class.
_BY_CLASS: tuple[tuple[type, dict[str, Rule]], ...] = (
    (lr_scheduler.ReduceLROnPlateau, {"mode": choice("min", "max"),
                                      "threshold_mode": choice("rel", "abs")}),
    (lr_scheduler.CyclicLR, {"mode": choice("triangular", "triangular2", "exp_range"),
                             "scale_mode": choice("cycle", "iterations"),
                             "total_size": real(lo=0, lo_open=True),
                             "step_ratio": real(lo=0, hi=1, lo_open=True)}),
    (lr_scheduler.PolynomialLR, {"total_iters": counter(lo=1), "power": real(lo=0)}),
    (lr_scheduler.OneCycleLR, {"_anneal_func_type": choice("cos", "linear"),
                               **dict.fromkeys(("start_lr", "end_lr"),
                                               choice("initial_lr", "max_lr", "min_lr")),
                               **dict.fromkeys(("start_momentum", "end_momentum"),
                                               choice("max_momentum", "base_momentum"))}),
    (swa_utils.SWALR, {"_anneal_strategy": choice("cos", "linear")}),
)


def is_scheduler(obj: Any) -> bool:
    return isinstance(obj, (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau))


def check_scheduler_state(scheduler: Any, found: Any, field: str = "") -> dict[str, Any]:
    """The state to land in a torch LR scheduler: its live ``state_dict()``'s types, the
    rules above, and no key that would replace one of its other attributes (torch's
    ``load_state_dict`` is ``__dict__.update``: ``"optimizer"`` would replace the optimizer)."""
    live = scheduler.state_dict()
    if not isinstance(found, dict):
        refuse(field, "a dict (a scheduler's state)", found)
    for key in found:
        if key not in live and (not isinstance(key, str) or hasattr(scheduler, key)):
            refuse(f"{field}[{key!r}]" if field else repr(key),
                   f"one of the keys of {type(scheduler).__name__}'s state", key)
    fields = dict(_SCHEDULER_FIELDS)
    for cls, extra in _BY_CLASS:
        if isinstance(scheduler, cls):
            fields.update(extra)
    state = check_state(found, live, Schema(fields=fields), field)
    nested = getattr(scheduler, "_schedulers", None)  # SequentialLR, ChainedScheduler
    if isinstance(nested, list) and "_schedulers" in state:
        prefix = f"{field}._schedulers" if field else "_schedulers"
        state["_schedulers"] = [check_scheduler_state(s, f, f"{prefix}[{i}]")
                                for i, (s, f) in enumerate(zip(nested, state["_schedulers"]))]
    return state


# --- GradScaler ----------------------------------------------------------------------------

GRAD_SCALER = Schema(fields={
    # kept in a float32 tensor: a smaller scale is 0 there, a larger one inf
    "scale": real(lo=_FLOAT32.tiny, hi=_FLOAT32.max),
    "growth_factor": real(lo=1, lo_open=True),
    "backoff_factor": real(lo=0, hi=1, lo_open=True, hi_open=True),
    "growth_interval": counter(lo=1),
    "_growth_tracker": counter(lo=0, hi=2 ** 31 - 1),  # an int32 tensor in the scaler
})


def is_grad_scaler(obj: Any) -> bool:
    return isinstance(obj, torch.amp.GradScaler)


def check_grad_scaler_state(scaler: torch.amp.GradScaler, found: Any) -> Any:
    """The state to land in a ``GradScaler``; every key its live state has must be there
    (torch reads them one by one, setting each as it goes). A disabled scaler ignores
    its state, so anything is accepted for one."""
    live = scaler.state_dict()
    if not live:
        return found
    if not isinstance(found, dict):
        refuse("", "a dict (a GradScaler's state)", found)
    for key in live:
        if key not in found:
            raise InvalidValueError("missing (torch's GradScaler reads every field)", field=key)
    return check_state(found, live, GRAD_SCALER)


def check_known_state(obj: Any, found: Any) -> Any:
    """``found`` checked for ``obj`` if it is a torch scheduler or ``GradScaler``; other
    objects' state is returned unchecked (their ``load_state_dict`` checks it)."""
    if is_scheduler(obj):
        return check_scheduler_state(obj, found)
    if is_grad_scaler(obj):
        return check_grad_scaler_state(obj, found)
    return found

