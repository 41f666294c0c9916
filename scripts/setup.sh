#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs the project with its test tools. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
      "$candidate" -m venv .venv
      break
    fi
  done
  [ -x .venv/bin/python ] || { echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "Installing marketpipe and its dependencies into .venv (first run: about a minute) ..."
  if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[test]"; } \
      > .venv/install.log 2>&1; then
    tail -n 40 .venv/install.log >&2
    echo "Installation failed; full log in .venv/install.log" >&2
    exit 1
  fi
  rm -f .venv/.installed-* && touch "$stamp"
fi
