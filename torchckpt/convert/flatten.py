"""A Dense after a Flatten: Keras flattens feature maps channels-last, torch channels-first.

Keras' ``Flatten`` of an ``[N, H, W, C]`` map gives features in (H, W, C)
order; ``torch.flatten(x, 1)`` of the ``[N, C, H, W]`` map a torch ``Conv2d``
makes gives (C, H, W). The kernel of the first Dense after the Flatten has
one row per feature, so loaded as stored it fits the torch model's shapes and
silently computes something else. Its rows are reordered, ``[P*C, out]`` ->
``[P, C, out]`` -> ``[C, P, out]``, where ``C`` is the channel count and ``P``
the number of positions (H x W; L for 1-D, D x H x W for 3-D).

The object graph shows where this happens only for Keras Sequential and
Functional models: they list every layer in call order, weightless ones
(Flatten, activations, pooling, dropout) included (Keras 2: children
``layer-0``, ``layer-1``, ...; Keras 3: ``_operations/0``, ...). A Dense item
whose nearest weighted predecessor in that list, past BatchNormalizations, was
paired with a torch convolution (``C = out_channels``), with at least one
weightless layer between them, and whose kernel has ``C x P`` rows (P > 1) reads
a flattened feature map. Layers are assumed channels-last (Keras' default
``data_format``).

A subclassed model lists its attributes, not its call order, so the graph
cannot tell; there the report warns when a Linear's ``in_features`` is
``C x P`` of the torch convolution registered before it, and
``flatten_order={"<linear>": "channels_first"}`` applies the reorder.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence, Union, cast

import torch
from torch import nn

from ..errors import ConversionError
from ..graph.object_graph import ObjectGraph
from .keras_layers import WeightGroup, is_variable_node
from .plan import Plan, Unit
from .transforms import Assignment, Transform

#: ``torch.flatten`` of ``[N, C, ...]`` (reorder Keras' rows) / the torch model permutes to
#: channels-last before flattening, as Keras does (keep the rows as stored).
FLATTEN_ORDERS = ("channels_first", "channels_last")
FlattenOrder = Union[str, Mapping[str, str]]

_KERAS2_ITEM = re.compile(r"layer-(\d+)")
_KERAS3_LIST = "_operations"
_CONVS = (nn.modules.conv._ConvNd,)
_NORMS = (nn.modules.batchnorm._BatchNorm,)


def check_flatten_order(order: FlattenOrder) -> None:
    """Raise ``ConversionError`` unless ``order`` is one of :data:`FLATTEN_ORDERS` or a
    mapping of Linear module names to them."""
    values = order.values() if isinstance(order, Mapping) else [order]
    for value in values:
        if value not in FLATTEN_ORDERS:
            raise ConversionError(f"flatten_order {value!r} is not one of {FLATTEN_ORDERS}")


def parse_flatten_order(values: Sequence[str] | None) -> FlattenOrder:
    """The command line's ``--flatten-order``: one ``ORDER``, or ``LINEAR=ORDER`` per Linear.

    Raises:
        ConversionError: a mix of both forms, or an order that is not one of
            :data:`FLATTEN_ORDERS`.
    """
    if not values:
        return "channels_first"
    pairs = [v.partition("=") for v in values]
    order: FlattenOrder
    if all(sep for _, sep, _ in pairs):
        order = {name: value for name, _, value in pairs}
    elif len(values) == 1:
        order = values[0]
    else:
        raise ConversionError("--flatten-order takes one ORDER, or LINEAR=ORDER once per Linear")
    check_flatten_order(order)
    return order


def layer_lists(graph: ObjectGraph) -> dict[int, tuple[int, int]]:
    """Layer node -> ``(list, position)`` for the layers of Keras Sequential/Functional models."""
    found: dict[int, tuple[int, int]] = {}
    for node_id, node in enumerate(graph.nodes):
        items = [(int(m.group(1)), c.node_id) for c in node.children
                 if (m := _KERAS2_ITEM.fullmatch(c.local_name))]
        for c in node.children:
            if c.local_name == _KERAS3_LIST:
                items += [(int(x.local_name), x.node_id) for x in graph.nodes[c.node_id].children
                          if x.local_name.isdigit()]
        for position, item in sorted(items):
            found.setdefault(item, (node_id, position))
    return found


class _Graph:
    """The layer lists of one object graph, and which layers hold weights."""

    def __init__(self, graph: ObjectGraph) -> None:
        self.graph = graph
        self.position = layer_lists(graph)
        self.items: dict[int, dict[int, int]] = {}
        for item, (list_id, pos) in self.position.items():
            self.items.setdefault(list_id, {})[pos] = item
        self._weighted: dict[int, bool] = {}

    def weighted(self, node_id: int) -> bool:
        """Whether any variable lies below the node (bounded by the graph: each node once)."""
        if node_id not in self._weighted:
            seen, stack, found = {node_id}, [node_id], False
            while stack and not found:
                n = stack.pop()
                found = is_variable_node(self.graph, n)
                for c in self.graph.nodes[n].children:
                    if c.node_id not in seen:
                        seen.add(c.node_id)
                        stack.append(c.node_id)
            self._weighted[node_id] = found
        return self._weighted[node_id]

    def conv_before(self, node_id: int, units: Mapping[int, Unit]) -> tuple[Unit, int] | None:
        """The convolution unit feeding a Flatten before layer ``node_id``, with the number of
        weightless layers between; ``None`` if the list does not show one."""
        if node_id not in self.position:
            return None
        list_id, pos = self.position[node_id]
        gap = 0
        for p in range(pos - 1, -1, -1):
            item = self.items[list_id].get(p)
            if item is None or not self.weighted(item):
                gap += item is not None
                continue
            unit = units.get(item)
            if unit is not None and isinstance(unit.module, _NORMS):
                continue
            if unit is not None and isinstance(unit.module, _CONVS) and gap:
                return unit, gap
            return None
        return None


def plan_flatten(plan: Plan, units: Sequence[Unit], graph: ObjectGraph | None,
                 order: FlattenOrder) -> None:
    """Reorder the rows of Dense kernels that read a flattened channels-last feature map.

    ``plan.paired`` (Keras mode) and ``graph`` give the evidence; without it,
    Linears whose input size is ``C x P`` of the convolution before them get a
    warning, or the reorder when ``order`` names them.
    """
    view = _Graph(graph) if graph is not None and plan.paired else None
    unit_of_node = {g.node_id: u for u, g in plan.paired}
    group_of = {u.name: g for u, g in plan.paired}
    for i, unit in enumerate(units):
        if not isinstance(unit.module, nn.Linear):
            continue
        group: WeightGroup | None = group_of.get(unit.name)
        listed, found = False, None
        if view is not None and group is not None and group.node_id in view.position:
            listed, found = True, view.conv_before(group.node_id, unit_of_node)
        chosen = order.get(unit.name) if isinstance(order, Mapping) else order
        if found is not None:
            _apply(plan, unit, found[0], chosen or "channels_first", shown=True)
        elif isinstance(order, Mapping) and chosen is not None:
            conv = _torch_conv_before(units, i)
            if conv is None:
                plan.notes.append(f"{unit.describe()}: flatten_order names it, but no "
                                  "convolution is registered before it; its rows are kept")
            else:
                _apply(plan, unit, conv, chosen, shown=False)
        elif not listed and chosen != "channels_last":  # the graph cannot tell: warn
            _warn(plan, unit, _torch_conv_before(units, i))


def _apply(plan: Plan, linear: Unit, conv: Unit, order: str, *, shown: bool) -> None:
    channels = _channels(conv)
    index, assignment = _weight_assignment(plan, linear)
    if assignment is None or len(assignment.sources[0].shape) != 2:
        return
    rows = assignment.sources[0].shape[0]
    if rows % channels or rows == channels:
        return  # not C x P: a Dense on the channel axis, or fed by something else
    positions = rows // channels
    why = ("the object graph shows a Flatten of its feature map between them" if shown
           else "flatten_order names it")
    what = f"{linear.describe()} reads the flattened output of {conv.describe()} ({why}): "
    if order == "channels_last":
        plan.notes.append(what + "rows kept in Keras' (positions, channels) order, as "
                          "flatten_order='channels_last' asks (the torch model flattens "
                          "channels-last)")
        return
    plan.assignments[index] = Assignment(assignment.target, assignment.sources,
                                         _reordered(assignment.transform, positions, channels))
    plan.notes.append(what + f"kernel rows reordered from Keras' flatten order ({positions} "
                      f"positions x {channels} channels) to torch.flatten's ({channels} "
                      f"channels x {positions} positions); set flatten_order to 'channels_last' "
                      "(for it) if the torch model permutes to channels-last before flattening")


def _reordered(inner: Transform, positions: int, channels: int) -> Transform:
    def fn(xs: Sequence[torch.Tensor]) -> torch.Tensor:
        cols = xs[0].shape[1]
        rows = xs[0].reshape(positions, channels, cols).permute(1, 0, 2)
        return inner([rows.reshape(positions * channels, cols)])
    return Transform(f"rows (positions={positions}, channels={channels}) -> (channels, "
                     f"positions) + {inner.description}", fn)


def _weight_assignment(plan: Plan, unit: Unit) -> tuple[int, Assignment | None]:
    target = f"{unit.name}.weight" if unit.name else "weight"
    for i, a in enumerate(plan.assignments):
        if a.target == target and len(a.sources) == 1:
            return i, a
    return -1, None


def _channels(conv: Unit) -> int:
    return cast(nn.modules.conv._ConvNd, conv.module).out_channels


def _torch_conv_before(units: Sequence[Unit], i: int) -> Unit | None:
    """The convolution registered before ``units[i]``, past BatchNorms."""
    for unit in reversed(units[:i]):
        if isinstance(unit.module, _NORMS):
            continue
        return unit if isinstance(unit.module, _CONVS) else None
    return None


def _warn(plan: Plan, linear: Unit, conv: Unit | None) -> None:
    _, assignment = _weight_assignment(plan, linear)
    if conv is None or assignment is None:
        return
    channels = _channels(conv)
    n_in = cast(nn.Linear, linear.module).in_features
    if n_in % channels or n_in == channels:
        return
    plan.warnings.append(
        f"{linear.describe()} takes {n_in} = {channels} channels x {n_in // channels} "
        f"positions of {conv.describe()}: if the TF model flattens a channels-last feature map "
        "there (Keras Flatten), its kernel rows are in (positions, channels) order, not "
        "torch.flatten's (channels, positions). The object graph does not show it (a "
        "subclassed model), so the rows were loaded as stored; pass "
        f"flatten_order={{'{linear.name}': 'channels_first'}} to reorder them, or "
        f"{{'{linear.name}': 'channels_last'}} if the torch model flattens channels-last")
