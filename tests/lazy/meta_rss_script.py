"""Run by ``test_lazy_meta_rss.py`` in fresh interpreters, so each has its own peak RSS.

``write PREFIX LAYERS WIDTH``: a model of ``LAYERS`` Linear(WIDTH, WIDTH) layers
whose weights are zero except for a marker every 4 MiB and whose biases are
per-layer constants, written with torchckpt. The zeros are fresh, never-touched
memory (reads of it map the kernel's zero page), so the writer neither spends
seconds faulting in 2 GiB nor holds it resident.

``restore PREFIX LAYERS WIDTH``: the same model built on the meta device, with
every initializer made to raise; restores it onto the CPU (``read``: the file
has no ``save_counter``) and prints, as JSON, the peak resident set
(``VmHWM``), the resident set before restoring, and the model's size; then
checks every value (after reading the peak, since checking allocates).
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn

from torchckpt import Checkpoint, CheckpointOptions


def build(layers: int, width: int) -> nn.Sequential:
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


MARK_EVERY = 1 << 20  # elements: one float32 marker per 4 MiB


def marked(layer: nn.Linear, i: int) -> torch.Tensor:
    return layer.weight.detach().view(-1)[::MARK_EVERY]


def check(layer: nn.Linear, i: int) -> None:
    """Markers equal ``i + 1``, every other weight 0, every bias ``-(i + 1)``."""
    marks = marked(layer, i)
    assert bool((marks == i + 1.0).all()), f"layer {i}: markers"
    assert int(layer.weight.count_nonzero()) == marks.numel(), f"layer {i}: not zero elsewhere"
    assert bool((layer.bias == -(i + 1.0)).all()), f"layer {i}: bias"


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def write(prefix: str, layers: int, width: int) -> None:
    with torch.device("meta"):
        model = build(layers, width)
    model.to_empty(device="cpu")  # large fresh allocations: untouched, all-zero pages
    with torch.no_grad():
        for i, layer in enumerate(model):
            marked(layer, i).fill_(i + 1.0)
            layer.bias.fill_(-(i + 1.0))
            check(layer, i)  # fails should the allocator ever hand out dirty memory
    Checkpoint(model=model).write(prefix, CheckpointOptions(sync=False))


def _forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError("an initializer ran during restore")


def restore(prefix: str, layers: int, width: int) -> None:
    with torch.device("meta"):
        model = build(layers, width)
    for name in dir(nn.init):  # from here on, any initializer is an error
        if name.endswith("_") and not name.startswith("_"):
            setattr(nn.init, name, _forbidden)
    nn.Linear.reset_parameters = _forbidden  # type: ignore[method-assign]
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    before = status_kib("VmRSS")
    status = Checkpoint(model=model).read(prefix)
    peak = status_kib("VmHWM")
    status.assert_consumed()
    for i, layer in enumerate(model):
        for p in layer.parameters():
            assert p.device.type == "cpu" and isinstance(p, nn.Parameter) and p.requires_grad
        check(layer, i)
    print(json.dumps({"peak_kib": peak, "before_kib": before, "model_bytes": model_bytes}))


if __name__ == "__main__":
    mode, prefix, layers, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    {"write": write, "restore": restore}[mode](prefix, layers, width)
