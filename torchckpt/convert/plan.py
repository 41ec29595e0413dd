"""Pair torch modules with checkpoint variables, collect the results, and apply them.

A torch model is cut into *units*: in registration order (``named_modules``),
each module with a registered layout takes its whole subtree (an
``nn.MultiheadAttention`` with its ``out_proj``); any other module holding
parameters or buffers directly is a unit with the generic layout, and plain
containers are walked through. Every ``state_dict`` name belongs to one unit.

In Keras mode :func:`match_in_order` pairs units with weight groups in order;
:mod:`.assignment` pairs them by name. Either way each unit's
:class:`~.transforms.UnitPlan` is folded into a :class:`Plan`, checked, and only
then :func:`apply`\\ d, so a strict failure leaves the module untouched.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..errors import MismatchError
from .keras_layers import WeightGroup
from .layouts import ConvLayout, Layout, normalize_role, state_names
from .registry import GENERIC, LayoutRegistry
from .report import Mismatch
from .source import Source, SourceVar
from .transforms import Assignment, UnitPlan

# Keras' default epsilon of BatchNormalization and LayerNormalization (torch's is 1e-5).
_KERAS_NORM_EPSILON = 1e-3


@dataclass(frozen=True, slots=True)
class Unit:
    """A torch module and the ``state_dict`` names it owns (full names)."""

    name: str
    module: nn.Module
    layout: Layout
    state: tuple[str, ...]

    def describe(self) -> str:
        return f"'{self.name or '(root)'}' ({type(self.module).__name__})"


@dataclass
class Plan:
    """Everything decided before any value is copied (see :class:`.report.ConversionReport`)."""

    assignments: list[Assignment] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    unmatched_checkpoint: dict[str, str] = field(default_factory=dict)
    unmatched_module: dict[str, str] = field(default_factory=dict)
    ignored_module: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Keras mode: each unit and the weight group it took (a SeparableConv's group twice).
    paired: list[tuple[Unit, WeightGroup]] = field(default_factory=list)

    def add(self, units: Sequence[Unit], offered: Sequence[SourceVar], result: UnitPlan) -> None:
        """Fold one unit's plan in; ``offered`` are the checkpoint variables it was given."""
        if result.problems:
            reason = "; ".join(result.problems)
            targets = tuple(n for u in units for n in u.state if n not in result.ignored)
            self.mismatched.append(Mismatch(targets, tuple(v.key for v in offered), reason))
            for name in targets:
                self.unmatched_module[name] = "its checkpoint layer does not fit (see mismatched)"
            for var in offered:
                self.unmatched_checkpoint[var.key] = (f"does not fit {units[0].describe()} "
                                                      "(see mismatched)")
            return
        self.assignments += result.assignments
        self.unmatched_module.update(result.unfilled)
        self.unmatched_checkpoint.update(result.unused)
        self.ignored_module.update(result.ignored)
        self.notes += result.notes

    def check_dtypes(self, module: nn.Module) -> None:
        state = module.state_dict(keep_vars=True)
        for a in self.assignments:
            target = state[a.target]
            for var in a.sources:
                if var.dtype != target.dtype:
                    self.notes.append(f"'{a.target}' is {target.dtype}; '{var.key}' is stored as "
                                      f"{var.dtype} and is cast")


def target_units(root: nn.Module, registry: LayoutRegistry) -> list[Unit]:
    """The units of ``root`` in registration order."""
    units: list[Unit] = []
    covered: list[str] = []
    for name, module in root.named_modules():
        if any(c == "" or name == c or name.startswith(c + ".") for c in covered):
            continue
        layout = registry.lookup(module)
        own = state_names(module, recurse=layout is not None)
        if not own:
            continue
        if layout is not None:
            covered.append(name)
        units.append(Unit(name, module, layout or GENERIC,
                          tuple(f"{name}.{n}" if name else n for n in own)))
    return units


def roles_or_problem(layout: Layout, module: nn.Module,
                     groups: Sequence[WeightGroup]) -> tuple[dict[str, SourceVar], str | None]:
    """The roles of the groups' variables, or why they are ambiguous (two share a role)."""
    roles = layout.roles_from_groups(module, groups)
    if len(roles) == sum(len(g.vars) for g in groups):
        return roles, None
    return roles, ("two variables take the same role in " +
                   ", ".join(g.describe() for g in groups))


