"""The examples in the docstrings of the resume API run (P12: examples that are skipped rot)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["torchckpt.rng", "torchckpt.data.loader", "torchckpt.manager"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
