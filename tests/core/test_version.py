"""One version: the package's ``__version__`` (Sentry releases) is the one pyproject.toml ships."""

from __future__ import annotations

import tomllib

from lifecycle import __version__
from tests.helpers import REPO


def test_package_version_matches_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
