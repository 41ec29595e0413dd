"""Nothing on disk can execute code (code-style P14): no pickle anywhere in the package.

Checked on the source with ``ast``: no import of a pickling module, no
``torch.load``/``torch.save``, no ``numpy.load(..., allow_pickle=True)``, no
``eval``/``exec``. (tests/corruption checks that a pickle handed to the reader
is refused as corrupt bytes.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import torchckpt

ROOT = Path(torchckpt.__file__).parent
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve",
            "copyreg"}
SOURCES = sorted(ROOT.rglob("*.py"))


def findings(source: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [f"line {node.lineno}: import {a.name}" for a in node.names
                    if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
            out.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("eval", "exec") or func.endswith(("torch.load", "torch.save")) \
                    or func in ("pickle.loads", "pickle.load"):
                out.append(f"line {node.lineno}: {func}(...)")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant)
                                                     and kw.value.value is False):
                    out.append(f"line {node.lineno}: {func}(allow_pickle=...)")
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle(path: Path) -> None:
    assert not findings(path.read_text(encoding="utf-8")), path


def test_checker_finds_pickle() -> None:
    source = ("import pickle\nfrom dill import loads\nimport numpy as np\n"
              "np.load('x', allow_pickle=True)\ntorch.load('y')\neval('1')\n")
    assert len(findings(source)) == 5
