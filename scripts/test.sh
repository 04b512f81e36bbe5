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
# CI (or LIFECYCLE_TEST_SEED=N) runs the tests in a random order (pytest-randomly; off by default
# in pyproject.toml), so a test that passes only after another one shows. The seed changes with
# the commit and the day and is printed: LIFECYCLE_TEST_SEED=N bash scripts/test.sh runs the
# same order again (README, "Two commands").
order=()
if [ -n "${LIFECYCLE_TEST_SEED:-}" ] || [ -n "${CI:-}" ]; then
  seed="${LIFECYCLE_TEST_SEED:-$(printf '%s %s' "$(git rev-parse HEAD 2>/dev/null || echo none)" \
    "$(date -u +%F)" | cksum | cut -d' ' -f1)}"
  echo "test order: random, seed $seed (again: LIFECYCLE_TEST_SEED=$seed bash scripts/test.sh)" >&2
  order=(-p randomly --randomly-seed="$seed")
fi
exec .venv/bin/python -m pytest -n "${LIFECYCLE_TEST_WORKERS:-3}" --dist loadgroup "${order[@]}" "$@"
