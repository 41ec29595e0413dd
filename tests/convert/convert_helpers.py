"""Helpers of the converter tests: paths, TF-free synthetic checkpoints, error measures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Union

import numpy as np
import torch

from torchckpt.format import BundleWriter, from_numpy_dtype
from torchckpt.graph.keys import OBJECT_GRAPH_PROTO_KEY, format_key, object_path
from torchckpt.graph.object_graph import Attribute, ChildRef, GraphNode, ObjectGraph

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "tf"

Tree = Mapping[str, Union["Tree", np.ndarray]]


def fixture_arrays(case: str, prefix: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / case / f"{prefix}.expected.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_name_based(prefix: str | os.PathLike[str], values: Mapping[str, np.ndarray]) -> str:
    """A TF1-style checkpoint: keys are variable names, no object graph."""
    writer = BundleWriter(os.fspath(prefix), sync=False)
    for key, value in values.items():
        value = np.ascontiguousarray(value)
        writer.add(key, value, from_numpy_dtype(value.dtype), value.shape)
    writer.finish()
    return os.fspath(prefix)


def write_object_based(prefix: str | os.PathLike[str], tree: Tree) -> str:
    """An object-based checkpoint of nested objects (dicts) and variables (arrays).

    Node ids are breadth-first and children keep the dict order, as TF numbers them.
    """
    nodes = [GraphNode()]
    writer = BundleWriter(os.fspath(prefix), sync=False)
    queue: list[tuple[int, Tree, tuple[str, ...]]] = [(0, tree, ())]
    for parent, obj, path in queue:
        for name, value in obj.items():
            node_id = len(nodes)
            nodes.append(GraphNode())
            nodes[parent].children.append(ChildRef(node_id, name))
            here = path + (name,)
            if isinstance(value, np.ndarray):
                key = format_key(object_path(here))
                nodes[node_id].attributes.append(Attribute("VARIABLE_VALUE", key, "/".join(here)))
                value = np.ascontiguousarray(value)
                writer.add(key, value, from_numpy_dtype(value.dtype), value.shape)
            else:
                queue.append((node_id, value, here))
    writer.add_strings(OBJECT_GRAPH_PROTO_KEY, [ObjectGraph(nodes).to_bytes()], ())
    writer.finish()
    return os.fspath(prefix)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).normal(size=shape).astype(np.float32)


def rel_error(got: torch.Tensor | np.ndarray, want: np.ndarray) -> float:
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
