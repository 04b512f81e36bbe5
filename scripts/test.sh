#!/usr/bin/env bash
# The test command: venv + install + PostgreSQL/Redis if not running + pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh test
bash scripts/services.sh
exec .venv/bin/python -m pytest "$@"
