"""How bytes travel between a bundle and tensors.

Restoring: :class:`BundleValue` is one checkpoint value as an adapter sees it;
it reads into existing tensors in place (queued for one batched
``read_many_into`` when a batch is given), onto GPUs through pinned staging
buffers, and the local box of DTensors (``distributed/reshard.py``). Saving:
:func:`add_tensors` writes host tensors from their own memory in one bulk call
and device tensors through the staging buffers.
"""

from __future__ import annotations

import contextlib
import json
from itertools import groupby
from typing import Any, Iterable

import torch

from .adapters.tensors import array_to_tensor, tensor_to_buffer, tf_dtype_of, torch_dtype_of
from .distributed.layout import is_dtensor
from .distributed.reshard import copy_into, dtensor_like
from .errors import CorruptCheckpointError
from .format import BundleReader, BundleWriter
from .format.dtypes import FIXED_WIDTH, DataType, dtype_name
from .format.records import ENDIAN_LITTLE
from .staging import (
    StagingBuffers,
    device_chunks,
    needs_staging,
    read_to_device,
    staging_buffers,
)

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
            copy_into(self._reader, self.key, dest)  # slices land in place (distributed/)
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
        rank's part is read (``torchckpt.distributed``); otherwise :meth:`tensor` on
        ``template``'s device."""
        if is_dtensor(template) and tuple(template.shape) == self.shape:
            return dtensor_like(self._reader, self.key, template)
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



def host_tensor(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with ``t``'s value (``t`` itself when it already is one)."""
    t = t.detach()
    if t.device.type != "cpu" or not t.is_contiguous():
        t = t.to("cpu", copy=False).contiguous()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t


def add_tensors(writer: BundleWriter, tensors: Iterable[tuple[str, torch.Tensor]],
                staging: StagingBuffers | None = None) -> None:
    """Add each ``(key, tensor)`` to ``writer``, in order, from wherever the tensor lives.

    Host tensors are written from their own memory in one bulk call; tensors on
    a device (GPU) through the two pinned staging buffers (:mod:`.staging`) of
    ``staging`` (or buffers for this call only), piece by piece, so host memory
    stays bounded.
    """
    buffers: list[torch.Tensor] | None = None
    with contextlib.ExitStack() as stack:
        for on_device, run in groupby(tensors, key=lambda kv: needs_staging(kv[1].device)):
            if on_device:
                if buffers is None:  # borrowed for the rest of this save, on first need
                    buffers = stack.enter_context(staging_buffers(staging))
                for key, t in run:
                    writer.add_chunks(key, device_chunks(t, buffers), tf_dtype_of(t.dtype),
                                      t.shape)
            else:  # one bulk call: add_many pauses the cyclic GC, skips per-call overhead
                writer.add_many((key, tensor_to_buffer(t), tf_dtype_of(t.dtype), t.shape)
                                for key, t in ((k, host_tensor(v)) for k, v in run))
