#!/usr/bin/env bash
# The test command: venv + install + PostgreSQL/Redis if not running + pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
  | grep -v "^WARNING: Location" || true
bash scripts/services.sh
exec .venv/bin/python -m pytest "$@"
