#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole pipeline on its embedded default (see embedded/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m embedded.demo "$@"
