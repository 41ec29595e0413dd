"""Named tensor transforms from TF layouts to torch layouts, and the planned assignments.

A :class:`Transform` is a pure function of the source tensors with a
human-readable description that goes into the conversion report. Every
transform is structural (transpose, permute, reshape, select, concatenate) or a
constant, so the same transform also converts optimizer slots (Adam's ``m`` of
a kernel is transposed exactly like the kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .source import SourceVar

Tensor = torch.Tensor


@dataclass(frozen=True, slots=True)
class Transform:
    """``fn(sources) -> tensor`` with the ``description`` shown in reports."""

    description: str
    fn: Callable[[Sequence[Tensor]], Tensor]

    def __call__(self, sources: Sequence[Tensor]) -> Tensor:
        return self.fn(sources)

    @property
    def is_constant(self) -> bool:
        return self.description.startswith("constant")


@dataclass(frozen=True, slots=True)
class Assignment:
    """One torch ``state_dict`` entry computed from checkpoint tensors.

    Attributes:
        target: the ``state_dict`` name.
        sources: the checkpoint variables, in the order ``transform`` takes them.
        transform: how they become the target's value.
    """

    target: str
    sources: tuple[SourceVar, ...]
    transform: Transform


@dataclass
class UnitPlan:
    """What one torch module takes from the checkpoint.

    Attributes:
        assignments: the values to copy.
        problems: reasons the module and its sources do not fit; any problem
            cancels every assignment of the unit.
        unfilled: ``state_dict`` names left without a value, with the reason.
        unused: checkpoint keys offered to the unit but not used, with the reason.
        ignored: ``state_dict`` names that have no TF counterpart by design.
        notes: things to know that are not errors (epsilon, forget bias).
    """

    assignments: list[Assignment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unfilled: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


IDENTITY = Transform("identity", lambda xs: xs[0])
TRANSPOSE = Transform("transpose(1, 0)", lambda xs: xs[0].t())


def permute(perm: tuple[int, ...]) -> Transform:
    return Transform(f"permute{perm}", lambda xs: xs[0].permute(perm))


def constant(value: float, like: Tensor, why: str) -> Transform:
    shape, dtype = tuple(like.shape), like.dtype
    return Transform(f"constant {value:g} ({why})",
                     lambda xs: torch.full(shape, value, dtype=dtype))


def matrix_splits(shape: Sequence[int]) -> list[tuple[int, int]]:
    """The ``(rows, columns)`` a kernel's dimensions fold into, splitting between any two.

    An EinsumDense query kernel ``[32, 4, 8]`` folds into ``(32, 32)`` (the
    input, then heads x head_dim) or ``(128, 8)``; the output kernel
    ``[4, 8, 32]`` into ``(4, 256)`` or ``(32, 32)``. Row-major folding keeps
    heads outermost, which is how ``view(batch, seq, heads, head_dim)`` splits
    a torch ``Linear``'s output.
    """
    found: list[tuple[int, int]] = []
    for cut in range(1, len(shape)):
        rows = _prod(shape[:cut])
        pair = (rows, _prod(shape[cut:]))
        if pair not in found:
            found.append(pair)
    return found


def fold_kernel(shape: Sequence[int], rows: int, cols: int) -> Transform | None:
    """``kernel [..] -> weight [cols, rows]``: fold the dimensions into ``[rows, cols]`` and
    transpose, or ``None`` when no split of ``shape`` gives ``(rows, cols)``."""
    if len(shape) == 2:
        return TRANSPOSE if tuple(shape) == (rows, cols) else None
    if (rows, cols) not in matrix_splits(shape):
        return None
    return Transform(f"reshape {list(shape)} to [{rows}, {cols}] + transpose(1, 0)",
                     lambda xs: xs[0].reshape(rows, cols).t())


def flatten_to(shape: Sequence[int]) -> Transform:
    """A bias of shape ``[heads, head_dim]`` (EinsumDense) as the vector a Linear holds."""
    if len(shape) == 1:
        return IDENTITY
    return Transform(f"reshape {list(shape)} to [{_prod(shape)}]", lambda xs: xs[0].reshape(-1))


def _prod(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def reorder_gates(t: Tensor, order: Sequence[int]) -> Tensor:
    """Reorder the equal-size gate blocks along dim 0 (torch RNN weights stack gates by row)."""
    chunks = t.chunk(len(order), dim=0)
    return torch.cat([chunks[i] for i in order], dim=0)


def output_shape(transform: Transform, sources: Sequence[SourceVar]) -> tuple[int, ...]:
    """The shape ``transform`` gives for these sources, computed on meta tensors (no memory).

    Raises:
        RuntimeError: the transform does not apply to these shapes.
    """
    metas = [torch.empty(v.shape, device="meta",
                         dtype=v.dtype if isinstance(v.dtype, torch.dtype) else torch.float32)
             for v in sources]
    return tuple(transform(metas).shape)
