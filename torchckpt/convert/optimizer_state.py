"""Optimizer state: TF slot variables -> a torch optimizer's ``state``, so training resumes.

Where TF keeps the state of a variable (found through the object graph, or by
TF1 key suffix):

=============================  ===================================================
optimizer                      state of variable ``w``
=============================  ===================================================
tf-keras legacy (Keras 2)      ``slot_variables`` of the optimizer node: ``m``, ``v``,
                               ``vhat``, ``momentum``, ``rms``, ``mg``; counter ``iter``
tf-keras / Keras 3 default     lists ``(_)momentums``, ``_velocities``,
                               ``_velocity_hats``, ``_average_gradients``; item
                               ``i`` belongs to ``_trainable_variables/i`` (Keras 3)
                               or to the variable whose ``full_name`` ends the
                               slot's (``Adam/m/dense/kernel``); counter ``_iterations``
TF1 ``tf.compat.v1.train``     keys ``w/Adam``, ``w/Adam_1``, ``w/Momentum``,
                               ``w/RMSProp``, ``w/RMSProp_1`` (``_2`` if centered);
                               ``beta1_power``, ``global_step``
BERT ``AdamWeightDecay``       ``w/adam_m``, ``w/adam_v``; ``global_step``
=============================  ===================================================

How the values map (``lr`` is the checkpoint's learning rate, else torch's):

* Adam/AdamW: ``exp_avg`` = m, ``exp_avg_sq`` = v, ``max_exp_avg_sq`` = vhat,
  ``step`` = iterations (TF1: from ``beta1_power``, which is beta1^(t+1)).
* SGD: Keras stores the velocity ``m = momentum*m - lr*g`` so
  ``momentum_buffer = -m / lr``; TF1 Momentum stores ``accum = momentum*accum + g``,
  which is torch's buffer as is.
* RMSprop: ``square_avg`` = rms, ``grad_avg`` = mg, and Keras and TF1 fold the
  learning rate into the momentum, so ``momentum_buffer = momentum / lr``.

Each slot goes through the same layout transform as its variable (a Dense
kernel's ``m`` is transposed like the kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .keras_layers import GraphLayout
from .report import Match
from .source import Source, SourceVar
from .transforms import Assignment, Transform, output_shape

TF1_SLOTS = frozenset({"Adam", "Adam_1", "Momentum", "RMSProp", "RMSProp_1", "RMSProp_2",
                       "adam_m", "adam_v"})
TF1_GLOBALS = frozenset({"global_step", "beta1_power", "beta2_power"})
# Per-variable state lists of the new optimizers (tf-keras SGD names it "momentums",
# Adam "_momentums"): matched without the leading underscore.
_LISTS = ("momentums", "velocities", "velocity_hats", "average_gradients")
_HYPER = {"learning_rate", "beta_1", "beta_2", "decay", "momentum", "rho"}


@dataclass
class SlotIndex:
    """Optimizer state found in a checkpoint.

    Attributes:
        slots: model variable key -> slot name -> slot variable.
        flavor: ``"keras"`` (velocities include the learning rate) or ``"tf1"``.
        iterations: the optimizer's step counter, if it has one.
        hyper: hyperparameter variables by Keras name (``learning_rate``, ``beta_1``...).
        global_step, beta1_power: TF1 counters.
    """

    slots: dict[str, dict[str, SourceVar]] = field(default_factory=dict)
    flavor: str = "tf1"
    iterations: SourceVar | None = None
    hyper: dict[str, SourceVar] = field(default_factory=dict)
    global_step: SourceVar | None = None
    beta1_power: SourceVar | None = None


def index_name_based(source: Source, keys: Sequence[str]) -> tuple[SlotIndex, list[str]]:
    """TF1 slots (``<var>/Adam``) and counters among ``keys``, and the keys they take."""
    index, used = SlotIndex(), []
    for key in keys:
        base, _, last = key.rpartition("/")
        if last in TF1_SLOTS and base in source.vars:
            index.slots.setdefault(base, {})[last] = source.vars[key]
            used.append(key)
        elif last in TF1_GLOBALS:
            if last == "global_step":
                index.global_step = source.vars[key]
            elif last == "beta1_power":
                index.beta1_power = source.vars[key]
            used.append(key)
    return index, used


def index_graph(source: Source, layout: GraphLayout) -> SlotIndex:
    """Find the slots of every optimizer node of an object-based checkpoint."""
    graph = source.graph
    assert graph is not None
    index = SlotIndex()
    by_full_name = {v.full_name: v for g in layout.groups for v in g.vars if v.full_name}
    for opt in layout.optimizers:
        node = graph.nodes[opt]
        children = {c.local_name: c.node_id for c in node.children}
        for ref in node.slot_variables:
            owner = source.variable_of_node(ref.original_variable_node_id)
            slot = source.variable_of_node(ref.slot_variable_node_id)
            if owner is not None and slot is not None:
                index.slots.setdefault(owner.key, {})[ref.slot_name] = slot
        owners = _list_owners(source, children, by_full_name)
        lists = {name.lstrip("_"): node_id for name, node_id in children.items()}
        for list_name in _LISTS:
            for i, slot in enumerate(_list_items(source, lists.get(list_name))):
                owner = owners(i, slot)
                if owner is not None and slot is not None:
                    index.slots.setdefault(owner.key, {})[list_name] = slot
        for name, node_id in children.items():
            var = source.variable_of_node(node_id)
            if var is None:
                continue
            if name in ("iter", "_iterations", "iterations"):
                index.iterations, index.flavor = var, "keras"
            elif name.lstrip("_") in _HYPER:
                index.hyper[name.lstrip("_")] = var
    return index


def _list_items(source: Source, node_id: int | None) -> list[SourceVar | None]:
    if node_id is None or source.graph is None:
        return []
    return [source.variable_of_node(c.node_id) for c in source.graph.nodes[node_id].children]


def _list_owners(source: Source, children: dict[str, int], by_full_name: dict[str, SourceVar]
                 ) -> Callable[[int, SourceVar | None], SourceVar | None]:
    """``(i, slot) -> model variable`` for the new optimizers' per-variable lists."""
    trainable = _list_items(source, children.get("_trainable_variables"))

    def owner(i: int, slot: SourceVar | None) -> SourceVar | None:
        if trainable:  # Keras 3: item i of every list belongs to _trainable_variables/i
            return trainable[i] if i < len(trainable) else None
        if slot is None or slot.full_name.count("/") < 2:
            return None
        return by_full_name.get(slot.full_name.split("/", 2)[2])  # "Adam/m/<variable>"
    return owner


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    slots: tuple[str, ...]
    scale: str = ""  # "" | "-1/lr" | "1/lr"


