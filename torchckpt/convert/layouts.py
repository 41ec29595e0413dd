"""How each kind of torch module takes its values from TF variables.

The layout is chosen by the type of the *target* module (a Conv2DTranspose
kernel and a Conv2D kernel have the same rank; only the target tells them
apart). A :class:`Layout` names the TF variables it needs by *role*: the
canonical Keras variable name (``kernel``, ``bias``, ``gamma``, ``moving_mean``,
``depthwise_kernel``, ``recurrent_kernel``, ...), prefixed for modules built
from several TF objects (``query/kernel`` for attention, ``l1_reverse/kernel``
for a two-layer bidirectional LSTM). :func:`normalize_role` maps the names
Keras 3, TF1 and slim use (``_kernel``, ``weights``, ``biases``) onto roles.

TF layouts (Keras conventions) against torch's:

=====================  ==============================  ===============================
TF variable            shape                           torch
=====================  ==============================  ===============================
Dense kernel           [in, out]                       Linear.weight [out, in]
ConvND kernel          [*k, in/groups, out]            ConvNd.weight [out, in/groups, *k]
DepthwiseConv kernel   [*k, in, mult]                  ConvNd(groups=in).weight [in*mult, 1, *k]
ConvNDTranspose        [*k, out, in]                   ConvTransposeNd.weight [in, out, *k]
LSTM kernel            [in, 4H], gates i, f, c, o      weight_ih [4H, in], gates i, f, g, o
TF1 LSTMCell kernel    [in + H, 4H], gates i, j, f, o  weight_ih and weight_hh, gates i, f, g, o
GRU kernel             [in, 3H], gates z, r, h         weight_ih [3H, in], gates r, z, n
GRU bias (reset_after) [2, 3H]: input, recurrent       bias_ih, bias_hh
MHA query kernel       [E, heads, head_dim]            rows of in_proj_weight [3E, E]
MHA output kernel      [heads, head_dim, E]            out_proj.weight [E, E]
EinsumDense kernel     [d, heads, head_dim]            Linear.weight [heads*head_dim, d]
=====================  ==============================  ===============================

(MultiHeadAttention into ``nn.MultiheadAttention``: :mod:`.attention`; a Dense
after a Keras Flatten: :mod:`.flatten`.)
"""

from __future__ import annotations

from typing import Mapping, Sequence, cast

import torch
from torch import nn

from .keras_layers import WeightGroup
from .source import SourceVar
from .transforms import (
    IDENTITY,
    Assignment,
    Transform,
    UnitPlan,
    constant,
    flatten_to,
    fold_kernel,
    matrix_splits,
    output_shape,
    permute,
)

Roles = dict[str, SourceVar]

_ALIASES = {"weights": "kernel", "w": "kernel", "biases": "bias", "b": "bias", "scale": "gamma",
            "offset": "beta", "embedding": "embeddings", "moving_var": "moving_variance"}
#: Roles a unit may leave unused without that meaning "wrong kind of layer".
_OPTIONAL = frozenset({"bias"})


def normalize_role(name: str) -> str:
    """The role of a TF variable's local name: ``_kernel`` and ``weights`` are ``kernel``."""
    n = name.lstrip("_")
    return _ALIASES.get(n, n)


def state_names(module: nn.Module, *, recurse: bool) -> list[str]:
    """The module's ``state_dict`` names relative to it (persistent buffers included)."""
    names = list(module.state_dict(keep_vars=True).keys())
    return names if recurse else [n for n in names if "." not in n]


