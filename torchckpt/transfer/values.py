"""One checkpoint value as an adapter sees it, read when the adapter asks.

:class:`BundleValue` picks the way its bytes travel: into an existing host
tensor in place (queued for the session's one batched ``read_many_into`` when
it has a batch), onto a GPU through the pinned staging buffers
(:mod:`.staging`), into this rank's box of a DTensor or piece by piece from a
sliced entry (:mod:`.boxes`), or through ``read_array`` for values that need
decoding. Python state (strings) comes back as text or JSON, never unpickled.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from ..adapters.tensors import array_to_tensor, tensor_to_buffer, torch_dtype_of
from ..distributed.layout import is_dtensor
from ..errors import CorruptCheckpointError
from ..format import BundleReader
from ..format.dtypes import FIXED_WIDTH, DataType, dtype_name
from ..format.records import ENDIAN_LITTLE
from . import boxes
from .staging import StagingBuffers, needs_staging, read_to_device, staging_buffers

# Python state (JSON) may nest at most this deep. The adapters that rebuild it
# (state_dict decoders, type checks) recurse over it, so a file could otherwise
# pick the recursion depth; real state (optimizer, scheduler, data loader
# state_dicts) nests fewer than ten levels.
MAX_JSON_DEPTH = 100


def json_depth(data: Any) -> int:
    """How deeply lists and dicts nest in parsed JSON (a scalar is 0), found iteratively."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((x, depth + 1) for x in (value.values() if isinstance(value, dict)
                                                   else value))
    return deepest


class BundleValue:
    """One checkpoint value, read when an adapter asks for it."""

    def __init__(self, reader: BundleReader, key: str, device: torch.device,
                 batch: list[tuple[str, memoryview]] | None = None,
                 staging: StagingBuffers | None = None) -> None:
        self._reader = reader
        self._batch = batch
        self._staging = staging
        self.key = key
        entry = reader.entry(key)
        self.dtype = entry.dtype
        self.shape = tuple(entry.shape)
        self._entry = entry
        self._device = device
        self.path = reader.index_path

    def _direct(self) -> bool:
        e = self._entry
        return (not e.slices and e.dtype in FIXED_WIDTH
                and self._reader.header.endianness == ENDIAN_LITTLE)

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """A new tensor holding the value, read straight into its memory when possible."""
        device = torch.device(device) if device is not None else self._device
        if self._direct():  # its payload is checked to hold the value before it is allocated
            self._reader.payload_location(self.key)
        if self._direct() and needs_staging(device):  # onto the GPU, through pinned buffers
            out = torch.empty(self.shape, dtype=torch_dtype_of(self.dtype), device=device)
            with staging_buffers(self._staging) as buffers:
                read_to_device(self._reader, self.key, out, buffers)
            return out
        if self._direct():
            out = torch.empty(self.shape, dtype=torch_dtype_of(self.dtype))
            self._reader.read_into(self.key, tensor_to_buffer(out))
        else:
            out = array_to_tensor(self._reader.read_array(self.key), self.dtype)
        return out if device.type == "cpu" else out.to(device)

    def copy_into(self, dest: torch.Tensor) -> None:
        if is_dtensor(dest) or self._entry.slices:  # a DTensor reads only this rank's part;
            boxes.copy_into(self._reader, self.key, dest)  # slices land in place
            return
        in_place = dest.is_contiguous() and self._direct() and not dest.is_conj() \
            and not dest.is_neg()
        if in_place and needs_staging(dest.device):  # a GPU tensor: through the pinned buffers
            with staging_buffers(self._staging) as buffers:
                read_to_device(self._reader, self.key, dest, buffers)
        elif in_place and dest.device.type == "cpu":
            if self._batch is not None and dest.numel():
                # read later, together with the other values of this pass (read_many_into)
                self._batch.append((self.key, tensor_to_buffer(dest)))
            else:
                self._reader.read_into(self.key, tensor_to_buffer(dest))
        else:
            dest.copy_(self.tensor("cpu"))

    def tensor_like(self, template: torch.Tensor) -> torch.Tensor:
        """A new tensor holding the value, laid out like ``template``: for a DTensor of
        the value's shape, a DTensor on its mesh and placements of which only this
        rank's part is read (:mod:`.boxes`); otherwise :meth:`tensor` on
        ``template``'s device."""
        if is_dtensor(template) and tuple(template.shape) == self.shape:
            return boxes.dtensor_like(self._reader, self.key, template)
        return self.tensor(template.device)

    def text(self) -> str:
        """A scalar string value (JSON python state) as text.

        Raises:
            CorruptCheckpointError: not a scalar string, or not UTF-8 (pickled
                bytes, say: they are reported, never loaded).
        """
        if self.dtype != DataType.DT_STRING or self.shape != ():
            raise CorruptCheckpointError(self.path, "expected a scalar string (python state), "
                                         f"found {dtype_name(self.dtype)}{list(self.shape)}",
                                         key=self.key)
        raw = self._reader.read_array(self.key).item()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptCheckpointError(self.path, "python state is not UTF-8 JSON (torchckpt "
                                         "never unpickles)", key=self.key) from exc

    def json(self) -> Any:
        """:meth:`text` parsed as JSON: plain data, nothing is imported or called.

        Raises:
            CorruptCheckpointError: the text is not JSON.
        """
        text = self.text()
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CorruptCheckpointError(self.path, f"python state is not JSON ({exc})",
                                         key=self.key) from exc
        depth = json_depth(data)
        if depth > MAX_JSON_DEPTH:
            raise CorruptCheckpointError(self.path, f"python state is nested {depth} levels "
                                         f"deep (at most {MAX_JSON_DEPTH})", key=self.key)
        return data
