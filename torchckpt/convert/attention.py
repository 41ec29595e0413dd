"""MultiHeadAttention -> ``nn.MultiheadAttention``: four EinsumDense projections packed in one.

Keras (2 and 3) stores a MultiHeadAttention as four EinsumDense objects,
``_query_dense``, ``_key_dense``, ``_value_dense`` (kernel ``[E, heads,
head_dim]``, bias ``[heads, head_dim]``) and ``_output_dense`` (kernel
``[heads, head_dim, E]``); TF1 BERT as four Dense layers with heads packed in
the columns. ``nn.MultiheadAttention`` projects q, k and v to ``embed_dim``
each, so it takes them only when ``heads * key_dim == heads * value_dim ==
embed_dim``; otherwise the four ``nn.Linear`` form (:class:`.layouts.LinearLayout`)
takes any of them.
"""

from __future__ import annotations

from typing import Sequence, cast

import torch
from torch import nn

from .keras_layers import WeightGroup
from .layouts import Layout, PlanBuilder, Roles, normalize_role
from .source import SourceVar
from .transforms import IDENTITY, Transform


class MultiheadAttentionLayout(Layout):
    """MultiHeadAttention (four EinsumDense projections) -> nn.MultiheadAttention.

    The query/key/value kernels ``[E, heads, head_dim]`` are flattened,
    transposed and stacked into ``in_proj_weight`` (or ``q/k/v_proj_weight``
    when key and value widths differ from ``embed_dim``); the output kernel
    ``[heads, head_dim, E]`` becomes ``out_proj.weight``.
    """

    PARTS = ("query", "key", "value", "output")

    def groups_needed(self, module: nn.Module) -> int:
        return 4

    def roles_from_groups(self, module: nn.Module, groups: Sequence[WeightGroup]) -> Roles:
        named = [self._part(g.path.split("/")) for g in groups]
        if sorted(p for p in named if p) != sorted(self.PARTS):
            named = list(self.PARTS)  # uninformative names: Keras builds q, k, v, o in order
        return {f"{part}/{normalize_role(v.name)}": v for part, g in zip(named, groups, strict=True)
                for v in g.vars}

    def role_of(self, module: nn.Module, relpath: Sequence[str]) -> str:
        part = self._part(relpath[:-1]) or "?"
        return f"{part}/{normalize_role(relpath[-1])}"

    def param_role(self, module: nn.Module, param: str, hint: str) -> str | None:
        return {"out_proj.weight": "output/kernel", "out_proj.bias": "output/bias",
                "q_proj_weight": "query/kernel", "k_proj_weight": "key/kernel",
                "v_proj_weight": "value/kernel"}.get(param)

    @classmethod
    def _part(cls, names: Sequence[str]) -> str | None:
        for name in reversed(names):
            n = name.lstrip("_").removesuffix("_dense")
            if n in cls.PARTS:
                return n
            if n in ("attention_output", "out", "out_proj", "dense"):
                return "output"
        return None

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        embed_dim = cast(nn.MultiheadAttention, module).embed_dim
        heads = cast(nn.MultiheadAttention, module).num_heads
        kernels = [b.need(f"{p}/kernel", "MultiheadAttention") for p in self.PARTS]
        biases = [b.take(f"{p}/bias") for p in self.PARTS]
        for part, var in zip(self.PARTS, kernels, strict=True):
            # Keras: [E, heads, head_dim] (output [heads, head_dim, E]); BERT's dense layers
            # keep heads packed in the columns ([E, E]), in the same head-major order as torch.
            axis = 0 if part == "output" else 1
            if var is not None and len(var.shape) == 3 and var.shape[axis] != heads:
                b.plan.problems.append(f"{part} kernel '{var.key}' {list(var.shape)} is not "
                                       f"split into {heads} heads like '{b.prefix}'")
            elif var is not None and len(var.shape) == 3 and \
                    var.shape[axis] * var.shape[axis + 1] != embed_dim:
                width = var.shape[axis] * var.shape[axis + 1]
                b.plan.problems.append(
                    f"{part} kernel '{var.key}' {list(var.shape)} has {width} features per "
                    f"position, nn.MultiheadAttention projects to embed_dim={embed_dim} "
                    "(Keras value_dim or key_dim differs from "
                    "embed_dim / heads): write the attention as four nn.Linear (q, k, v, out), "
                    "which take any EinsumDense kernel")
            elif var is not None and len(var.shape) not in (2, 3):
                b.plan.problems.append(f"{part} kernel '{var.key}' {list(var.shape)} is neither "
                                       "an EinsumDense nor a Dense kernel")
        q, k, v, o = kernels
        if o is not None and not b.plan.problems:
            b.assign("out_proj.weight", [o], Transform(
                "reshape to [heads*head_dim, E] + transpose(1, 0)",
                lambda xs: xs[0].reshape(-1, xs[0].shape[-1]).t()))
            b.optional("out_proj.bias", "output/bias", IDENTITY, 0.0, "no bias in checkpoint")
        if None in (q, k, v) or b.plan.problems:
            return
        flat = Transform("reshape to [E, heads*head_dim] + transpose(1, 0)",
                         lambda xs: xs[0].reshape(xs[0].shape[0], -1).t())
        if "in_proj_weight" in b.state:
            b.assign("in_proj_weight", [q, k, v], Transform(  # type: ignore[list-item]
                "q, k, v: reshape to [E, heads*head_dim], transpose(1, 0), concatenate",
                lambda xs: torch.cat([x.reshape(x.shape[0], -1).t() for x in xs], 0)))
        else:
            for name, var in (("q_proj_weight", q), ("k_proj_weight", k), ("v_proj_weight", v)):
                b.assign(name, [var], flat)  # type: ignore[list-item]
        self._in_bias(b, biases[:3])

    @staticmethod
    def _in_bias(b: PlanBuilder, biases: Sequence[SourceVar | None]) -> None:
        if "in_proj_bias" not in b.state:
            return
        if any(x is None for x in biases):
            b.fill("in_proj_bias", 0.0, "no query/key/value bias in checkpoint")
            return
        b.assign("in_proj_bias", list(biases), Transform(  # type: ignore[arg-type]
            "q, k, v: flatten, concatenate", lambda xs: torch.cat([x.reshape(-1) for x in xs])))
