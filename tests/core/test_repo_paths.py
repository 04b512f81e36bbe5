"""Every repository path that a comment, docstring, doc or script names exists.

Files move (a module into a package, a test into its package's folder) and the sentences that
point at them are left behind; a reader who follows one finds nothing. A reference is a token
that starts with one of the repository's top-level folders and a slash (``docs/engine.md``,
``tests/engine/``, ``.ci/run``), optionally followed by ``:LINE`` or ``#anchor``, plus the
relative links of Markdown files. Patterns are not references: a token followed by ``*``,
``<``, ``{``, ``$`` or ``[`` (a glob, a placeholder, a format string) is skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ROOTS = (
    "lifecycle",
    "tests",
    "docs",
    "scripts",
    "models",
    "tasks",
    "workers",
    "schedules",
    "bench",
    "deploy",
    "requirements",
    ".ci",
)
# Not part of the repository: virtualenvs, run-time data, caches, build output, secrets.
SKIP_DIRS = {".git", ".venv", "var", "__pycache__", "build", ".pytest_cache", ".ruff_cache"}
SKIP_DIRS |= {"secrets", "node_modules"}
SUFFIXES = {".py", ".md", ".sh", ".yml", ".yaml"}
NAMES = {"Dockerfile"}

# ASCII only: Korean text often follows a path with no space (``docs/engine.md의``). The look-
# behind keeps absolute paths, URLs and paths inside other paths out (``/srv/tasks/x``).
_ROOT = "|".join(re.escape(r) for r in ROOTS)
PATH = re.compile(rf"(?<![A-Za-z0-9_./$~@-])(?:\./)?((?:{_ROOT})/[A-Za-z0-9_.+@/-]*)")
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")
TEMPLATE = set("*<{$[")


def references(text: str) -> Iterator[tuple[int, str]]:
    """(line number, repository-relative path) for each path-like token in ``text``."""
    for number, line in enumerate(text.splitlines(), 1):
        for m in PATH.finditer(line):
            if line[m.end() : m.end() + 1] in TEMPLATE:
                continue
            path = m.group(1)
            if ".." in path:  # an ellipsis (``tests/...``), or climbing out
                continue
            yield number, path.rstrip(".")  # a sentence's full stop


def markdown_links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) for each relative link of a Markdown file."""
    for number, line in enumerate(text.splitlines(), 1):
        for m in MD_LINK.finditer(line):
            target = m.group(1)
            if ":" not in target:  # not http://, mailto:
                yield number, target


def scanned_files() -> Iterator[Path]:
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder, name)
            rel = path.relative_to(REPO).as_posix()
            if path.suffix in SUFFIXES or name in NAMES or rel == ".ci/run":
                yield path


def test_the_scanner_sees_paths_and_skips_patterns() -> None:
    # Built by concatenation so this file itself names no missing path.
    moved = "lifecycle" + "/flower_locator.py"
    text = (
        f"see {moved}:12 and `docs/engine.md#the-sweep`, ./deploy/postgres-init.sh.\n"
        "not /srv/tasks/x nor https://example.test/tests/y nor tests/... nor "
        "models/migrations/*/versions/* nor requirements/<set>.txt nor f'scripts/{name}'\n"
    )
    assert list(references(text)) == [
        (1, moved),
        (1, "docs/engine.md"),
        (1, "deploy/postgres-init.sh"),
    ]
    assert list(markdown_links("[a](engine.md#x) [b](https://example.test/) [c](../d.md)")) == [
        (1, "engine.md"),
        (1, "../d.md"),
    ]


def test_every_named_repository_path_exists() -> None:
    missing: list[str] = []
    scanned = 0
    for file in scanned_files():
        text = file.read_text(encoding="utf-8", errors="replace")
        rel = file.relative_to(REPO).as_posix()
        scanned += 1
        for number, path in references(text):
            if not (REPO / path).exists():
                missing.append(f"{rel}:{number}: {path}")
        if file.suffix == ".md":
            for number, target in markdown_links(text):
                if not (file.parent / target).exists():
                    missing.append(f"{rel}:{number}: {target} (link)")
    assert scanned > 100  # the walk reached the repository
    assert not missing, "paths named but not in the repository:\n" + "\n".join(missing)
