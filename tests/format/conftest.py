"""Fixtures shared by the format-layer tests."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


@pytest.fixture
def native() -> ModuleType:
    """The portable C extension of the format layer (``_entries_native``); the test is
    skipped where the install could not compile it, except under ``scripts/test.sh``
    (TORCHCKPT_REQUIRE_NATIVE), where a missing build fails."""
    if os.environ.get("TORCHCKPT_REQUIRE_NATIVE"):
        return importlib.import_module("torchckpt.format._entries_native")
    return pytest.importorskip("torchckpt.format._entries_native")
