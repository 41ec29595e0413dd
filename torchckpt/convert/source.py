"""The checkpoint side of a conversion: every tensor key with its dtype, shape and graph node.

A :class:`Source` wraps :func:`torchckpt.load_checkpoint` and, for object-based
checkpoints, the decoded :class:`~torchckpt.graph.object_graph.ObjectGraph`.
Values are read only when a conversion is applied, so planning (matching,
shape checks, the report) costs one pass over the ``.index`` file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from ..graph.keys import OBJECT_GRAPH_PROTO_KEY, VARIABLE_VALUE_KEY
from ..graph.object_graph import ObjectGraph
from ..reader import CheckpointReader, load_checkpoint

#: Float dtypes a weight can have; other variables (counters, RNG state, strings) are bookkeeping.
FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


@dataclass(frozen=True, slots=True)
class SourceVar:
    """One tensor of the checkpoint.

    Attributes:
        key: the bundle key.
        shape: its shape.
        dtype: the torch dtype it reads as, or TF's dtype name where torch has none.
        name: its local name inside the object that holds it (``kernel``, ``_kernel``,
            ``weights``), or the last component of a name-based key.
        full_name: the variable's graph name from the object graph (``dense/kernel``).
        node_id: its object-graph node, ``None`` for name-based checkpoints.
    """

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype | str
    name: str = ""
    full_name: str = ""
    node_id: int | None = None

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def renamed(self, name: str) -> "SourceVar":
        return replace(self, name=name)


def not_a_weight(var: SourceVar) -> str:
    """Why a variable that is not a float tensor is skipped, for the report."""
    if var.dtype == "variant":
        return ("variant value (a tf.data iterator's state, for instance): torch has no type "
                "for it, so it is not converted")
    if var.dtype == "resource" or (isinstance(var.dtype, str) and var.dtype.startswith("DT_<")):
        return f"{var.dtype} value: torch has no type for it, so it is not converted"
    return f"{var.dtype} value, not a weight"


class Source:
    """An open checkpoint: its keys, the object graph if any, and values on demand.

    Use as a context manager (it holds memory-mapped data files).

    Args:
        path: a checkpoint prefix, a directory (its latest checkpoint) or a bundle file name.

    Raises:
        CheckpointNotFoundError: nothing to open at ``path``.
        CorruptCheckpointError: the index, the shard set or the object graph is damaged.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.reader: CheckpointReader = load_checkpoint(path)
        self.prefix = self.reader.prefix
        try:
            shapes = self.reader.get_variable_to_shape_map()
            dtypes = self.reader.get_variable_to_dtype_map()
            self.graph: ObjectGraph | None = None
            if OBJECT_GRAPH_PROTO_KEY in shapes:
                raw = self.reader.get_tensor(OBJECT_GRAPH_PROTO_KEY)
                self.graph = ObjectGraph.from_bytes(raw, path=self.prefix)  # type: ignore[arg-type]
        except BaseException:
            self.reader.close()
            raise
        self.vars: dict[str, SourceVar] = {
            k: SourceVar(k, tuple(shapes[k]), dtypes[k], k.rsplit("/", 1)[-1])
            for k in sorted(shapes) if k != OBJECT_GRAPH_PROTO_KEY}
        if self.graph is not None:
            self._attach_graph(self.graph)

    def _attach_graph(self, graph: ObjectGraph) -> None:
        """Give each variable its node id and ``full_name`` (attribute ``VARIABLE_VALUE``)."""
        for node_id, node in enumerate(graph.nodes):
            for attr in node.attributes:
                var = self.vars.get(attr.checkpoint_key)
                if var is not None and attr.name == VARIABLE_VALUE_KEY and var.node_id is None:
                    self.vars[attr.checkpoint_key] = replace(var, full_name=attr.full_name,
                                                             node_id=node_id)

    def variable_of_node(self, node_id: int) -> SourceVar | None:
        """The variable a graph node holds (its ``VARIABLE_VALUE`` attribute), if any."""
        if self.graph is None or not 0 <= node_id < len(self.graph.nodes):
            return None
        for attr in self.graph.nodes[node_id].attributes:
            if attr.name == VARIABLE_VALUE_KEY and attr.checkpoint_key in self.vars:
                return self.vars[attr.checkpoint_key]
        return None

    def read(self, key: str) -> torch.Tensor:
        """The value of a numeric key as a tensor (a fresh copy, CRC32C verified).

        Raises:
            KeyNotFoundError, ChecksumMismatchError, CorruptCheckpointError: see
                :meth:`CheckpointReader.get_tensor`.
            TypeError: ``key`` holds strings.
        """
        value = self.reader.get_tensor(key)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"checkpoint key {key!r} holds strings, not numbers")
        return value

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
