"""Assignment maps: checkpoint names -> torch ``state_dict`` names, like ``init_from_checkpoint``.

An assignment map is a dict or a list of ``(pattern, target)`` pairs, tried in
order; the first pattern that matches a checkpoint name wins.

* ``pattern`` is a regular expression that must match the whole name, and
  ``target`` a torch ``state_dict`` name that may use its groups (``\\1``,
  ``\\g<name>``): ``("bert/encoder/layer_(\\d+)/output/dense/kernel",
  r"encoder.\\1.out.weight")``. A target may also name a module with a layout
  (``encoder.0.attn``): the key then joins that module's values, its role
  taken from the key's names.
* A pattern ending in ``/`` maps a whole scope (it must match a prefix of
  the name that ends at a ``/``): ``("bert/encoder/", "encoder")`` maps
  ``bert/encoder/layer_0/attention/self/query/kernel`` by walking the torch
  modules ``encoder`` -> ``layer_0`` -> ... until a module with a layout
  takes the rest (``kernel``). ``layer_0`` also finds item 0 of a ``layer``
  ``ModuleList``. ``"/"`` is the root scope, as in TF.
* A ``None`` target skips what the pattern matches (a pretraining head).

For object-based checkpoints a pattern may be written against the key as
``list_variables`` and ``torchckpt inspect`` print it
(``model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE``) or against the short name
without that suffix (``model/dense/kernel``); a whole-name pattern is tried on
the short name first, then on the key, and a scope matches a prefix of the
short name. The layout of a value is converted by the type of the module it
lands in, exactly as without a map.

A map none of whose patterns matches any checkpoint key is an
:class:`~torchckpt.errors.AssignmentMapError` that names the closest keys; a
pattern that matches nothing while others do is reported as a warning.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Union

from torch import nn

from ..errors import AssignmentMapError
from ..graph.keys import OBJECT_ATTRIBUTES_NAME, VARIABLE_VALUE_KEY
from .layouts import normalize_role
from .plan import Plan, Unit
from .registry import GENERIC
from .source import SourceVar

AssignmentMap = Union[Mapping[str, Union[str, None]], Sequence[tuple[str, Union[str, None]]]]
_SUFFIX = f"/{OBJECT_ATTRIBUTES_NAME}/{VARIABLE_VALUE_KEY}"
_INDEXED = re.compile(r"(.+)_(\d+)")


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled ``(pattern, target)`` pair."""

    pattern: str
    regex: re.Pattern[str]
    target: str | None
    scope: bool


def parse_assignment_map(assignment_map: AssignmentMap) -> list[Rule]:
    """Compile an assignment map, keeping its order.

    Raises:
        AssignmentMapError: a pattern is not a valid regular expression, or an
            entry is not a pair of strings (the target may be ``None``).
    """
    items: Iterable[object] = (assignment_map.items() if isinstance(assignment_map, Mapping)
                               else assignment_map)
    rules = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
                and (item[1] is None or isinstance(item[1], str))):
            raise AssignmentMapError(f"assignment map entry {item!r} is not a (pattern, target) "
                                     "pair of strings")
        pattern, target = item
        try:
            regex = re.compile("" if pattern == "/" else pattern)
        except re.error as exc:
            raise AssignmentMapError(f"assignment map pattern {pattern!r} is not a valid "
                                     f"regular expression: {exc}") from exc
        rules.append(Rule(pattern, regex, target, pattern.endswith("/")))
    return rules


def variable_name(key: str) -> str:
    """The name patterns see: the key without ``/.ATTRIBUTES/VARIABLE_VALUE``."""
    return key[:-len(_SUFFIX)] if key.endswith(_SUFFIX) else key


def find_rule(rules: Sequence[Rule], name: str,
              key: str | None = None) -> tuple[Rule, str | None, str] | None:
    """The first rule matching ``name`` (or, for whole-name patterns, the printed ``key``):
    ``(rule, expanded target, rest below the scope)``."""
    for rule in rules:
        if rule.scope:
            m = rule.regex.match(name)
            if m is None or m.end() >= len(name) or (m.end() and name[m.end() - 1] != "/"):
                continue
            rest = name[m.end():]
        else:
            m = rule.regex.fullmatch(name)
            if m is None and key is not None and key != name:
                m = rule.regex.fullmatch(key)
            if m is None:
                continue
            rest = ""
        target = None if rule.target is None else m.expand(rule.target)
        return rule, target, rest
    return None


