"""Tensors into a bundle, from wherever they live.

Host tensors are written from their own memory in one bulk call: by address
(``BundleWriter.add_many_at``: a tensor's ``data_ptr()`` costs ~0.1 us, a
buffer view of it ~2 us) where the C accelerator is loaded, else as buffer
views (``add_many``); either skips the per-call overhead and keeps the cyclic
GC off the old heap. Tensors on a device (GPU) go through the two pinned
staging buffers (:mod:`.staging`) piece by piece, so host memory stays bounded
whatever the size of the state.
"""

from __future__ import annotations

import contextlib
from itertools import groupby
from typing import Iterable, Iterator

import torch

from ..adapters.tensors import (
    TF_DTYPES,
    plain_host,
    plain_host_array,
    tensor_to_buffer,
    tf_dtype_of,
)
from ..format import BundleWriter
from ..format.dtypes import DataType
from .staging import StagingBuffers, device_chunks, needs_staging, staging_buffers


def host_tensor(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with ``t``'s value (``t`` itself when it already is one)."""
    t = t.detach()
    if t.device.type != "cpu" or not t.is_contiguous():
        t = t.to("cpu", copy=False).contiguous()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t


def _on_device(item: tuple[str, torch.Tensor]) -> bool:
    t = item[1]
    return not t.is_cpu and needs_staging(t.device)


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
        for on_device, run in groupby(tensors, key=_on_device):
            if on_device:
                if buffers is None:  # borrowed for the rest of this save, on first need
                    buffers = stack.enter_context(staging_buffers(staging))
                for key, t in run:
                    writer.add_chunks(key, device_chunks(t, buffers), tf_dtype_of(t.dtype),
                                      t.shape)
            elif writer.can_add_at():  # one bulk call, by address: no buffer object each
                held: list[torch.Tensor] = []  # host copies made here, alive until written
                writer.add_many_at(_host_addresses(run, held))
            else:  # one bulk call: add_many pauses the cyclic GC, skips per-call overhead
                writer.add_many(_host_items(run))


def _host_addresses(run: Iterable[tuple[str, torch.Tensor]], held: list[torch.Tensor]
                    ) -> Iterator[tuple[str, int, int, DataType, tuple[int, ...]]]:
    """``(key, address, nbytes, TF dtype, shape)`` of host tensors for
    ``BundleWriter.add_many_at``: a plain host tensor's own memory (~0.5 us each, any
    dtype), else that of a contiguous copy, appended to ``held`` so that it outlives
    the write."""
    dtypes = TF_DTYPES
    for key, t in run:
        if not plain_host(t):
            t = host_tensor(t)
            held.append(t)
        dtype = dtypes.get(t.dtype)
        yield key, t.data_ptr(), t.nbytes, \
            dtype if dtype is not None else tf_dtype_of(t.dtype), t.shape


def _host_items(run: Iterable[tuple[str, torch.Tensor]]
                ) -> Iterator[tuple[str, object, DataType, tuple[int, ...]]]:
    """``(key, buffer, TF dtype, shape)`` of host tensors for ``BundleWriter.add_many``:
    most through :func:`plain_host_array` (~1 us each), the rest made contiguous
    and exposed by :func:`tensor_to_buffer`."""
    dtypes = TF_DTYPES
    for key, t in run:
        array = plain_host_array(t)
        if array is not None:
            yield key, array, dtypes[t.dtype], t.shape
        else:
            t = host_tensor(t)
            yield key, tensor_to_buffer(t), tf_dtype_of(t.dtype), t.shape
