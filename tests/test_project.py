"""The README's quick start, ``scripts/test.sh`` and ``.ci/run`` agree,
and a run that requires TensorFlow fails, rather than skips, without it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from processes import run_isolated

REPO = Path(__file__).resolve().parent.parent


def _commands(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#") and ln.strip() != "set -euo pipefail"]


def test_quick_start_has_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert _commands(block) == ["bash scripts/example.sh", "bash scripts/test.sh"]
    example = _commands((REPO / "scripts" / "example.sh").read_text(encoding="utf-8"))
    assert example[-3:] == ["python -m pip install -q \"torch==2.13.0\"",
                            "python -m pip install -q -e .", "python examples/quickstart.py"]
    assert (REPO / "examples" / "quickstart.py").exists()


def test_ci_runs_the_readme_test_command() -> None:
    ci = _commands((REPO / ".ci" / "run").read_text(encoding="utf-8"))
    assert ci[-1] == "bash scripts/test.sh"
    script = _commands((REPO / "scripts" / "test.sh").read_text(encoding="utf-8"))
    first = script.index("python -m pip install torch==2.13.0")
    assert script[first:first + 3] == ["python -m pip install torch==2.13.0",
                                       "python -m pip install -e '.[test]'",
                                       "python -m ruff check ."]
    assert 'python -m mypy > "$mypy_log" 2>&1 &' in script
    assert "export TORCHCKPT_REQUIRE_TF=1 TORCHCKPT_REQUIRE_NATIVE=1" in script
    assert 'python -m pytest -q -n 2 --dist loadgroup "$@" || tests=$?' in script
    assert script[-1] == "exit $(( tests != 0 ? tests : mypy ))"


def test_ruff_and_mypy_are_configured_and_pinned() -> None:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    extra = config["project"]["optional-dependencies"]["test"]
    assert any(d.startswith("ruff==") for d in extra) and any(d.startswith("mypy==") for d in extra)
    assert config["tool"]["ruff"]["lint"]["select"]
    strict = [o for o in config["tool"]["mypy"]["overrides"] if o.get("disallow_untyped_defs")]
    assert {"torchckpt.format.*", "torchckpt.graph.*"} <= set(strict[0]["module"])
    assert strict[0]["warn_return_any"] and strict[0]["disallow_any_generics"]


def test_test_extra_pins_tensorflow() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"]["test"]
    assert "tensorflow-cpu==2.21.0" in extra and "tf-keras==2.21.0" in extra
    assert any(d.startswith("pytest") for d in extra)
    assert any(d.startswith("hypothesis") for d in extra)


@pytest.mark.parametrize("require,code", [("1", 1), ("", 0)])
def test_missing_tensorflow_fails_the_session_when_required(tmp_path: Path, require: str,
                                                            code: int) -> None:
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None\n")
    probe = REPO / "tests" / "test_no_pickle.py"  # any quick test file
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path),
           "TORCHCKPT_REQUIRE_TF": require}
    out = run_isolated([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "-k", "checker", str(probe)], cwd=REPO, env=env, timeout=300)
    assert out.returncode == code, out.stdout[-2000:] + out.stderr[-2000:]
    if code:
        assert "tensorflow cannot be imported" in out.stdout + out.stderr
