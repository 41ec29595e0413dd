"""Bit-exact comparison of two dumps (see ``dist_harness.dump``)."""

from __future__ import annotations

import numpy as np


def assert_same_values(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray],
                       what: str) -> None:
    assert sorted(actual) == sorted(expected), f"{what}: keys differ"
    bad = []
    for key, want in expected.items():
        got = actual[key]
        if got.dtype != want.dtype or got.shape != want.shape or \
                got.tobytes() != want.tobytes():  # bytes: bit-exact, NaN-safe
            bad.append(f"{key}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}")
    assert not bad, f"{what}: {len(bad)} values differ:\n" + "\n".join(bad[:10])
