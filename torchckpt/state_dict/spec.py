"""The nested-structure format: its constants, and the refusal a value that cannot be
stored raises while a structure is walked (see the package doc for the layout)."""

from __future__ import annotations

import torch

from ..graph.keys import format_key

STRUCTURE_KEY = "_TORCHCKPT_NESTED_STRUCTURE"
FORMAT_VERSION = 1
MAX_DEPTH = 200  # containers nest at most this deep (saving and loading alike)
_ALIGNMENT = 64  # payload alignment: mmap-able for every dtype, cache-line sized
# format_key(path) == path + _KEY_SUFFIX: keys are formatted by concatenation, one per tensor
_KEY_SUFFIX = format_key("")

Location = torch.device | str | None  # map_location, as torch.load takes it



class _Refused(Exception):
    """A value :class:`_Encoder` cannot save; ``place`` collects its place on the way up
    (innermost first), so that places are formatted only for the error message."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.place: list[str] = []
