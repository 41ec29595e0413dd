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

from typing import Any, Callable, Sequence

import torch

from ..errors import CorruptCheckpointError, InvalidValueError, MismatchError
from ..format._fast_entries import PayloadLocation
from ..graph.keys import PY_STATE_KEY
from .owners import OPTIMIZER_STATE, check_lbfgs_history, check_optimizer_group
from .registry import Adapter, SlotCheck, SlotTargets, ValueSource
from .schema import as_real, check_state
from .stateful import TENSOR_ATTRIBUTE, encode_state, read_state
from .tensors import TF_DTYPES, torch_dtype_or_name

_STEP_SLOTS = ("step",)
# Slots torch's optimizers keep, by shape: a 0-d float (checked finite and >= 0), or
# one of the parameter's shape. Other names (Adafactor's row_var, a third party's
# state) are checked for a tensor dtype only, and the live tensor's shape if any.
_SCALAR_SLOTS = frozenset({"step", "eta", "mu", "mu_product"})
_PARAM_SHAPED_SLOTS = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer",
                                 "square_avg", "acc_delta", "sum", "ax", "prev", "step_size",
                                 "grad_avg", "exp_inf"})


_NOTHING = object()
# the TF dtypes of torch's floating dtypes: what a slot restore_slot accepts may hold
_FLOATING_TF = frozenset(int(tf) for dt, tf in TF_DTYPES.items() if dt.is_floating_point)


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
        """Land the saved hyperparameters and non-tensor state, all checked first.

        Raises:
            CorruptCheckpointError: the python state is not an optimizer's.
            MismatchError: another number of param groups.
            InvalidValueError: a value of the wrong type or range (``owners``); nothing
                is changed then.
        """
        if PY_STATE_KEY not in values:
            return
        source = values[PY_STATE_KEY]
        saved = read_state(values)
        if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
                or not isinstance(saved.get("state"), dict) \
                or not all(isinstance(g, dict) for g in saved["param_groups"]):
            raise CorruptCheckpointError(source.path, "optimizer python state lacks "
                                         "'param_groups'/'state'", key=source.key)
        live = self.obj.param_groups
        if len(saved["param_groups"]) != len(live):
            raise MismatchError(source.key, "param group count",
                                saved=len(saved["param_groups"]), live=len(live))
        try:
            groups = [check_optimizer_group(self.obj, group, hyper, f"param_groups[{i}]")
                      for i, (group, hyper) in enumerate(zip(live, saved["param_groups"]))]
            other = self._checked_other_state(saved["state"])
        except InvalidValueError as exc:
            raise exc.located(source.path, source.key) from exc.__cause__
        for group, hyper in zip(live, groups):
            group.update(hyper)
        for param, state in other:
            self.obj.state[param].update(state)

    def _checked_other_state(self, saved: dict[Any, Any]) -> list[tuple[torch.Tensor, Any]]:
        """Non-tensor per-parameter state (LBFGS counters) by parameter position;
        positions past the live parameters are ignored, as before the checks."""
        params = _params(self.obj)
        out = []
        for index, other in saved.items():
            if not (isinstance(index, str) and index.isascii() and index.isdigit()) \
                    or int(index) >= len(params):
                continue
            param = params[int(index)]
            live = {k: v for k, v in self.obj.state.get(param, {}).items()
                    if not isinstance(v, torch.Tensor)}
            checked = check_state(other, live, OPTIMIZER_STATE, f"state[{index!r}]")
            check_lbfgs_history(self.obj, checked, f"state[{index!r}]")
            out.append((param, checked))
        return out

    def restore_slot(self, variable: Any, slot_name: str, value: ValueSource,
                     done: Callable[[], None]) -> None:
        """Put one state tensor of ``variable`` in place (the restore calls this only
        once ``variable`` holds real data: not meta, not a lazy placeholder)."""
        scalar = self._checked_slot(variable, slot_name, value)
        self._apply(variable, slot_name, value, scalar)
        done()

    def slot_targets(self, variables: Sequence[Any], slot_names: Sequence[str],
                     locations: Sequence[PayloadLocation | None]) -> SlotTargets:
        """Per slot, the existing state tensor when the saved value is floating and has the
        shape the slot must have: what :meth:`restore_slot` copies into when the tensor
        has the saved dtype and shape, which the restore checks before it reads. 0-d
        slots (``step``) are checked finite and >= 0 once read (``land``); a value
        refused is replaced by the one the slot had before, so it never stays.

        Why one call: a restore of Adam's state for 12,500 parameters asks for 37,500
        slots; each parameter's state and shape are looked up once, and the 0-d slots
        are checked together (:class:`_ScalarSlots`)."""
        states, floating = self.obj.state, _FLOATING_TF
        tensors: list[torch.Tensor | None] = []
        scalars = _ScalarSlots()
        last: Any = _NOTHING
        state: dict[str, Any] | None = None
        variable_shape: tuple[int, ...] = ()
        for i, (variable, name, loc) in enumerate(zip(variables, slot_names, locations)):
            if variable is not last:
                last, state = variable, states.get(variable)
                variable_shape = tuple(variable.shape)
            existing = state.get(name) if state is not None else None
            if loc is None or loc.dtype not in floating or not isinstance(existing, torch.Tensor):
                tensors.append(None)
            elif name in _SCALAR_SLOTS:  # the shape the slot must have (_slot_shape): 0-d
                tensors.append(scalars.add(i, name, existing) if loc.shape == () else None)
            elif name in _PARAM_SHAPED_SLOTS and variable_shape != loc.shape:  # or a parameter's
                tensors.append(None)
            else:
                tensors.append(existing)
        return SlotTargets(tensors, scalars.start() if scalars else None)

    def _checked_slot(self, param: torch.Tensor, slot_name: str,
                      value: ValueSource) -> torch.Tensor | None:
        """Refuse a slot of no tensor type, of the wrong shape, or (for the slots torch's
        optimizers keep) not floating; a 0-d slot is read and returned, checked finite
        and >= 0.

        Raises:
            MismatchError: the wrong shape. InvalidValueError: the wrong type or value.
        """
        dtype = torch_dtype_or_name(value.dtype)
        shape = self._slot_shape(param, slot_name)
        if shape is not None and tuple(value.shape) != shape:
            raise MismatchError(value.key, "shape", saved=list(value.shape), live=list(shape))
        known = slot_name in _SCALAR_SLOTS or slot_name in _PARAM_SHAPED_SLOTS
        floating = isinstance(dtype, torch.dtype) and (dtype.is_floating_point or (
            dtype.is_complex and param.is_complex() and slot_name in _PARAM_SHAPED_SLOTS))
        if not isinstance(dtype, torch.dtype) or (known and not floating):
            found = str(dtype).replace("torch.", "")
            raise InvalidValueError(f"expected a floating tensor for optimizer state "
                                    f"'{slot_name}', found one of dtype {found}",
                                    path=value.path, key=value.key)
        if slot_name not in _SCALAR_SLOTS:
            return None
        scalar = value.tensor("cpu")
        try:
            as_real(scalar.item(), slot_name, lo=0)
        except InvalidValueError as exc:
            raise exc.located(value.path, value.key) from None
        return scalar

    def _slot_shape(self, param: torch.Tensor, slot_name: str) -> tuple[int, ...] | None:
        """The shape slot ``slot_name`` of ``param`` must have, if known."""
        if slot_name in _SCALAR_SLOTS:
            return ()
        if slot_name in _PARAM_SHAPED_SLOTS:
            return tuple(param.shape)
        existing = self.obj.state.get(param, {}).get(slot_name)
        return tuple(existing.shape) if isinstance(existing, torch.Tensor) else None

    def _apply(self, param: torch.Tensor, slot_name: str, value: ValueSource,
               scalar: torch.Tensor | None) -> None:
        state = self.obj.state[param]
        existing = state.get(slot_name)
        if isinstance(existing, torch.Tensor) and tuple(existing.shape) == tuple(value.shape) \
                and existing.dtype == torch_dtype_or_name(value.dtype) and not existing.is_meta:
            with torch.no_grad():
                if scalar is not None:
                    existing.copy_(scalar)
                else:
                    value.copy_into(existing)
            return
        # tensor_like: a sharded (DTensor) parameter gets state sharded like it, of which
        # only this rank's part is read (torchckpt.distributed); others as before.
        if scalar is not None and slot_name in _STEP_SLOTS:
            fresh = scalar
        elif scalar is not None:
            fresh = scalar.to(param.device)
        else:
            fresh = value.tensor_like(param)
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