@dataclass
class OptimizerPlan:
    """Torch optimizer state to set, per parameter index of ``optimizer.state_dict()``."""

    state: dict[int, dict[str, tuple[tuple[SourceVar, ...], Transform]]] = field(
        default_factory=dict)
    step: float | None = None
    matched: list[Match] = field(default_factory=list)
    unmatched: dict[str, str] = field(default_factory=dict)
    used_keys: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _fields(optimizer: torch.optim.Optimizer, group: dict[str, Any],
            flavor: str) -> list[_Field] | str:
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        out = [_Field("exp_avg", ("m", "momentums", "Adam", "adam_m")),
               _Field("exp_avg_sq", ("v", "velocities", "Adam_1", "adam_v"))]
        if group.get("amsgrad"):
            out.append(_Field("max_exp_avg_sq", ("vhat", "velocity_hats")))
        return out
    if isinstance(optimizer, torch.optim.SGD):
        if not group.get("momentum"):
            return []
        return [_Field("momentum_buffer", ("momentum", "momentums", "Momentum"),
                       "-1/lr" if flavor == "keras" else "")]
    if isinstance(optimizer, torch.optim.RMSprop):
        centered = bool(group.get("centered"))
        out = [_Field("square_avg", ("rms", "velocities", "RMSProp"))]
        if group.get("momentum"):
            out.append(_Field("momentum_buffer", ("momentum", "momentums",
                                                  "RMSProp_2" if centered else "RMSProp_1"),
                              "1/lr"))
        if centered:
            out.append(_Field("grad_avg", ("mg", "average_gradients", "RMSProp_1")))
        return out
    return (f"{type(optimizer).__name__} state cannot be converted (supported: Adam, AdamW, "
            "SGD, RMSprop)")


def plan_optimizer(optimizer: torch.optim.Optimizer, module: nn.Module,
                   assignments: Sequence[Assignment], index: SlotIndex,
                   source: Source) -> OptimizerPlan:
    """Decide every torch optimizer state entry from the checkpoint's slots (nothing is read
    except scalar hyperparameters)."""
    out = OptimizerPlan()
    names = {id(p): n for n, p in module.named_parameters()}
    by_target = {a.target: a for a in assignments}
    lr_ckpt = _scalar(source, index.hyper.get("learning_rate"))
    position = 0
    for group in optimizer.param_groups:
        fields = _fields(optimizer, group, index.flavor)
        lr = lr_ckpt if lr_ckpt is not None else float(group["lr"])
        for param in group["params"]:
            name = names.get(id(param), f"parameter #{position}")
            if isinstance(fields, str):
                out.unmatched[name] = fields
            elif fields:
                _plan_param(out, position, name, param, by_target.get(name), fields, index, lr)
            position += 1
    if out.state:
        out.step = _step(optimizer, index, source, out)
        if any(m.sources and m.sources[0].endswith("/adam_m") for m in out.matched):
            out.notes.append("BERT's AdamWeightDecayOptimizer has no bias correction; torch "
                             "Adam/AdamW does, so resumed updates differ in their first steps")
        _compare_hyper(optimizer, index, source, out)
    return out