class PlanBuilder:
    """Collects one unit's assignments, checking every shape on meta tensors."""

    def __init__(self, prefix: str, module: nn.Module, roles: Mapping[str, SourceVar],
                 complete: bool, state: dict[str, torch.Tensor]) -> None:
        self.prefix = prefix
        self.module = module
        self.roles = dict(roles)
        # complete: the roles are a whole TF layer, so a missing bias means "no bias" (zeros);
        # otherwise they are what an assignment map named, and the rest stays unfilled.
        self.complete = complete
        self.used: set[str] = set()
        self.state = state
        self.plan = UnitPlan()

    def full(self, param: str) -> str:
        return f"{self.prefix}.{param}" if self.prefix else param

    def take(self, role: str) -> SourceVar | None:
        var = self.roles.get(role)
        if var is not None:
            self.used.add(role)
        return var

    def need(self, role: str, what: str) -> SourceVar | None:
        var = self.take(role)
        if var is None and self.complete:
            have = ", ".join(sorted(self.roles)) or "nothing"
            self.plan.problems.append(f"{what} needs TF variable '{role}', the checkpoint offers "
                                      f"{have}")
        return var

    def assign(self, param: str, sources: Sequence[SourceVar], transform: Transform) -> None:
        target = self.state.get(param)
        if target is None:
            return
        try:
            got: tuple[int, ...] | None = output_shape(transform, sources)
        except RuntimeError:  # e.g. a permutation of the wrong rank
            got = None
        if got != tuple(target.shape):
            shown = ", ".join(f"'{v.key}' {list(v.shape)}" for v in sources)
            self.plan.problems.append(
                f"'{self.full(param)}' {list(target.shape)} cannot come from {shown} by "
                f"{transform.description}" + ("" if got is None else f" (gives {list(got)})"))
            return
        self.plan.assignments.append(Assignment(self.full(param), tuple(sources), transform))

    def optional(self, param: str, role: str, transform: Transform, fill: float, why: str) -> None:
        """``param`` from ``role`` if the checkpoint has it, else the constant ``fill``."""
        if param not in self.state:
            return
        var = self.take(role)
        if var is not None:
            self.assign(param, [var], transform)
        else:
            self.fill(param, fill, why)

    def fill(self, param: str, value: float, why: str) -> None:
        """Set ``param`` to a constant, when the roles describe a whole TF layer."""
        if param in self.state and self.complete:
            self.assign(param, [], constant(value, self.state[param], why))

    def finish(self) -> UnitPlan:
        for role, var in self.roles.items():
            if role in self.used:
                continue
            reason = f"'{self.prefix or '(root)'}' ({type(self.module).__name__}) has no use for it"
            if role.rsplit("/", 1)[-1] in _OPTIONAL:
                self.plan.unused[var.key] = reason
            else:
                self.plan.problems.append(f"checkpoint variable '{var.key}' ({role}) has no "
                                          f"place in {type(self.module).__name__}: wrong kind of "
                                          "layer or a different configuration")
        if self.plan.problems:
            self.plan.assignments.clear()
            return self.plan
        done = {a.target for a in self.plan.assignments} | set(self.plan.ignored)
        why = ("the checkpoint layer has no value for it" if self.complete
               else "no checkpoint key is mapped onto it")
        for name in self.state:
            if self.full(name) not in done:
                self.plan.unfilled.setdefault(self.full(name), why)
        return self.plan


