"""Imports only go down the layers (code-style P2), checked on the source with ``ast``.

    errors <- format <- graph <- adapters <- API (reader, checkpoint, manager, convert, cli, ...)

* ``torchckpt.format`` imports no torch and nothing of torchckpt but ``errors`` and itself;
* ``torchckpt.graph`` imports no torch, and only ``errors``, ``format`` and itself;
* ``torchckpt.adapters`` imports nothing of the API layer (nor the root package,
  which re-exports it).
Function-level imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import torchckpt

ROOT = Path(torchckpt.__file__).parent
LAYERS = ["errors", "format", "graph", "adapters"]  # everything else is the API layer
MAY_IMPORT = {
    "errors": {"errors"},
    "format": {"errors", "format"},
    "graph": {"errors", "format", "graph"},
    "adapters": {"errors", "format", "graph", "adapters"},
}
NO_TORCH = {"format", "graph"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"  # the root package re-exports the API
    return parts[1] if parts[1] in LAYERS else "api"


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    base = ROOT.parent / rel
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imported_modules(source: str, name: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in module ``name``, relative ones resolved."""
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            out += [(node.lineno, s) for s in subs] or [(node.lineno, target)]
    return out


def imports_of(path: Path) -> list[tuple[int, str]]:
    return imported_modules(path.read_text(encoding="utf-8"), module_name(path),
                            is_package=path.name == "__init__.py")


SOURCES = sorted(ROOT.rglob("*.py"))


def test_sources_found() -> None:
    assert any(layer(module_name(p)) == "format" for p in SOURCES)
    assert imports_of(ROOT / "format" / "bundle_reader.py")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down(path: Path) -> None:
    own = layer(module_name(path))
    if own == "api":
        return
    problems = []
    for line, target in imports_of(path):
        top = target.split(".")[0]
        if top in ("torch", "torchvision") and own in NO_TORCH:
            problems.append(f"line {line}: {own} imports {target}")
        if top == "torchckpt" and layer(target) not in MAY_IMPORT[own]:
            problems.append(f"line {line}: {own} imports {target} ({layer(target)} layer)")
    assert not problems, f"{path.relative_to(ROOT.parent)}: " + "; ".join(problems)


def test_checker_catches_upward_imports() -> None:
    source = ("from ..adapters import tensors\nfrom .. import reader, errors\n"
              "def f():\n    import torch.nn\n    from ..graph.keys import x\n")
    found = imported_modules(source, "torchckpt.format.probe")
    assert [(line, layer(t) if t.startswith("torchckpt") else t) for line, t in found] == [
        (1, "adapters"), (2, "api"), (2, "errors"), (4, "torch.nn"), (5, "graph")]
