"""Shared test configuration.

* Markers (declared in pyproject.toml): ``tf`` runs real TensorFlow, ``slow``.
* Hypothesis profiles: ``ci`` (the default: derandomized, modest example
  counts, no example database written into the tree) and ``dev`` (random,
  more examples). Pick one with ``HYPOTHESIS_PROFILE=dev``.
* ``scripts/test.sh`` runs the suite on two pytest-xdist workers (``-n 2 --dist
  loadgroup``): each test file is one group, so its module fixtures are made
  once, and the files of ``tests/convert`` form one group, so the TensorFlow
  and transformers models they share are built once.
* TensorFlow interop tests are never skipped. When ``CI`` or
  ``TORCHCKPT_REQUIRE_TF`` is set and TensorFlow cannot be imported, the whole
  session fails at once; otherwise each ``tf`` test fails with a hint. For a
  quick inner loop without TensorFlow, deselect them: ``pytest -m "not tf"``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Quiet, deterministic TensorFlow (set before anything imports it). GPUs stay visible:
# tensorflow-cpu does not use them, and torch's CUDA tests run where there is one.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

settings.register_profile("ci", derandomize=True, max_examples=40, deadline=None,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _tf_required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("TORCHCKPT_REQUIRE_TF"))


def _import_tf() -> tuple[object | None, str]:
    try:
        import tensorflow
    except Exception as exc:  # ImportError, or a broken installation
        return None, f"{type(exc).__name__}: {exc}"
    return tensorflow, ""


def pytest_sessionstart(session: pytest.Session) -> None:
    if _tf_required():  # importing for real also catches a broken installation
        module, why = _import_tf()
        if module is None:
            pytest.exit(f"tensorflow cannot be imported ({why}), but CI/TORCHCKPT_REQUIRE_TF "
                        "requires the interop tests: run `bash scripts/test.sh`", returncode=1)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One xdist group per test file (see the module doc), ``tests/convert`` as one."""
    root = config.rootpath
    for item in items:
        rel = item.path.relative_to(root) if item.path.is_relative_to(root) else item.path
        group = "tests/convert" if rel.parts[:2] == ("tests", "convert") else rel.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def tf():  # noqa: ANN201 - the tensorflow module
    """The ``tensorflow`` module, imported on first use (only ``tf`` tests pay for it)."""
    module, why = _import_tf()
    if module is None:
        pytest.fail(f"tensorflow cannot be imported ({why}): run `bash scripts/test.sh`, or "
                    "deselect the interop tests with -m 'not tf'", pytrace=False)
    return module
