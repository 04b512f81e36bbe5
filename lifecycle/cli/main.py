"""Entry point: registers the command groups and turns every failure into one line."""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import os
import sys
import threading
from typing import Any, NoReturn

import typer
from typer.models import CommandInfo, TyperInfo

from lifecycle.cli.app import app
from lifecycle.core.errors import LifecycleError
from lifecycle.core.logging_setup import configure

try:  # Typer >= 0.20 vendors Click; older ones use the click package.
    from typer._click import exceptions as cexc
except ImportError:  # pragma: no cover
    from click import exceptions as cexc  # type: ignore[no-redef]


def _register() -> None:
    # Each command group lives in its own module; importing it adds its commands to `app`.
    from lifecycle.cli import (  # noqa: F401
        accesslog,
        archive,
        console,
        correct,
        datamap,
        db,
        demo,
        hold,
        identifiers,
        incident,
        keys,
        ledger,
        metrics,
        notice,
        operators,
        recipients,
        rights,
        shred,
        status,
        sweep,
        up,
        withdraw,
    )


_register()


def _fail(message: str, code: int) -> None:
    print(f"lifecycle: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _is_broker_error(exc: BaseException) -> bool:
    # Looked up in sys.modules instead of imported: redis and kombu cost `lifecycle --help` a
    # tenth of a second, and if a command never imported them it cannot have raised their errors.
    redis = sys.modules.get("redis")
    kombu_exc = sys.modules.get("kombu.exceptions")
    return bool(
        (redis is not None and isinstance(exc, redis.RedisError))
        or (kombu_exc is not None and isinstance(exc, kombu_exc.OperationalError))
    )


def _command_name(args: list[str]) -> str | None:
    """The top-level command ``args`` names, if any (skipping the global ``--operator NAME``)."""
    rest = iter(args)
    for arg in rest:
        if arg in ("--", "--help"):  # `lifecycle --help withdraw` shows the whole list
            return None
        if arg == "--operator":
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _listed_only(info: CommandInfo) -> CommandInfo:
    """``info`` with a callback taking no parameters but named and documented like its own: all
    a help listing reads (name, help, short help, hidden, deprecated)."""
    own = info.callback
    assert own is not None

    def listed() -> None:  # never runs: a command that is run is built in full
        raise AssertionError(f"{own.__name__} was only listed")

    listed.__name__, listed.__doc__ = own.__name__, own.__doc__
    stub = copy.copy(info)
    stub.callback = listed
    return stub


def _group_listed_only(info: TyperInfo) -> TyperInfo:
    stub = copy.copy(info)
    sub = copy.copy(info.typer_instance)
    assert sub is not None
    sub.registered_commands, sub.registered_groups = [], []
    stub.typer_instance = sub
    return stub


def _name_of(info: CommandInfo) -> str:
    own = info.callback.__name__ if info.callback else ""
    return info.name or typer.main.get_command_name(own)


def build_command(args: list[str]) -> Any:
    """The click command tree for ``args``: in full only the branch they run.

    Typer turns every command's signature into click parameters, which for all of them took a
    third of `lifecycle --help`'s CPU time, while a run needs one command's. A command that is
    named is built in full and every other one is left out; with no command named (`--help`,
    no arguments) or an unknown one, every command is only listed, so the help and the "no
    such command" error (it suggests close names) read as before (tests/core/test_cli_tree.py).
    """
    name = _command_name(args)
    commands: list[CommandInfo] = app.registered_commands
    groups: list[TyperInfo] = app.registered_groups
    chosen = [c for c in commands if _name_of(c) == name]
    chosen_groups = [g for g in groups if g.name == name]
    if chosen or chosen_groups:
        app.registered_commands, app.registered_groups = chosen, chosen_groups
    else:
        app.registered_commands = [_listed_only(c) for c in commands]
        app.registered_groups = [_group_listed_only(g) for g in groups]
    try:
        return typer.main.get_command(app)
    finally:
        app.registered_commands, app.registered_groups = commands, groups


def run(argv: list[str] | None = None) -> None:
    # Warnings and errors only: a command's own output is its report, on stdout.
    configure(logging.WARNING, service="cli")

    command = build_command(sys.argv[1:] if argv is None else argv)
    try:
        rv = command.main(args=argv, prog_name="lifecycle", standalone_mode=False)
    except cexc.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else "", file=sys.stderr)
        raise SystemExit(2) from None
    except cexc.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _fail(exc.format_message().replace("\n", " ") + hint, 2)
    except typer.Abort:
        _fail("aborted", 130)
    except LifecycleError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        if _is_broker_error(exc):
            _fail(
                f"broker unreachable ({str(exc).splitlines()[0]}); check LIFECYCLE_BROKER_URL "
                "and that Redis is running",
                3,
            )
        # Imported only here: SQLAlchemy and Alembic would triple `lifecycle --help`'s start.
        from sqlalchemy.exc import DBAPIError

        from lifecycle.core.migrate import missing_table

        table = missing_table(exc) if isinstance(exc, DBAPIError) else None
        if table is None:
            raise
        _fail(f"table {table} does not exist: run `lifecycle db upgrade` first", 2)
    if isinstance(rv, int) and rv:
        raise SystemExit(rv)


def main() -> NoReturn:
    """The console script (and ``python -m``): :func:`run`, then leave without the teardown.

    Python's own exit frees every object of every module one by one (SQLAlchemy's mappers,
    Celery, kombu, rich); after `lifecycle shred FILE --wait` that took 0.6-0.9 s of the
    command's time at load 6, after its report was printed. The exit handlers still run (log
    handlers are flushed, files shredded in process are freed), then the process ends. Tests
    call :func:`run`, which returns or raises as before.
    """
    try:
        run()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    _leave(code)


def _leave(code: object) -> NoReturn:
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        # A thread that must finish (a worker pool not shut down): Python's exit waits for it.
        raise SystemExit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    db = sys.modules.get("lifecycle.core.db")  # a command that never imported it has no engine
    if db is not None:
        db.close_all()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
