"""LSTM and GRU layouts: gate order, kernel splits and the GRU's two biases.

torch stacks gates by rows (``weight_ih_l0`` is ``[gates*H, in]``); TF by
columns (``kernel`` is ``[in, gates*H]``), so every weight is transposed and
its gate blocks reordered:

* Keras LSTM gates are (i, f, c, o), torch's (i, f, g, o): same order. Keras
  has one bias, torch two that are added: ``bias_hh`` becomes zeros.
* TF1 ``LSTMCell``/``LSTMBlockCell`` keep one kernel over ``[x, h]``
  (``[in + H, 4H]``, gates (i, j, f, o)): its rows are split into
  ``weight_ih``/``weight_hh`` and gates reordered to (i, f, j, o). TF1 adds
  ``forget_bias`` (default 1.0) at run time, not in the checkpoint; the report
  says so.
* Keras GRU gates are (z, r, h), torch's (r, z, n). With ``reset_after=True``
  (the TF2 default) the bias is ``[2, 3H]``: row 0 is torch's ``bias_ih``, row 1
  ``bias_hh``. ``reset_after=False`` (a ``[3H]`` bias) applies the reset gate
  before the recurrent matmul, which ``torch.nn.GRU`` cannot express: refused.

Several layers and directions: a torch LSTM with ``num_layers=L`` and
``bidirectional=True`` takes ``2L`` TF cells in the order layer 0 forward,
layer 0 backward, layer 1 forward, ... (Keras ``Bidirectional`` lists
``forward_layer`` before ``backward_layer``); their roles are prefixed
``l0/``, ``l0_reverse/``, ``l1/``, ...
"""

from __future__ import annotations

import re
from functools import partial
from typing import Sequence, cast

import torch
from torch import nn

from .keras_layers import WeightGroup
from .layouts import Layout, PlanBuilder, Roles, normalize_role
from .source import SourceVar
from .transforms import IDENTITY, TRANSPOSE, Transform, constant, reorder_gates

_PARAM = re.compile(r"(weight|bias)_(ih|hh)_(l\d+(?:_reverse)?)")
_LAYER = re.compile(r"(?:cell|layer)_(\d+)")


def _row_gates(xs: Sequence[torch.Tensor], row: int, order: Sequence[int]) -> torch.Tensor:
    return reorder_gates(xs[0][row], order)


def _rnn(module: nn.Module) -> nn.RNNBase:
    return cast(nn.RNNBase, module)


class _RecurrentLayout(Layout):
    def _suffixes(self, module: nn.Module) -> list[str]:
        rnn = _rnn(module)
        dirs = ("", "_reverse") if rnn.bidirectional else ("",)
        return [f"l{layer}{d}" for layer in range(rnn.num_layers) for d in dirs]

    def groups_needed(self, module: nn.Module) -> int:
        return len(self._suffixes(module))

    def roles_from_groups(self, module: nn.Module, groups: Sequence[WeightGroup]) -> Roles:
        return {f"{sfx}/{normalize_role(v.name)}": v
                for sfx, g in zip(self._suffixes(module), groups, strict=True) for v in g.vars}

    def role_of(self, module: nn.Module, relpath: Sequence[str]) -> str:
        layer, reverse = 0, False
        for name in relpath[:-1]:
            m = _LAYER.fullmatch(name)
            if m:
                layer = int(m.group(1))
            if name.startswith(("backward", "bw")) or name.endswith("_bw"):
                reverse = True
        return f"l{layer}{'_reverse' if reverse else ''}/{normalize_role(relpath[-1])}"

    def param_role(self, module: nn.Module, param: str, hint: str) -> str | None:
        m = _PARAM.fullmatch(param)
        if m is None:
            return None
        kind, which, sfx = m.groups()
        if kind == "bias":
            return f"{sfx}/bias"
        if which == "hh" and hint != "kernel":  # a fused TF1 kernel feeds both weights
            return f"{sfx}/recurrent_kernel"
        return f"{sfx}/kernel"

    def build(self, b: PlanBuilder, module: nn.Module) -> None:
        rnn = _rnn(module)
        if rnn.proj_size:
            b.plan.problems.append(f"'{b.prefix}': LSTM with proj_size has no TF counterpart")
            return
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        for sfx in self._suffixes(module):
            layer = int(sfx[1:].split("_")[0])
            self.layer(b, rnn, sfx, rnn.input_size if layer == 0 else width)

    def layer(self, b: PlanBuilder, module: nn.RNNBase, sfx: str, n_in: int) -> None:
        raise NotImplementedError


