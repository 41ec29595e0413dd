#!/usr/bin/env bash
# Installs everything the tests need and runs the whole suite (README "Quick start"; .ci/run).
#
# torch 2.13.0 goes in first so that the project's `torch>=2.4` requirement is already
# satisfied by it; then the project itself with its `test` extra, which pins
# tensorflow-cpu and tf-keras 2.21.0 for the interop tests. TORCHCKPT_REQUIRE_TF makes
# the suite fail at once, rather than skip, when TensorFlow cannot be imported;
# TORCHCKPT_REQUIRE_NATIVE fails it when the install did not compile the C accelerator
# (torchckpt/format/_native.c) on x86-64 Linux, so the suite tests what users get.
# ruff (style, imports, likely bugs) and mypy (strict for format/ and graph/) run first;
# their configuration is in pyproject.toml. pytest runs on two workers (pytest-xdist):
# each test file on one of them, the TensorFlow conversion tests together
# (tests/conftest.py); every test process is still its own session (tests/processes.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install torch==2.13.0
python -m pip install -e '.[test]'
python -m ruff check .
# mypy (~50 s single-threaded without its cache) runs beside the tests; its verdict is
# waited for and printed at the end, and it is stopped if this script ends first.
mypy_log=$(mktemp)
python -m mypy > "$mypy_log" 2>&1 &
mypy_pid=$!
trap 'kill "$mypy_pid" 2>/dev/null || true; rm -f "$mypy_log"' EXIT
export TORCHCKPT_REQUIRE_TF=1 TORCHCKPT_REQUIRE_NATIVE=1
tests=0
python -m pytest -q -n 2 --dist loadgroup "$@" || tests=$?
mypy=0
wait "$mypy_pid" || mypy=$?
cat "$mypy_log"
exit $(( tests != 0 ? tests : mypy ))
