"""Layer 2: torch adapters. Internal, no stability guarantee.

``default_registry`` knows torch modules, optimizers, tensors, generators,
Python numbers and containers, and anything with ``state_dict()`` /
``load_state_dict()``. Register more with ``default_registry.register``.
"""

from __future__ import annotations

import torch

from .containers import DictAdapter, ListAdapter
from .module import ModuleAdapter
from .optimizer import OptimizerAdapter
from .registry import Adapter, AdapterRegistry, Checkpointable
from .stateful import StatefulAdapter
from .values import GeneratorAdapter, ScalarAdapter, TensorAdapter, ValueSlot


def _default() -> AdapterRegistry:
    reg = AdapterRegistry()
    reg.register(torch.Tensor, TensorAdapter)
    reg.register(torch.Generator, GeneratorAdapter)
    reg.register(ValueSlot, ScalarAdapter)
    reg.register(dict, DictAdapter)
    reg.register(list, ListAdapter)
    reg.register(tuple, ListAdapter)
    reg.register(torch.nn.Module, ModuleAdapter)
    reg.register(torch.optim.Optimizer, OptimizerAdapter)
    reg.register_predicate(lambda o: isinstance(o, Checkpointable), StatefulAdapter)
    return reg


default_registry = _default()

__all__ = ["Adapter", "AdapterRegistry", "Checkpointable", "default_registry", "ValueSlot"]