class LSTMLayout(_RecurrentLayout):
    """Keras LSTM and TF1 LSTMCell -> nn.LSTM."""

    ORDER_TF1 = (0, 2, 1, 3)  # (i, j, f, o) -> (i, f, j, o)

    def layer(self, b: PlanBuilder, module: nn.RNNBase, sfx: str, n_in: int) -> None:
        hidden = module.hidden_size
        kernel = b.need(f"{sfx}/kernel", "LSTM")
        recurrent = b.take(f"{sfx}/recurrent_kernel")
        if kernel is None:
            return
        bias_tf: Transform = IDENTITY
        if recurrent is None:
            if kernel.shape != (n_in + hidden, 4 * hidden):
                b.plan.problems.append(
                    f"'{kernel.key}' {list(kernel.shape)} has no recurrent kernel beside it and "
                    f"is not a TF1 [x, h] kernel [{n_in + hidden}, {4 * hidden}]")
                return
            self._fused(b, sfx, kernel, n_in, hidden)
            bias_tf = Transform("gates (i, j, f, o) -> (i, f, g, o)",
                                lambda xs: reorder_gates(xs[0], self.ORDER_TF1))
        else:
            b.assign(f"weight_ih_{sfx}", [kernel], TRANSPOSE)
            b.assign(f"weight_hh_{sfx}", [recurrent], TRANSPOSE)
        if module.bias:
            b.optional(f"bias_ih_{sfx}", f"{sfx}/bias", bias_tf, 0.0, "no bias in checkpoint")
            b.assign(f"bias_hh_{sfx}", [], constant(
                0.0, b.state[f"bias_hh_{sfx}"], "TF has one bias; torch adds bias_ih and bias_hh"))

    def _fused(self, b: PlanBuilder, sfx: str, kernel: SourceVar, n_in: int, hidden: int) -> None:
        order = self.ORDER_TF1
        gates = "transpose(1, 0), gates (i, j, f, o) -> (i, f, g, o)"
        b.assign(f"weight_ih_{sfx}", [kernel], Transform(
            f"rows [0:{n_in}] of the [x, h] kernel, {gates}",
            lambda xs: reorder_gates(xs[0][:n_in].t(), order)))
        b.assign(f"weight_hh_{sfx}", [kernel], Transform(
            f"rows [{n_in}:] of the [x, h] kernel, {gates}",
            lambda xs: reorder_gates(xs[0][n_in:].t(), order)))
        b.plan.notes.append(
            f"'{b.full(f'bias_ih_{sfx}')}': TF1 LSTMCell adds forget_bias (default 1.0) to the "
            "forget gate at run time and does not store it; add it to rows "
            f"[{hidden}:{2 * hidden}] of bias_ih if the cell used it")


class GRULayout(_RecurrentLayout):
    """Keras GRU (``reset_after=True``) -> nn.GRU."""

    ORDER = (1, 0, 2)  # (z, r, h) -> (r, z, n)
    GATES = "gates (z, r, h) -> (r, z, n)"

    def layer(self, b: PlanBuilder, module: nn.RNNBase, sfx: str, n_in: int) -> None:
        order = self.ORDER
        kernel = b.need(f"{sfx}/kernel", "GRU")
        recurrent = b.need(f"{sfx}/recurrent_kernel", "GRU")
        weights = Transform(f"transpose(1, 0), {self.GATES}",
                            lambda xs: reorder_gates(xs[0].t(), order))
        if kernel is not None:
            b.assign(f"weight_ih_{sfx}", [kernel], weights)
        if recurrent is not None:
            b.assign(f"weight_hh_{sfx}", [recurrent], weights)
        if not module.bias:
            return
        bias = b.take(f"{sfx}/bias")
        if bias is None:
            for which in ("ih", "hh"):
                b.fill(f"bias_{which}_{sfx}", 0.0, "no bias in checkpoint")
        elif len(bias.shape) != 2:
            b.plan.problems.append(
                f"'{bias.key}' {list(bias.shape)} is a GRU(reset_after=False) bias: that GRU "
                "applies the reset gate before the recurrent matmul, which torch.nn.GRU cannot "
                "express; retrain or rebuild the TF layer with reset_after=True")
        else:
            for row, which in ((0, "ih"), (1, "hh")):
                b.assign(f"bias_{which}_{sfx}", [bias], Transform(
                    f"row {row} of the [2, 3H] bias, {self.GATES}",
                    partial(_row_gates, row=row, order=order)))
