#!/usr/bin/env bash
# Re-resolve the lock after a change to the dependencies in pyproject.toml (or to pick up newer
# releases): writes requirements/test.txt, demo.txt and runtime.txt, pinned with sha256 hashes for
# Python 3.11 on Linux x86_64 whatever machine runs it. The test set (every extra) is resolved
# first and the two smaller sets are constrained to it, so one package has one version in all
# three. The build backend (pyproject's [build-system] requires) is locked too: install.sh and the
# Dockerfile build the project without build isolation, so nothing unpinned is fetched.
# uv is pinned here and kept in its own venv under the project's venv (never in the project's).
# Usage: bash scripts/lock.sh [--upgrade-package NAME ...]   (extra arguments go to uv pip compile)
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
PY="${PYTHON:-python3}"
TOOL="${LIFECYCLE_VENV:-.venv}/.lock-tool"
if [ "$("$TOOL/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$PY" -m venv "$TOOL"
  "$TOOL/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
build_requires="$("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')"
compile() {
  # -: the build backend, read from stdin.
  printf '%s\n' "$build_requires" | "$TOOL/bin/uv" pip compile --quiet pyproject.toml - \
    --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
    --custom-compile-command "bash scripts/lock.sh" "$@"
}
mkdir -p requirements
# The test extra includes the demo one (pyproject.toml).
compile --extra test -o requirements/test.txt "$@"
compile --extra demo -c requirements/test.txt -o requirements/demo.txt
compile -c requirements/test.txt -o requirements/runtime.txt
echo "lock: wrote requirements/test.txt, demo.txt, runtime.txt; commit them with pyproject.toml" >&2