def match_in_order(units: Sequence[Unit], groups: Sequence[WeightGroup], plan: Plan) -> None:
    """Pair units with weight groups in order (Keras mode), folding each result into ``plan``."""
    i = j = 0
    while i < len(units) and j < len(groups):
        unit = units[i]
        if _separable_pair(units, i, groups[j]):
            _plan_separable(units[i], units[i + 1], groups[j], plan)
            i, j = i + 2, j + 1
            continue
        n = unit.layout.groups_needed(unit.module)
        taken = groups[j:j + n]
        offered = [v for g in taken for v in g.vars]
        if len(taken) < n:
            plan.add([unit], offered, UnitPlan(problems=[
                f"{unit.describe()} needs {n} TF objects, only {len(taken)} are left"]))
        else:
            roles, problem = roles_or_problem(unit.layout, unit.module, taken)
            result = (UnitPlan(problems=[problem]) if problem
                      else unit.layout.plan(unit.name, unit.module, roles))
            plan.add([unit], offered, result)
            if not result.problems:
                _note_epsilon(unit, plan)
                plan.paired += [(unit, g) for g in taken]
        i, j = i + 1, j + n
    for unit in units[i:]:
        for name in unit.state:
            plan.unmatched_module[name] = ("no checkpoint layer left to match: the checkpoint "
                                           "has fewer weight-holding layers than the module")
    for group in groups[j:]:
        for var in group.vars:
            plan.unmatched_checkpoint[var.key] = ("no torch module left to match: the module has "
                                                  "fewer weight-holding layers than the checkpoint")


def _note_epsilon(unit: Unit, plan: Plan) -> None:
    """Keras checkpoints do not store epsilon, and Keras and torch defaults differ."""
    eps = getattr(unit.module, "eps", None)
    keras = ("LayerNormalization" if isinstance(unit.module, nn.LayerNorm)
             else "BatchNormalization")
    if isinstance(unit.module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)) and \
            eps is not None and abs(eps - _KERAS_NORM_EPSILON) > 1e-12:
        plan.notes.append(f"{unit.describe()}: TF checkpoints do not store epsilon; torch uses "
                          f"eps={eps:g}, Keras {keras} defaults to {_KERAS_NORM_EPSILON:g}: "
                          "make sure it equals the Keras layer's epsilon")


def _separable_pair(units: Sequence[Unit], i: int, group: WeightGroup) -> bool:
    names = {normalize_role(v.name) for v in group.vars}
    return ({"depthwise_kernel", "pointwise_kernel"} <= names and i + 1 < len(units)
            and isinstance(units[i].layout, ConvLayout)
            and isinstance(units[i + 1].layout, ConvLayout))


def _plan_separable(depthwise: Unit, pointwise: Unit, group: WeightGroup, plan: Plan) -> None:
    """SeparableConvND -> a depthwise ConvNd (bias=False) followed by a 1x1 ConvNd."""
    roles = {normalize_role(v.name): v for v in group.vars}
    first = {"depthwise_kernel": roles.pop("depthwise_kernel")}  # the bias follows the pointwise
    one = depthwise.layout.plan(depthwise.name, depthwise.module, first)
    two = pointwise.layout.plan(pointwise.name, pointwise.module, roles)
    if one.problems or two.problems:
        plan.add([depthwise, pointwise], group.vars, UnitPlan(problems=one.problems + two.problems))
        return
    plan.add([depthwise], [], one)
    plan.add([pointwise], [], two)
    plan.paired += [(depthwise, group), (pointwise, group)]


def apply(module: nn.Module, assignments: Sequence[Assignment], source: Source) -> None:
    """Compute and copy every planned value into ``module`` (under ``torch.no_grad``).

    Raises:
        MismatchError: a transform gave an unexpected shape (a layout bug).
        ChecksumMismatchError, CorruptCheckpointError: a value could not be read.
    """
    state = module.state_dict(keep_vars=True)
    uses = Counter(v.key for a in assignments for v in a.sources)
    cache: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for a in assignments:
            inputs = []
            for var in a.sources:
                value = cache.get(var.key)
                if value is None:
                    value = source.read(var.key)
                    if uses[var.key] > 1:
                        cache[var.key] = value
                inputs.append(value)
                uses[var.key] -= 1
                if uses[var.key] == 0:
                    cache.pop(var.key, None)
            out = a.transform(inputs)
            target = state[a.target]
            if out.shape != target.shape:
                raise MismatchError(a.target, "shape", saved=list(out.shape),
                                    live=list(target.shape))
            target.copy_(out)
