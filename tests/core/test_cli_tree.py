"""The command line builds only the branch it runs (lifecycle.cli.main.build_command): every
help page and usage error must read exactly as from the whole tree Typer builds."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from lifecycle.cli.app import app
from lifecycle.cli.main import build_command

try:  # Typer >= 0.20 vendors Click; older ones use the click package.
    from typer._click import exceptions as cexc
except ImportError:  # pragma: no cover
    from click import exceptions as cexc  # type: ignore[no-redef]


def _paths(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, sub in getattr(cmd, "commands", {}).items():
        out += _paths(sub, (*prefix, name))
    return out


FULL = typer.main.get_command(app)
PATHS = _paths(FULL)


def _outcome(cmd: Any, args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        cmd.main(args=args, prog_name="lifecycle", standalone_mode=False)
    except cexc.UsageError as exc:
        return "usage error: " + exc.format_message()
    return capsys.readouterr().out


def test_the_tree_has_what_the_help_shows() -> None:
    # A guard that the comparison below covers the command line, not an empty tree.
    assert ("withdraw",) in PATHS and ("datamap", "check") in PATHS and len(PATHS) > 60


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "(root)")
def test_every_help_page_reads_as_from_the_whole_tree(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*path, "--help"]
    whole = _outcome(FULL, args, capsys)
    assert whole.startswith("Usage: lifecycle")
    assert _outcome(build_command(args), args, capsys) == whole
    # The global option before the command is skipped when finding which one is run.
    with_operator = ["--operator", "someone", *args]
    assert _outcome(build_command(with_operator), with_operator, capsys) == whole


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nosuch"],
        ["wihtdraw", "1"],
        ["datamap", "nosuch"],
        ["--operator", "x"],
        ["--operator"],
        ["withdraw"],
        ["--help", "withdraw"],
    ],
)
def test_usage_errors_read_as_from_the_whole_tree(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    whole = _outcome(FULL, args, capsys)
    assert whole  # an error or the help, never nothing
    assert _outcome(build_command(args), args, capsys) == whole


def test_a_named_command_is_built_alone_and_listed_ones_never_run() -> None:
    assert list(build_command(["withdraw", "7"]).commands) == ["withdraw"]
    assert list(build_command(["--operator", "x", "datamap", "check"]).commands) == ["datamap"]
    listed = build_command(["--help"]).commands
    assert set(listed) == set(FULL.commands)  # type: ignore[attr-defined]
    assert listed["datamap"].commands == {}  # groups are only listed, not built
    with pytest.raises(AssertionError, match="only listed"):
        listed["withdraw"].callback()
    # The app itself is left as it was, for the next build.
    assert len(app.registered_commands) + len(app.registered_groups) == len(listed)
