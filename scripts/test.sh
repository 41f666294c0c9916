#!/usr/bin/env bash
# Sets up .venv if needed, checks lint and types, then runs the whole test suite (real servers included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy .
exec .venv/bin/python -m pytest "$@"
