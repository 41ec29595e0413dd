"""``ConversionReport``: what a TF -> torch conversion matched, how, and what it left over.

Every checkpoint key ends up in exactly one of ``matched`` (as a source),
``optimizer_matched``, ``unmatched_checkpoint`` or ``skipped``; every torch
``state_dict`` name in ``matched`` (as the target), ``unmatched_module`` or
``ignored_module``. ``strict=True`` fails on anything in an ``unmatched_*``
dict; ``mismatched`` explains groups of them (a layer whose kind or shapes do
not fit) and its names are in the ``unmatched_*`` dicts too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Match:
    """One torch value and where it came from.

    Attributes:
        target: the ``state_dict`` name, or ``optimizer.state[<name>].<field>``.
        sources: the checkpoint keys it was computed from (none for constants).
        transform: the layout change applied, e.g. ``transpose(1, 0)``.
    """

    target: str
    sources: tuple[str, ...]
    transform: str


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Torch names and checkpoint keys that were paired but do not fit, and why."""

    targets: tuple[str, ...]
    sources: tuple[str, ...]
    reason: str


@dataclass
class ConversionReport:
    """The outcome of :func:`torchckpt.convert.load_tf_weights`.

    Attributes:
        path: the checkpoint prefix that was read.
        mode: ``"keras"`` (object graph, layers in model order), ``"assignment_map"``
            or ``"names"`` (name-based checkpoint, TF scopes matched to module names).
        matched: module values set, with their sources and transforms.
        optimizer_matched: optimizer state set (empty without ``optimizer=``).
        mismatched: paired names whose kinds or shapes do not fit.
        unmatched_checkpoint: checkpoint key -> why it fed nothing.
        unmatched_module: ``state_dict`` name -> why it got no value.
        unmatched_optimizer: parameter / state field -> why no state was converted.
        skipped: checkpoint keys deliberately not used (save counter, optimizer
            state without ``optimizer=``, keys the assignment map ignores) -> why.
        ignored_module: ``state_dict`` names without a TF counterpart by design.
        notes: facts worth knowing that are not errors (epsilons, hyperparameters,
            reordered flatten rows).
        warnings: things that may make the outputs differ although every name
            matched (a Linear that may read a channels-last Flatten the graph
            cannot show; an assignment-map pattern that matched nothing).
    """

    path: str
    mode: str
    matched: list[Match] = field(default_factory=list)
    optimizer_matched: list[Match] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    unmatched_checkpoint: dict[str, str] = field(default_factory=dict)
    unmatched_module: dict[str, str] = field(default_factory=dict)
    unmatched_optimizer: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    ignored_module: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is unmatched on either side."""
        return not (self.unmatched_checkpoint or self.unmatched_module
                    or self.unmatched_optimizer or self.mismatched)

    @property
    def transforms(self) -> dict[str, str]:
        """``target -> transform`` for every value set, optimizer state included."""
        return {m.target: m.transform for m in [*self.matched, *self.optimizer_matched]}

    def problems(self) -> str:
        """The unmatched and mismatched names, one per line (empty when :attr:`ok`)."""
        lines = []
        for m in self.mismatched:
            lines.append(f"  mismatch: {', '.join(m.targets) or '-'} <- "
                         f"{', '.join(m.sources) or '-'}: {m.reason}")
        for title, items in (("unmatched in checkpoint", self.unmatched_checkpoint),
                             ("unmatched in module", self.unmatched_module),
                             ("unmatched optimizer state", self.unmatched_optimizer)):
            lines += [f"  {title}: {name}: {why}" for name, why in items.items()]
        return "\n".join(lines)

    def format(self) -> str:
        """The whole report as text, as ``str(report)`` gives it."""
        out = [f"conversion of '{self.path}' ({self.mode}): {len(self.matched)} values, "
               f"{len(self.optimizer_matched)} optimizer state entries"]
        out += [f"  {m.target} <- {', '.join(m.sources) or '-'} [{m.transform}]"
                for m in [*self.matched, *self.optimizer_matched]]
        if not self.ok:
            out += ["problems:", self.problems()]
        if self.skipped:
            out.append("skipped:")
            out += [f"  {k}: {why}" for k, why in self.skipped.items()]
        if self.ignored_module:
            out.append("left as is in the module:")
            out += [f"  {k}: {why}" for k, why in self.ignored_module.items()]
        if self.notes:
            out.append("notes:")
            out += [f"  {n}" for n in self.notes]
        if self.warnings:
            out.append("warnings:")
            out += [f"  {w}" for w in self.warnings]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of the report."""
        def match(m: Match) -> dict[str, object]:
            return {"target": m.target, "sources": list(m.sources), "transform": m.transform}
        return {
            "path": self.path, "mode": self.mode, "ok": self.ok,
            "matched": [match(m) for m in self.matched],
            "optimizer_matched": [match(m) for m in self.optimizer_matched],
            "mismatched": [{"targets": list(m.targets), "sources": list(m.sources),
                            "reason": m.reason} for m in self.mismatched],
            "unmatched_checkpoint": dict(self.unmatched_checkpoint),
            "unmatched_module": dict(self.unmatched_module),
            "unmatched_optimizer": dict(self.unmatched_optimizer),
            "skipped": dict(self.skipped), "ignored_module": dict(self.ignored_module),
            "notes": list(self.notes), "warnings": list(self.warnings),
        }
