#!/usr/bin/env bash
# First command of the README: install (with the demo extra, for the seed), fill the demo site
# once, and run worker + beat + Flower on the embedded default (SQLite + filesystem broker under
# ./var). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh demo
.venv/bin/lifecycle db upgrade
if [ ! -f var/.demo-seeded ]; then
  .venv/bin/lifecycle demo seed --members "${DEMO_MEMBERS:-1000}" --files
  touch var/.demo-seeded
fi
exec .venv/bin/lifecycle up "$@"
