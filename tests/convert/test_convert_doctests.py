"""The examples in the converter's public docstrings run (code-style P12)."""

from __future__ import annotations

import doctest

from convert_helpers import rand, write_object_based

import torchckpt.convert
import torchckpt.convert.registry


def test_docstring_examples(tmp_path) -> None:
    keras_prefix = write_object_based(tmp_path / "ckpt", {"model": {
        "layer_with_weights-0": {"kernel": rand(4, 3), "bias": rand(3)},
        "layer_with_weights-1": {"kernel": rand(3, 2), "bias": rand(2)}}})
    for module in (torchckpt.convert, torchckpt.convert.registry):
        result = doctest.testmod(module, extraglobs={"keras_prefix": keras_prefix},
                                 optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
