"""Convert TensorFlow checkpoints into torch modules (and optimizers).

:func:`load_tf_weights` reads a TF checkpoint (Keras 2, Keras 3, ``tf.Module``
or TF1 name-based) into a torch module, converting each value's layout by the
type of the torch module it lands in, and returns a :class:`ConversionReport`.

How values are paired:

* **Object-based checkpoint, no assignment map** ("keras" mode): the object
  graph is walked (:mod:`.keras_layers`) for the layers that hold weights, in
  model order, and they are paired with the torch module's weight-holding
  submodules in registration order (:mod:`.plan`); kinds and shapes are checked.
* **An assignment map** ("assignment_map" mode): regular expressions over
  checkpoint names, like ``tf.compat.v1.train.init_from_checkpoint``
  (:mod:`.assignment`).
* **Name-based checkpoint, no map** ("names" mode): TF scopes are matched to
  torch module names (``classifier/fc_0/weights`` -> ``classifier.fc_0.weight``),
  as with the map ``{"/": ""}``.

The kernel rows of a Dense that reads a Keras ``Flatten`` of a convolution's
channels-last output are reordered for ``torch.flatten`` (:mod:`.flatten`).

Internal modules, no stability guarantee; the public names are the ones below.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import torch
from torch import nn

from ..errors import ConversionError
from .assignment import (
    AssignmentMap,
    AssignmentResolver,
    check_rules_used,
    closest_to_name,
    parse_assignment_map,
    rename,
)
from .export import save_state_dict
from .flatten import FLATTEN_ORDERS, FlattenOrder, check_flatten_order, plan_flatten
from .keras_layers import GraphLayout, find_weight_groups
from .layouts import Layout
from .optimizer_state import (
    OptimizerPlan,
    SlotIndex,
    apply_optimizer,
    index_graph,
    index_name_based,
    plan_optimizer,
)
from .plan import Plan, Unit, apply, match_in_order, target_units
from .registry import LayoutRegistry, default_layouts
from .report import ConversionReport, Match, Mismatch
from .source import Source, not_a_weight
from .transforms import Transform

__all__ = ["load_tf_weights", "convert_tf_checkpoint", "ConversionReport", "Match", "Mismatch",
           "Layout", "LayoutRegistry", "Transform", "default_layouts", "parse_assignment_map",
           "rename", "save_state_dict", "FLATTEN_ORDERS"]

# Unmatched torch names that get "closest keys" suggestions in a strict failure (each costs
# a similarity scan over the unmatched keys).
_SUGGESTED = 20


def load_tf_weights(module: nn.Module, path: str | os.PathLike[str], *,
                    assignment_map: AssignmentMap | None = None, strict: bool = True,
                    optimizer: torch.optim.Optimizer | None = None,
                    layouts: LayoutRegistry | None = None,
                    flatten_order: FlattenOrder = "channels_first") -> ConversionReport:
    """Load a TensorFlow checkpoint into ``module`` (and its optimizer's state).

    Everything is planned and checked before anything is written: with
    ``strict=True`` a failure leaves ``module`` and ``optimizer`` untouched.

    Args:
        module: the torch model to fill.
        path: a checkpoint prefix (``.../ckpt-3``), a directory (its latest
            checkpoint) or a bundle file name.
        assignment_map: ``(pattern, target)`` pairs (a dict or a list): a regular
            expression that must match a whole checkpoint name, and a
            ``state_dict`` name that may use its groups (``\\1``); a pattern
            ending in ``/`` maps a scope onto a module; a ``None`` target skips.
            See :mod:`torchckpt.convert.assignment`.
        strict: raise if anything is unmatched on either side (optimizer state
            included when ``optimizer`` is given).
        optimizer: a ``torch.optim`` Adam, AdamW, SGD or RMSprop over
            ``module``'s parameters; the checkpoint's slot variables become its
            state (``exp_avg``, ``exp_avg_sq``, ``step``, ``momentum_buffer``,
            ``square_avg``), converted like their weights.
        layouts: the layout registry (default: :func:`default_layouts`); register
            a :class:`Layout` there for custom modules.
        flatten_order: how the torch model flattens a convolution's output before
            a Linear. ``"channels_first"`` (default): ``torch.flatten`` of
            ``[N, C, H, W]``, so the rows of a Dense kernel that the object graph
            shows reading a Keras ``Flatten`` (Keras Sequential and Functional
            models) are reordered from Keras' (H, W, C) order to (C, H, W).
            ``"channels_last"``: the torch model permutes to ``[N, H, W, C]``
            before flattening, as Keras does; rows are kept. A dict
            ``{linear_module_name: order}`` decides per Linear, and also where the
            graph cannot tell (subclassed models, which get a warning instead).

    Returns:
        The :class:`ConversionReport`: matched pairs with their transforms,
        unmatched names on each side, skipped keys, notes, and warnings (each
        also issued as a ``UserWarning``: outputs may differ although names matched).

    Raises:
        ConversionError: ``strict`` and something is unmatched; the message lists it,
            with the closest checkpoint keys of unmatched torch names; or
            ``flatten_order`` is not a valid order.
        AssignmentMapError: the assignment map is malformed, or none of its
            patterns matches a checkpoint key (the message names the closest keys).
        CheckpointNotFoundError, CorruptCheckpointError: the checkpoint cannot be read.

    Example:
        >>> import torchckpt
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> report = torchckpt.convert.load_tf_weights(model, keras_prefix)
        >>> report.transforms["0.weight"]
        'transpose(1, 0)'
    """
    registry = layouts if layouts is not None else default_layouts()
    check_flatten_order(flatten_order)
    with Source(path) as source:
        units = target_units(module, registry)
        plan, index, optimizer_keys, mode = _plan(module, units, source, assignment_map)
        plan_flatten(plan, units, source.graph, flatten_order)
        plan.check_dtypes(module)
        if mode != "keras":
            _suggest_keys(plan)
        opt_plan = (plan_optimizer(optimizer, module, plan.assignments, index, source)
                    if optimizer is not None else None)
        report = _report(source.prefix, mode, plan)
        _fold_optimizer(report, opt_plan, index, optimizer_keys)
        if strict and not report.ok:
            raise ConversionError(
                f"converting '{source.prefix}' into {type(module).__name__} left names unmatched "
                f"(strict=True):\n{report.problems()}\npass strict=False to load what matched, "
                "or an assignment_map to pair the names",
                unused_in_checkpoint=[*report.unmatched_checkpoint],
                unmatched_live=[*report.unmatched_module, *report.unmatched_optimizer],
                report=report)
        apply(module, plan.assignments, source)
        if optimizer is not None and opt_plan is not None:
            apply_optimizer(optimizer, opt_plan, source)
    for text in report.warnings:  # outputs may differ although every name matched
        warnings.warn(text, UserWarning, stacklevel=2)
    return report


def _plan(module: nn.Module, units: list[Unit], source: Source,
          assignment_map: AssignmentMap | None) -> tuple[Plan, SlotIndex, list[str], str]:
    plan = Plan()
    if source.graph is not None:
        layout = find_weight_groups(source)
        index, optimizer_keys = index_graph(source, layout), layout.optimizer_keys
        plan.skipped.update(layout.bookkeeping)
        if assignment_map is None:
            plan.unmatched_checkpoint.update(layout.stray)
            match_in_order(units, layout.groups, plan)
            return plan, index, optimizer_keys, "keras"
        candidates = _weights(source, layout, optimizer_keys)
    else:
        index, optimizer_keys = index_name_based(source, list(source.vars))
        candidates = _weights(source, None, optimizer_keys)
        for key, var in source.vars.items():
            if key not in optimizer_keys and not var.is_float:
                plan.skipped[key] = not_a_weight(var)
    rules = parse_assignment_map(assignment_map if assignment_map is not None else [("/", "")])
    resolver = AssignmentResolver(module, units, rules)
    for key in candidates:
        resolver.offer(source.vars[key], plan)
    if assignment_map is not None:
        plan.warnings += check_rules_used(rules, list(source.vars))
    resolver.plan_units(plan)
    return plan, index, optimizer_keys, "assignment_map" if assignment_map is not None else "names"


def _weights(source: Source, layout: GraphLayout | None,
             optimizer_keys: Sequence[str]) -> list[str]:
    """Float keys that are not optimizer state or bookkeeping, in key order."""
    excluded = set(optimizer_keys) | (set(layout.bookkeeping) if layout else set())
    return [k for k, v in source.vars.items() if v.is_float and k not in excluded]


def _suggest_keys(plan: Plan) -> None:
    """Name the closest unmatched checkpoint keys of the first unmatched torch names."""
    keys = list(plan.unmatched_checkpoint)
    if not keys:
        return
    for name in list(plan.unmatched_module)[:_SUGGESTED]:
        plan.unmatched_module[name] += f" (closest unmatched keys: {closest_to_name(name, keys)})"


def _report(prefix: str, mode: str, plan: Plan) -> ConversionReport:
    return ConversionReport(
        path=prefix, mode=mode,
        matched=[Match(a.target, tuple(v.key for v in a.sources), a.transform.description)
                 for a in plan.assignments],
        mismatched=list(plan.mismatched), unmatched_checkpoint=dict(plan.unmatched_checkpoint),
        unmatched_module=dict(plan.unmatched_module), skipped=dict(plan.skipped),
        ignored_module=dict(plan.ignored_module), notes=list(dict.fromkeys(plan.notes)),
        warnings=list(dict.fromkeys(plan.warnings)))


def _fold_optimizer(report: ConversionReport, opt_plan: OptimizerPlan | None, index: SlotIndex,
                    optimizer_keys: Sequence[str]) -> None:
    slot_keys = {s.key for slots in index.slots.values() for s in slots.values()}
    if opt_plan is None:
        for key in optimizer_keys:
            report.skipped[key] = "optimizer state: pass optimizer= to convert it"
        return
    report.optimizer_matched = list(opt_plan.matched)
    report.unmatched_optimizer = dict(opt_plan.unmatched)
    report.notes += opt_plan.notes
    for key in optimizer_keys:
        if key in opt_plan.used_keys:
            continue
        if key in slot_keys:
            report.unmatched_checkpoint[key] = "optimizer slot of a weight whose state was not " \
                                               "converted"
        else:
            report.skipped[key] = "optimizer hyperparameter or counter (compared in notes)"


#: The same function under the name ``torchckpt`` re-exports (code-style P15).
convert_tf_checkpoint = load_tf_weights
