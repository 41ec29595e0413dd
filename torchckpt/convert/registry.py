"""The registry that picks a layout by the type of the target torch module.

Registries are explicit objects: :func:`default_layouts` builds a fresh one
each call, and ``load_tf_weights(..., layouts=...)`` takes a custom one, so
registering a layout for a custom module never changes global state.
"""

from __future__ import annotations

from typing import Mapping

from torch import nn

from .attention import MultiheadAttentionLayout
from .layouts import (
    BatchNormLayout,
    ConvLayout,
    ConvTransposeLayout,
    EmbeddingLayout,
    GenericLayout,
    LayerNormLayout,
    Layout,
    LinearLayout,
)
from .recurrent import GRULayout, LSTMLayout


class LayoutRegistry:
    """Maps torch module types to layouts; the most derived registered type wins.

    Example:
        >>> from torch import nn
        >>> registry = default_layouts()
        >>> type(registry.lookup(nn.Conv2d(3, 8, 3))).__name__
        'ConvLayout'
        >>> registry.lookup(nn.Sequential()) is None
        True
    """

    def __init__(self, entries: Mapping[type, Layout] | None = None) -> None:
        self._by_type: dict[type, Layout] = dict(entries or {})

    def register(self, module_type: type, layout: Layout) -> None:
        """Use ``layout`` for ``module_type`` and its subclasses."""
        self._by_type[module_type] = layout

    def lookup(self, module: nn.Module) -> Layout | None:
        for cls in type(module).__mro__:
            found = self._by_type.get(cls)
            if found is not None:
                return found
        return None

    def copy(self) -> "LayoutRegistry":
        return LayoutRegistry(self._by_type)


GENERIC = GenericLayout()


def default_layouts() -> LayoutRegistry:
    """A fresh registry with the layouts of torch's built-in modules."""
    conv, convt = ConvLayout(), ConvTransposeLayout()
    bn = BatchNormLayout()
    return LayoutRegistry({
        nn.Linear: LinearLayout(), nn.Conv1d: conv, nn.Conv2d: conv, nn.Conv3d: conv,
        nn.ConvTranspose1d: convt, nn.ConvTranspose2d: convt, nn.ConvTranspose3d: convt,
        nn.modules.batchnorm._BatchNorm: bn, nn.LayerNorm: LayerNormLayout(),
        nn.Embedding: EmbeddingLayout(), nn.LSTM: LSTMLayout(), nn.GRU: GRULayout(),
        nn.MultiheadAttention: MultiheadAttentionLayout(),
    })
