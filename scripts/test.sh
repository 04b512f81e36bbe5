#!/usr/bin/env bash
# The test command: venv + install + PostgreSQL/Redis/MariaDB if not running + pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
# The suite runs in LIFECYCLE_TEST_WORKERS processes (default 3; 0 runs it in this one): most of
# its time is spent waiting on workers, brokers and timeouts, so three share two cores well.
# Each process has its own Redis and its own template databases; the fault tests (marked slow)
# run one after another in a single process (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh test
bash scripts/services.sh
exec .venv/bin/python -m pytest -n "${LIFECYCLE_TEST_WORKERS:-3}" --dist loadgroup "$@"
