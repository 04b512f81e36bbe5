#!/usr/bin/env bash
# Create .venv and install the locked dependencies plus the project (editable) into it, but only
# when pyproject.toml or the lock changed since the last install that succeeded: the code is
# installed editable, so only a change of dependencies needs pip, and a pip run that finds
# nothing to do still costs ~11 s per start.
# Usage: bash scripts/install.sh [SET]   SET: none (runtime), `demo` (up.sh) or `test` (test.sh;
# the test extra includes demo). Each set has its lock, requirements/<SET>.txt (scripts/lock.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LIFECYCLE_VENV:-.venv}"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
lock="requirements/${EXTRAS:-runtime}.txt"
case "$EXTRAS" in
  "" | demo | test) ;;
  *)
    echo "install: unknown set '$EXTRAS'; use none, demo or test (one lock each, requirements/)" >&2
    exit 2
    ;;
esac
if [ ! -f "$lock" ]; then
  echo "install: $lock is missing; run bash scripts/lock.sh" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
stamp="$VENV/.lifecycle-installed${EXTRAS:+-$EXTRAS}"
want="$(cat pyproject.toml "$lock" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
  exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
rc=0
# Exact versions, each file checked against its hash; pip refuses a lock that misses a dependency.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock" \
  >"$log" 2>&1 || rc=$?
# The project itself, built by the locked setuptools just installed: no dependency resolution
# (the lock did it) and no build isolation (it would fetch an unpinned setuptools).
if [ "$rc" = 0 ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation -e . >>"$log" 2>&1 || rc=$?
fi
grep -v "^WARNING: Location" "$log" >&2 || true
if [ "$rc" != 0 ]; then
  echo "install: pip failed (exit $rc); nothing recorded, the next start tries again" >&2
  exit "$rc"
fi
echo "$want" > "$stamp"