def rename(rules: Sequence[Rule], key: str) -> str | None:
    """The ``state_dict``-style name of ``key`` under ``rules`` (no module needed), or ``None``.

    Scopes keep the rest of the name with ``/`` turned into ``.``; a ``None``
    target or no matching rule gives ``None``.
    """
    found = find_rule(rules, variable_name(key), key)
    if found is None or found[1] is None:
        return None
    _, target, rest = found
    parts = [p for p in re.split(r"[/.]", target or "") if p] + [p for p in rest.split("/") if p]
    return ".".join(parts)


class AssignmentResolver:
    """Resolves checkpoint variables onto torch units through the rules.

    Collects, per unit, the roles it is offered; then :meth:`plan` lets each
    unit's layout plan its values (``complete`` only for whole scopes).
    """

    def __init__(self, root: nn.Module, units: Sequence[Unit], rules: Sequence[Rule]) -> None:
        self.rules = rules
        self.units = list(units)
        self.modules = dict(root.named_modules())
        self.by_module = {u.name: u for u in units}
        self.owner = {name: u for u in units for name in u.state}
        self.offers: dict[str, dict[str, SourceVar]] = {}
        self.partial: set[str] = set()  # units offered single parameters, not whole scopes

    def offer(self, var: SourceVar, plan: Plan) -> None:
        """Route one checkpoint variable to a unit role, or record why it cannot be."""
        name = variable_name(var.key)
        found = find_rule(self.rules, name, var.key)
        if found is None:
            plan.unmatched_checkpoint[var.key] = "no assignment-map pattern matches it"
            return
        rule, target, rest = found
        if target is None:
            plan.skipped[var.key] = f"the assignment map skips it (pattern {rule.pattern!r})"
            return
        where = (self._in_scope(target, rest.split("/")) if rule.scope
                 else self._at_target(target, name))
        if isinstance(where, str):
            plan.unmatched_checkpoint[var.key] = f"pattern {rule.pattern!r}: {where}"
            return
        unit, role, partial = where
        roles = self.offers.setdefault(unit.name, {})
        if role in roles:
            plan.unmatched_checkpoint[var.key] = (
                f"pattern {rule.pattern!r}: '{roles[role].key}' already gives role '{role}' of "
                f"{unit.describe()}")
            return
        roles[role] = var
        if partial:
            self.partial.add(unit.name)

    def _at_target(self, target: str, name: str) -> tuple[Unit, str, bool] | str:
        target = ".".join(p for p in re.split(r"[/.]", target) if p)
        hint = normalize_role(name.rsplit("/", 1)[-1])
        unit = self.owner.get(target)
        if unit is not None:
            param = target[len(unit.name) + 1:] if unit.name else target
            role = unit.layout.param_role(unit.module, param, hint)
            if role is None:
                return (f"'{target}' is made from several TF variables; map their scope onto "
                        f"'{unit.name}' instead")
            return unit, role, True
        unit = self.by_module.get(target)
        if unit is not None:
            return unit, unit.layout.role_of(unit.module, name.split("/")), False
        parent, _, leaf = target.rpartition(".")
        unit = self.by_module.get(parent)
        if unit is not None and leaf:  # "out.weights": TF's name for a parameter of 'out'
            role = unit.layout.param_role(unit.module, leaf, normalize_role(leaf))
            if role is not None:
                return unit, role, True
        return (f"target '{target}' is neither a parameter/buffer nor a module with "
                "parameters of the torch module")

    def _in_scope(self, target: str, rest: list[str]) -> tuple[Unit, str, bool] | str:
        path = ".".join(p for p in re.split(r"[/.]", target) if p)
        module = self.modules.get(path)
        if module is None:
            return f"scope target '{path}' is not a submodule"
        leaf = rest[-1]
        while True:
            unit = self.by_module.get(path)
            child = _child(module, rest[0]) if rest else None
            # A layout unit takes everything below it; a generic one (a module holding its
            # own parameters) only what it cannot hand on to a child module.
            if unit is not None and (unit.layout is not GENERIC or child is None):
                # rest is empty when the variable is named like its module (an embedding table)
                return unit, unit.layout.role_of(unit.module, rest or [leaf]), False
            if child is None:
                where = f"'{path or '(root)'}'"
                return (f"{where} has no submodule or parameter for '{rest[0]}'" if rest
                        else f"{where} holds no parameters")
            module, name = child
            path = f"{path}.{name}" if path else name
            rest = rest[1:]

    def plan_units(self, plan: Plan) -> None:
        """Let each offered unit's layout plan its values; report units nothing was mapped onto."""
        for unit in self.units:
            roles = self.offers.get(unit.name)
            if roles is None:
                for name in unit.state:
                    plan.unmatched_module[name] = "no checkpoint key is mapped onto it"
                continue
            result = unit.layout.plan(unit.name, unit.module, roles,
                                      complete=unit.name not in self.partial)
            plan.add([unit], list(roles.values()), result)


