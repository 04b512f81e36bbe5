#!/usr/bin/env bash
# Create .venv and install the project into it (editable), but only when pyproject.toml changed
# since the last install that succeeded: the code is installed editable, so only a change of
# dependencies needs pip, and a pip run that finds nothing to do still costs ~11 s per start.
# Usage: bash scripts/install.sh [EXTRAS]   (e.g. `test`; up.sh installs none, test.sh `test`)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LIFECYCLE_VENV:-.venv}"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
spec="."
[ -z "$EXTRAS" ] || spec=".[$EXTRAS]"
stamp="$VENV/.lifecycle-installed${EXTRAS:+-$EXTRAS}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
  exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
rc=0
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" >"$log" 2>&1 || rc=$?
grep -v "^WARNING: Location" "$log" >&2 || true
if [ "$rc" != 0 ]; then
  echo "install: pip failed (exit $rc); nothing recorded, the next start tries again" >&2
  exit "$rc"
fi
echo "$want" > "$stamp"
