"""Entry point: registers the command groups and turns every failure into one line."""

from __future__ import annotations

import logging
import sys

import typer

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


def run(argv: list[str] | None = None) -> None:
    # Warnings and errors only: a command's own output is its report, on stdout.
    configure(logging.WARNING, service="cli")

    command = typer.main.get_command(app)
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


if __name__ == "__main__":
    run()