class _ScalarSlots:
    """The 0-d slots of one :meth:`OptimizerAdapter.slot_targets` call: read in place and
    checked together once read, the values they had kept to put back where a value is
    refused. A slot on another device is read into a host scratch tensor and copied to
    the device once accepted."""

    def __init__(self) -> None:
        self._host: list[tuple[int, str, torch.Tensor]] = []  # position, name, live tensor
        self._device: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []  # + scratch
        self._before: list[float] = []

    def __bool__(self) -> bool:
        return bool(self._host or self._device)

    def add(self, position: int, name: str, existing: torch.Tensor) -> torch.Tensor:
        """Book slot ``position``; returns the tensor its saved value is read into."""
        if existing.is_cpu and type(existing) in _PLAIN_TENSORS:
            self._host.append((position, name, existing))
            return existing
        scratch = torch.empty((), dtype=existing.dtype)
        self._device.append((position, name, existing, scratch))
        return scratch

    def start(self) -> SlotCheck:
        """Keep the host slots' values as they are before the read (a Python float holds
        any 0-d floating tensor's value exactly); returns the check."""
        self._before = [t.item() for _, _, t in self._host]
        return self.land

    def land(self, read: Sequence[int]) -> list[tuple[int, InvalidValueError]]:
        """Check the slots at positions ``read``; see :class:`SlotTargets`."""
        done = set(read)
        refused: list[tuple[int, InvalidValueError]] = []
        with torch.no_grad():
            for (position, name, live), before in zip(self._host, self._before):
                value = live.item()
                if not 0 <= value < _INF and position in done:  # NaN fails both: as_real's test
                    try:
                        as_real(value, name, lo=0)
                    except InvalidValueError as exc:
                        refused.append((position, exc))
                        live.fill_(before)
            for position, name, live, scratch in self._device:
                if position in done:
                    try:
                        as_real(scratch.item(), name, lo=0)
                    except InvalidValueError as exc:
                        refused.append((position, exc))
                        continue
                    live.copy_(scratch)
        return sorted(refused, key=lambda r: r[0])


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
_INF = float("inf")
