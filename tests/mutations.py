"""Damaged copies of valid bytes, for tests that check a decoder against its reference."""

from __future__ import annotations

import random


def mutated(data: bytes, rng: random.Random, most: int = 4) -> bytes:
    """``data`` after 1 to ``most`` random edits: a byte flipped, deleted or inserted, or
    the tail cut off."""
    out = bytearray(data)
    for _ in range(rng.randint(1, most)):
        if not out:
            break
        i, op = rng.randrange(len(out)), rng.random()
        if op < 0.4:
            out[i] = rng.randrange(256)
        elif op < 0.6:
            del out[i]
        elif op < 0.8:
            out.insert(i, rng.randrange(256))
        else:
            del out[i:]
    return bytes(out)
