"""Write a converted torch model as a safetensors file that ``load_state_dict`` accepts.

``torchckpt convert PATH --model MODULE:FACTORY --to out.safetensors`` builds the
model with the user's factory, fills it with :func:`~torchckpt.convert.load_tf_weights`
(every layout change applied) and saves its ``state_dict`` here under torch's
names. The factory is named on the command line by the user; nothing a
checkpoint file says is ever imported. ``convert --raw`` writes the checkpoint's
own tensors instead (:func:`raw_tensors`): TF keys, TF layouts.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Mapping, cast

import torch
from torch import nn

from ..errors import CheckpointWriteError, TorchckptError
from ..graph.keys import OBJECT_GRAPH_PROTO_KEY
from ..reader import CheckpointReader
from .assignment import AssignmentMap, check_rules_used, parse_assignment_map, rename


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable ``spec`` names: ``package.module:factory`` or ``path/to/file.py:factory``.

    A module name is imported with the current directory on ``sys.path`` (as
    ``python -m`` does); ``factory`` may be dotted (``models:Nets.small``) and is
    called with no arguments.

    Raises:
        TorchckptError: ``spec`` is malformed, or the module or name cannot be found.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TorchckptError(f"--model {spec!r}: expected MODULE:FACTORY, e.g. "
                             "'mypackage.models:make_model' or 'models.py:Net'")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            loaded = _import_file(module_name)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            loaded = importlib.import_module(module_name)
        obj: object = loaded
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise TorchckptError(f"--model {spec!r}: cannot load it: {exc}") from exc
    if not callable(obj):
        raise TorchckptError(f"--model {spec!r}: {attr} is not callable")
    return cast(Callable[[], nn.Module], obj)


def _import_file(path: str) -> object:
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(spec: str) -> nn.Module:
    """Call the factory ``spec`` names and check that it returns an ``nn.Module``.

    Raises:
        TorchckptError: as :func:`load_factory`, or the factory returns something else.
    """
    model = load_factory(spec)()
    if not isinstance(model, nn.Module):
        raise TorchckptError(f"--model {spec!r} returned {type(model).__name__}, not a "
                             "torch.nn.Module")
    return model


def save_state_dict(module: nn.Module, path: str | os.PathLike[str],
                    metadata: Mapping[str, str] | None = None) -> int:
    """Save ``module.state_dict()`` to a safetensors file (atomically); the tensor count.

    Tensors that share memory (tied weights) are stored once each under every
    name, so ``load_state_dict(strict=True)`` finds them all.

    Raises:
        CheckpointWriteError: the file cannot be written.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()  # safetensors refuses two names on one storage
    for name, value in module.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        storage = t.untyped_storage().data_ptr()
        tensors[name] = t.clone() if storage in seen else t
        if storage:
            seen.add(storage)
    save_tensors(tensors, path, metadata)
    return len(tensors)


@dataclass
class RawTensors:
    """The numeric tensors of a checkpoint under their keys (or assignment-map names).

    Attributes:
        tensors: name -> value, in TF's layout.
        left_out: keys not taken (strings, complex, dtypes torch lacks, unmapped).
        warnings: assignment-map patterns that matched nothing.
        prefix: the checkpoint read.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prefix: str = ""


def raw_tensors(reader: CheckpointReader, assignment_map: AssignmentMap | None = None,
                on_key: Callable[[], None] | None = None) -> RawTensors:
    """Every numeric tensor of ``reader``, renamed by ``assignment_map`` (names only).

    Raises:
        AssignmentMapError: the map is malformed or matches no key.
        TorchckptError: the map gives two keys one name.
    """
    rules = parse_assignment_map(assignment_map) if assignment_map is not None else None
    dtypes = reader.get_variable_to_dtype_map()
    keys = sorted(k for k in dtypes if k != OBJECT_GRAPH_PROTO_KEY)
    dump = RawTensors(prefix=reader.prefix)
    dump.warnings = check_rules_used(rules, keys) if rules is not None else []
    for key in keys:
        if on_key is not None:
            on_key()
        name = key if rules is None else rename(rules, key)
        dtype = dtypes[key]
        if name is None or not isinstance(dtype, torch.dtype) or dtype.is_complex:
            dump.left_out.append(key)
            continue
        if name in dump.tensors:
            raise TorchckptError(f"assignment map gives two keys the name {name!r}")
        dump.tensors[name] = cast(torch.Tensor, reader.get_tensor(key)).contiguous()
    return dump


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` to a safetensors file: a temporary name, then a rename.

    Raises:
        CheckpointWriteError: the file cannot be written.
    """
    from safetensors.torch import save_file

    target = os.fspath(path)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        save_file(dict(tensors), tmp, metadata=dict(metadata or {}))
        os.replace(tmp, target)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise CheckpointWriteError(exc.errno or 0, f"cannot write '{target}': {exc.strerror}",
                                   target) from exc
