"""``torch.optim.Optimizer``: per-parameter state as TF slot variables.

Each tensor in ``optimizer.state[p]`` (``exp_avg``, ``exp_avg_sq``, ``step``,
``momentum_buffer``, ...) is a slot variable of parameter ``p``: a node linked
from the optimizer's ``slot_variables`` to ``p``'s node, with the key
``<p's path>/.OPTIMIZER_SLOT/<optimizer path>/<slot>/.ATTRIBUTES/VARIABLE_VALUE``
as TensorFlow writes for its optimizers. Because the link is to the parameter's
node, state is restored by parameter *identity*: param groups listed in another
order, or a model that gained parameters (they get no state), restore right.

Hyperparameters of each param group, and any non-tensor per-parameter state,
are a JSON ``py_state`` attribute (no pickle). Restored state is placed as
``Optimizer.load_state_dict`` would place it: floating tensors on the
parameter's device and dtype, ``step`` where the optimizer keeps it. State of
a parameter that is not materialized yet (a lazy module's, before its first
forward) waits in the restore until the parameter is, which is before the
first ``step()`` that could use it; the state is then in place when ``step()``
runs, so the optimizer continues from the restored moments instead of
initializing fresh ones.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import CorruptCheckpointError, MismatchError
from ..graph.keys import PY_STATE_KEY
from .registry import Adapter, ValueSource
from .stateful import TENSOR_ATTRIBUTE, encode_state, read_state
from .tensors import torch_dtype_of

_STEP_SLOTS = ("step",)


def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


class OptimizerAdapter(Adapter):
    holds_values = True

    # --- saving --------------------------------------------------------------------------

    def values(self) -> dict[str, torch.Tensor | str]:
        opt = self.obj
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        extra = {}
        for i, p in enumerate(_params(opt)):
            other = {k: v for k, v in opt.state.get(p, {}).items()
                     if not isinstance(v, torch.Tensor)}
            if other:
                extra[str(i)] = other
        text, tensors = encode_state({"param_groups": groups, "state": extra},
                                     type(opt).__name__)
        out: dict[str, torch.Tensor | str] = {TENSOR_ATTRIBUTE.format(i): t
                                              for i, t in enumerate(tensors)}
        out[PY_STATE_KEY] = text
        return out

    def slot_variables(self) -> list[tuple[Any, str, torch.Tensor]]:
        out = []
        for p in _params(self.obj):
            for name, value in self.obj.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    out.append((p, name, value))
        return out

    # --- restoring -----------------------------------------------------------------------

    def restore(self, values: dict[str, ValueSource]) -> None:
        if PY_STATE_KEY not in values:
            return
        saved = read_state(values)
        if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
                or not isinstance(saved.get("state"), dict) \
                or not all(isinstance(g, dict) for g in saved["param_groups"]):
            source = values[PY_STATE_KEY]
            raise CorruptCheckpointError(source.path, "optimizer python state lacks "
                                         "'param_groups'/'state'", key=source.key)
        live = self.obj.param_groups
        if len(saved["param_groups"]) != len(live):
            raise MismatchError(values[PY_STATE_KEY].key, "param group count",
                                saved=len(saved["param_groups"]), live=len(live))
        for group, hyper in zip(live, saved["param_groups"]):
            # "params" is the live group's own list; a file never replaces it
            group.update({k: v for k, v in hyper.items() if k != "params"})
        params = _params(self.obj)
        for index, other in saved["state"].items():
            # non-tensor per-parameter state (LBFGS counters) goes by position
            if index.isdigit() and int(index) < len(params) and isinstance(other, dict):
                self.obj.state[params[int(index)]].update(other)

    def restore_slot(self, variable: Any, slot_name: str, value: ValueSource,
                     done: Callable[[], None]) -> None:
        """Put one state tensor of ``variable`` in place (the restore calls this only
        once ``variable`` holds real data: not meta, not a lazy placeholder)."""
        self._apply(variable, slot_name, value)
        done()

    def _apply(self, param: torch.Tensor, slot_name: str, value: ValueSource) -> None:
        state = self.obj.state[param]
        existing = state.get(slot_name)
        if isinstance(existing, torch.Tensor) and tuple(existing.shape) == tuple(value.shape) \
                and existing.dtype == torch_dtype_of(value.dtype) and not existing.is_meta:
            with torch.no_grad():
                value.copy_into(existing)
            return
        # tensor_like: a sharded (DTensor) parameter gets state sharded like it, of which
        # only this rank's part is read (torchckpt.distributed); others as before.
        fresh = value.tensor("cpu") if slot_name in _STEP_SLOTS else value.tensor_like(param)
        state[slot_name] = self._placed(param, slot_name, fresh)

    def _placed(self, param: torch.Tensor, slot_name: str, t: torch.Tensor) -> torch.Tensor:
        """Where ``Optimizer.load_state_dict`` would put a state tensor."""
        if slot_name in _STEP_SLOTS:
            # a parameter restored before it joins a group (add_param_group later) gets
            # the default placement, as a non-capturable, non-fused optimizer keeps it
            group: dict[str, Any] = next(
                (g for g in self.obj.param_groups if any(p is param for p in g["params"])), {})
            if group.get("capturable") or group.get("fused"):
                return t.to(param.device)
            return t
        if t.is_floating_point():
            return t.to(device=param.device, dtype=param.dtype)
        return t.to(device=param.device)