class Layout:
    """How one torch module type takes values from TF variables (subclass per family).

    Subclasses implement :meth:`build`, which calls the :class:`PlanBuilder`'s
    ``need``/``take`` (a source variable by role), ``assign`` (a ``state_dict``
    entry from sources through a :class:`~.transforms.Transform`, shape-checked)
    and ``optional``/``fill``; the other methods' defaults suit modules made from
    one TF object whose variables are named by role. Register a subclass for a
    custom module with :meth:`~.registry.LayoutRegistry.register`.
    """

    def groups_needed(self, module: nn.Module) -> int:
        """How many consecutive weight groups (TF objects) the module is made from."""
        return 1

    def roles_from_groups(self, module: nn.Module, groups: Sequence[WeightGroup]) -> Roles:
        return {normalize_role(v.name): v for g in groups for v in g.vars}

    def role_of(self, module: nn.Module, relpath: Sequence[str]) -> str:
        """The role of a variable at ``relpath`` below the TF scope mapped onto the module."""
        return normalize_role(relpath[-1])

    def param_role(self, module: nn.Module, param: str, hint: str) -> str | None:
        """The role that feeds ``param``; ``hint`` is the role of the key mapped onto it."""
        return _PARAM_ROLES.get(param, hint)

    def plan(self, prefix: str, module: nn.Module, roles: Mapping[str, SourceVar], *,
             complete: bool = True) -> UnitPlan:
        """Plan the module's values from ``roles``; ``complete``: they are a whole TF layer."""
        b = PlanBuilder(prefix, module, roles, complete, self.state_of(module))
        self.build(b, module)
        return b.finish()

    def state_of(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The ``state_dict`` entries the layout fills (the whole subtree by default)."""
        return dict(module.state_dict(keep_vars=True))

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        raise NotImplementedError


_PARAM_ROLES = {"weight": "kernel", "bias": "bias"}


class LinearLayout(Layout):
    """Dense -> Linear: the kernel is transposed.

    Any kernel whose dimensions fold into the Linear's ``(in, out)`` is taken,
    folded row-major and transposed: a MultiHeadAttention's EinsumDense query,
    key and value kernels ``[d, heads, head_dim]`` and output kernel
    ``[heads, head_dim, d]`` become the four Linears torch code usually writes
    (``q``, ``k``, ``v``, ``out``), and their ``[heads, head_dim]`` biases are flattened.
    """

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        kernel = b.need("kernel", "Linear")
        weight = b.state.get("weight")
        if kernel is not None and weight is not None:
            out_f, in_f = weight.shape
            fold = fold_kernel(kernel.shape, in_f, out_f)
            if fold is None:
                b.plan.problems.append(_linear_misfit(b.full("weight"), list(weight.shape),
                                                      kernel))
            else:
                b.assign("weight", [kernel], fold)
        bias = b.roles.get("bias")
        b.optional("bias", "bias", flatten_to(bias.shape) if bias is not None else IDENTITY,
                   0.0, "no bias in checkpoint")


def _linear_misfit(target: str, shape: list[int], kernel: SourceVar) -> str:
    """Why ``kernel`` does not fit a Linear, and which Linear(s) it would fit."""
    splits = matrix_splits(kernel.shape)
    fits = " or ".join(f"Linear({rows}, {cols}) (weight [{cols}, {rows}])" for rows, cols in splits)
    how = (f" by transpose(1, 0) (gives {[kernel.shape[1], kernel.shape[0]]})"
           if len(kernel.shape) == 2 else "")
    return (f"'{target}' {shape} cannot come from '{kernel.key}' {list(kernel.shape)}{how}: the "
            f"torch side would need {fits or 'a kernel of rank 2 or more'}")


class ConvLayout(Layout):
    """ConvND / DepthwiseConvND / a SeparableConv's pointwise part -> ConvNd."""

    def param_role(self, module: nn.Module, param: str, hint: str) -> str | None:
        if param == "weight" and hint in ("depthwise_kernel", "pointwise_kernel"):
            return hint
        return _PARAM_ROLES.get(param, hint)

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        nd = len(module.kernel_size)  # type: ignore[arg-type]
        depthwise = b.take("depthwise_kernel")
        if depthwise is not None:
            self._depthwise(b, module, depthwise, nd)
        else:
            kernel = b.take("kernel") or b.take("pointwise_kernel")
            if kernel is None:
                b.need("kernel", type(module).__name__)
            else:
                b.assign("weight", [kernel], permute((nd + 1, nd, *range(nd))))
        b.optional("bias", "bias", IDENTITY, 0.0, "no bias in checkpoint")

    @staticmethod
    def _depthwise(b: PlanBuilder, module: nn.Module, var: SourceVar, nd: int) -> None:
        conv = cast(nn.modules.conv._ConvNd, module)
        cin, cout, groups = conv.in_channels, conv.out_channels, conv.groups
        want = (*conv.kernel_size, cin, cout // max(cin, 1))
        if groups != cin or var.shape != want:
            b.plan.problems.append(
                f"depthwise kernel '{var.key}' {list(var.shape)} needs a Conv{nd}d with "
                f"groups == in_channels and kernel {list(want)}; '{b.prefix}' has groups={groups}")
            return
        shape = tuple(b.state["weight"].shape)
        b.assign("weight", [var], Transform(
            f"permute{(nd, nd + 1, *range(nd))} + reshape to {list(shape)}",
            lambda xs: xs[0].permute(nd, nd + 1, *range(nd)).reshape(shape)))


class ConvTransposeLayout(Layout):
    """ConvNDTranspose -> ConvTransposeNd: kernel [*k, out, in] -> [in, out, *k]."""

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        nd = len(module.kernel_size)  # type: ignore[arg-type]
        kernel = b.need("kernel", type(module).__name__)
        if kernel is not None:
            b.assign("weight", [kernel], permute((nd + 1, nd, *range(nd))))
        b.optional("bias", "bias", IDENTITY, 0.0, "no bias in checkpoint")


class BatchNormLayout(Layout):
    """BatchNormalization -> BatchNormNd; ``num_batches_tracked`` has no TF counterpart."""

    def param_role(self, module: nn.Module, param: str, hint: str) -> str | None:
        return {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                "running_var": "moving_variance"}.get(param, hint)

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        for param, role in (("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            if param in b.state:
                var = b.need(role, type(module).__name__)
                if var is not None:
                    b.assign(param, [var], IDENTITY)
        b.optional("weight", "gamma", IDENTITY, 1.0, "no gamma in checkpoint: scale=False")
        b.optional("bias", "beta", IDENTITY, 0.0, "no beta in checkpoint: center=False")
        if "num_batches_tracked" in b.state:
            b.plan.ignored[b.full("num_batches_tracked")] = "torch-only counter, left as is"


class LayerNormLayout(Layout):
    """LayerNormalization -> LayerNorm."""

    def param_role(self, module: nn.Module, param: str, hint: str) -> str | None:
        return {"weight": "gamma", "bias": "beta"}.get(param, hint)

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        b.optional("weight", "gamma", IDENTITY, 1.0, "no gamma in checkpoint: scale=False")
        b.optional("bias", "beta", IDENTITY, 0.0, "no beta in checkpoint: center=False")


class EmbeddingLayout(Layout):
    """Embedding -> Embedding (same layout); any single variable is taken as the table."""

    def param_role(self, module: nn.Module, param: str, hint: str) -> str | None:
        return "embeddings"

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        var = b.take("embeddings")
        if var is None and len(b.roles) == 1:
            var = b.take(next(iter(b.roles)))
        if var is None:
            b.need("embeddings", "Embedding")
        else:
            b.assign("weight", [var], IDENTITY)


class GenericLayout(Layout):
    """Fallback for modules without a layout: same-named, same-shaped variables, copied as is."""

    def role_of(self, module: nn.Module, relpath: Sequence[str]) -> str:
        return relpath[-1]

    def roles_from_groups(self, module: nn.Module, groups: Sequence[WeightGroup]) -> Roles:
        return {v.name: v for g in groups for v in g.vars}

    def param_role(self, module: nn.Module, param: str, hint: str) -> str | None:
        return param

    def state_of(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in module.state_dict(keep_vars=True).items() if "." not in k}

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        free = [r for r in b.roles]
        for param, tensor in b.state.items():
            role = param if param in free else next(
                (r for r in free if b.roles[r].shape == tuple(tensor.shape)), None)
            if role is None:
                b.plan.unfilled[b.full(param)] = "no same-named or same-shaped variable"
                continue
            free.remove(role)
            b.assign(param, [b.roles[role]], IDENTITY)
            b.used.add(role)