def check_rules_used(rules: Sequence[Rule], keys: Sequence[str]) -> list[str]:
    """:func:`dead_patterns` of ``rules`` over ``keys`` (for renaming without a module)."""
    hits: Counter[str] = Counter()
    for key in keys:
        found = find_rule(rules, variable_name(key), key)
        if found is not None:
            hits[found[0].pattern] += 1
    return dead_patterns(rules, hits, keys)


def dead_patterns(rules: Sequence[Rule], hits: Mapping[str, int], keys: Sequence[str]) -> list[str]:
    """A warning for each pattern that matched no key (``hits``: pattern -> keys matched).

    Raises:
        AssignmentMapError: no pattern matched anything; the message gives each
            pattern's closest keys.
    """
    dead = [r.pattern for r in rules if not hits.get(r.pattern)]
    if rules and len(dead) == len(rules):
        lines = [f"  {p!r}: closest keys {closest_to_pattern(p, keys)}" for p in dead]
        raise AssignmentMapError(
            "the assignment map matches no checkpoint key (a pattern must match a whole key as "
            "list_variables prints it, or the key without /.ATTRIBUTES/VARIABLE_VALUE; a scope "
            "pattern ends in '/'):\n" + "\n".join(lines))
    return [f"assignment-map pattern {p!r} matches no checkpoint key (closest: "
            f"{closest_to_pattern(p, keys)})" for p in dead]


def _closest(probe: str, keys: Sequence[str], n: int = 3) -> str:
    """The keys most like ``probe``, quoted, for messages."""
    found = difflib.get_close_matches(probe, keys, n, 0.0) if keys else []
    return ", ".join(repr(k) for k in found) or "none (the checkpoint has no weights)"


def closest_to_pattern(pattern: str, keys: Sequence[str]) -> str:
    """The keys most like a regular expression, read as plain text."""
    return _closest(re.sub(r"\\(.)", r"\1", re.sub(r"[\^$()\[\]?*+|{}]", "", pattern)), keys)


def closest_to_name(name: str, keys: Sequence[str]) -> str:
    """The keys most like a torch ``state_dict`` name (``encoder.0.weight``)."""
    return _closest(name.replace(".", "/"), keys)


def _child(module: nn.Module, tf_name: str) -> tuple[nn.Module, str] | None:
    """The submodule a TF scope name stands for: ``fc`` or, for ``layer_3``, ``layer[3]``."""
    children = dict(module.named_children())
    if tf_name in children:
        return children[tf_name], tf_name
    m = _INDEXED.fullmatch(tf_name)
    if m and m.group(1) in children:
        seq = children[m.group(1)]
        items = dict(seq.named_children())
        if m.group(2) in items:
            return items[m.group(2)], f"{m.group(1)}.{m.group(2)}"
    return None
