#!/usr/bin/env bash
# First command of the README: install, fill the demo site once, and run worker + beat + Flower
# on the embedded default (SQLite + filesystem broker under ./var). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/lifecycle db upgrade
if [ ! -f var/.demo-seeded ]; then
  .venv/bin/lifecycle demo seed --members "${DEMO_MEMBERS:-1000}" --files
  touch var/.demo-seeded
fi
exec .venv/bin/lifecycle up "$@"
