#!/usr/bin/env bash
# Installs torchckpt with its runtime dependencies (CPU torch first) and runs the main example.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e .
python examples/quickstart.py