def _plan_param(out: OptimizerPlan, position: int, name: str, param: torch.Tensor,
                assignment: Assignment | None, fields: Sequence[_Field], index: SlotIndex,
                lr: float) -> None:
    if assignment is None:
        out.unmatched[name] = "no weight was converted into this parameter"
        return
    entries: dict[str, tuple[tuple[SourceVar, ...], Transform]] = {}
    for f in fields:
        found = _field_sources(assignment, f, index)
        if isinstance(found, str):
            out.unmatched[f"{name}.{f.name}"] = found
            return
        transform = _scaled(assignment.transform, f.scale, lr, bool(found))
        if found and output_shape(transform, found) != tuple(param.shape):
            out.unmatched[f"{name}.{f.name}"] = "slot shapes do not fit the parameter"
            return
        entries[f.name] = (found, transform)
    out.state[position] = entries
    for fname, (sources, transform) in entries.items():
        out.matched.append(Match(f"optimizer.state[{name}].{fname}",
                                 tuple(v.key for v in sources), transform.description))
        out.used_keys.update(v.key for v in sources)


def _field_sources(assignment: Assignment, f: _Field,
                   index: SlotIndex) -> tuple[SourceVar, ...] | str:
    if assignment.transform.is_constant:
        return ()
    found = []
    for var in assignment.sources:
        slots = index.slots.get(var.key, {})
        slot = next((slots[s] for s in f.slots if s in slots), None)
        if slot is None:
            have = ", ".join(sorted(slots)) or "none"
            return f"no {'/'.join(f.slots)} slot for '{var.key}' (slots found: {have})"
        found.append(slot)
    return tuple(found)


def _scaled(base: Transform, scale: str, lr: float, has_sources: bool) -> Transform:
    if not has_sources:
        def zeros(xs: Sequence[torch.Tensor]) -> torch.Tensor:
            return torch.zeros_like(base(xs))
        return Transform("zeros (the weight is a constant)", zeros)
    if not scale:
        return base
    factor = -1.0 / lr if scale == "-1/lr" else 1.0 / lr

    def scaled(xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return base(xs) * factor
    return Transform(f"{base.description}, times {scale} (lr={lr:g})", scaled)


def _scalar(source: Source, var: SourceVar | None) -> float | None:
    if var is None:
        return None
    return float(source.read(var.key).reshape(-1)[0])


def _step(optimizer: torch.optim.Optimizer, index: SlotIndex, source: Source,
          out: OptimizerPlan) -> float:
    if index.iterations is not None:
        _step_from(out, index.iterations, "the optimizer's iteration counter")
        return _scalar(source, index.iterations) or 0.0
    beta1 = optimizer.param_groups[0].get("betas", (None,))[0]
    b1p = _scalar(source, index.beta1_power)
    if b1p is not None and beta1 and 0 < b1p < 1 and 0 < beta1 < 1:
        assert index.beta1_power is not None
        _step_from(out, index.beta1_power, f"log(beta1_power) / log({beta1:g}) - 1")
        return float(round(math.log(b1p) / math.log(beta1)) - 1)  # beta1_power = beta1^(t+1)
    if index.global_step is not None:
        _step_from(out, index.global_step, "global_step")
        return _scalar(source, index.global_step) or 0.0
    out.notes.append("no step counter in the checkpoint: optimizer step set to 0")
    return 0.0


def _step_from(out: OptimizerPlan, var: SourceVar, how: str) -> None:
    out.used_keys.add(var.key)
    out.matched.append(Match("optimizer.state[*].step", (var.key,), how))


def _compare_hyper(optimizer: torch.optim.Optimizer, index: SlotIndex, source: Source,
                   out: OptimizerPlan) -> None:
    group = optimizer.param_groups[0]
    pairs = [("learning_rate", group.get("lr"))]
    if "betas" in group:
        pairs += [("beta_1", group["betas"][0]), ("beta_2", group["betas"][1])]
    for name, live in pairs:
        saved = _scalar(source, index.hyper.get(name))
        if saved is not None and live is not None and not math.isclose(saved, float(live),
                                                                       rel_tol=1e-6):
            out.notes.append(f"checkpoint {name} is {saved:g}, torch optimizer uses {live:g}")
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        out.notes.append("TF's Adam adds epsilon before bias correction, torch's after: with "
                         "equal eps, updates differ by about eps/sqrt(v)")
    elif isinstance(optimizer, torch.optim.RMSprop):
        out.notes.append("TF's RMSprop adds epsilon inside the square root (sqrt(ms + eps)), "
                         "torch's outside (sqrt(ms) + eps): updates match only when eps is "
                         "negligible against sqrt(ms)")


def apply_optimizer(optimizer: torch.optim.Optimizer, plan: OptimizerPlan, source: Source) -> None:
    """Read the planned slots and load them with ``optimizer.load_state_dict``.

    ``load_state_dict`` casts each value to its parameter's dtype and device, as
    for any torch checkpoint; parameters without planned state keep theirs.
    """
    state_dict = optimizer.state_dict()
    for position, fields in plan.state.items():
        entry = {}
        for fname, (sources, transform) in fields.items():
            with torch.no_grad():
                entry[fname] = transform([source.read(v.key) for v in sources]).contiguous()
        if plan.step is not None and not isinstance(optimizer, torch.optim.SGD):
            entry["step"] = torch.tensor(float(plan.step), dtype=torch.float32)
        state_dict["state"][position] = entry
    optimizer.load_state_dict(state_dict)
