"""`lifecycle console`: the privacy office's web console (lifecycle/console) and its accounts.

`console user add NAME --role officer|handler|auditor --name "표시 이름"` creates an account,
`console user passwd NAME` sets its password, `console user totp NAME` gives it a new TOTP
secret (printed once, as an otpauth:// URI for the authenticator app), `console user disable
NAME` / `enable NAME` end or restore its access; `console serve` runs the console alone
(`lifecycle up` starts it beside the worker, beat and Flower). Every account change is in the
access log, naming who made it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.cli.app import app

console_app = typer.Typer(help="The privacy office's web console.", no_args_is_help=True)
app.add_typer(console_app, name="console")
user_app = typer.Typer(help="Console accounts (roles, passwords, TOTP).", no_args_is_help=True)
console_app.add_typer(user_app, name="user")

UserArg = Annotated[str, typer.Argument(metavar="USERNAME", help="The login name.")]
PasswordFileOpt = Annotated[
    str | None,
    typer.Option(
        "--password-file", help="Read the password from this file's first line (else prompt)."
    ),
]


def _password(path: str | None) -> str:
    from lifecycle.console.accounts import check_password
    from lifecycle.core.errors import UserError

    if path is None:
        return check_password(typer.prompt("password", hide_input=True, confirmation_prompt=True))
    try:
        with open(path, encoding="utf-8") as fh:
            return check_password(fh.readline().rstrip("\r\n"))
    except (OSError, UnicodeDecodeError):
        raise UserError(
            "--password-file cannot be read (missing, unreadable or not UTF-8)"
        ) from None


def _record(action: str, username: str, **details: object) -> None:
    from lifecycle.cli.operator import record

    record("change", action, details={"account": username, **details})


@user_app.command("add")
def add_cmd(
    username: UserArg,
    role: Annotated[str, typer.Option("--role", help="officer, handler or auditor.")],
    name: Annotated[str, typer.Option("--name", help="The person's name, shown in the console.")],
    password_file: PasswordFileOpt = None,
) -> None:
    """Create an account; then give it a TOTP secret with `console user totp`."""
    from lifecycle.console import accounts
    from lifecycle.core import db

    accounts.check_username(username)
    accounts.check_role(role)
    password = _password(password_file)
    db.check_reachable("primary")
    with db.session("primary") as s:
        accounts.add(s, username, name, role, password)
    _record("console user add", username, role=role)
    typer.echo(f"console account {username} ({role}) created; next: lifecycle console user totp "
               f"{username}")  # fmt: skip


@user_app.command("passwd")
def passwd_cmd(username: UserArg, password_file: PasswordFileOpt = None) -> None:
    """Set an account's password (its open sessions end)."""
    from lifecycle.console import accounts
    from lifecycle.core import db

    password = _password(password_file)
    db.check_reachable("primary")
    with db.session("primary") as s:
        accounts.set_password(s, username, password)
    _record("console user passwd", username)
    typer.echo(f"password of {username} changed")


@user_app.command("totp")
def totp_cmd(username: UserArg) -> None:
    """Give an account a new TOTP secret; prints it once as an otpauth:// URI."""
    from lifecycle.console import accounts
    from lifecycle.core import db

    db.check_reachable("primary")
    with db.session("primary") as s:
        uri = accounts.new_totp(s, username)
    _record("console user totp", username)
    typer.echo(uri)
    typer.echo("add this to the authenticator app now; it is not shown again", err=True)


def _set_active(username: str, active: bool) -> None:
    from lifecycle.console import accounts
    from lifecycle.core import db

    db.check_reachable("primary")
    with db.session("primary") as s:
        accounts.set_active(s, username, active)
    _record("console user enable" if active else "console user disable", username)
    typer.echo(f"{username} {'enabled' if active else 'disabled'}")


@user_app.command("disable")
def disable_cmd(username: UserArg) -> None:
    """End an account's access (and its open sessions)."""
    _set_active(username, False)


@user_app.command("enable")
def enable_cmd(username: UserArg) -> None:
    """Restore a disabled account's access."""
    _set_active(username, True)


@user_app.command("list")
def list_cmd() -> None:
    """Every account with its role and state."""
    from sqlalchemy import select

    from lifecycle.core import db
    from models.console import ConsoleAccount

    db.check_reachable("primary")
    with db.session("primary") as s:
        rows = list(s.scalars(select(ConsoleAccount).order_by(ConsoleAccount.username)))
        lines = [
            f"{a.username:<20} {a.role:<8} {'active' if a.active else 'disabled':<8} "
            f"{'totp' if a.totp_secret else 'no totp'}"
            for a in rows
        ]
    typer.echo("\n".join(lines) if lines else "no console accounts")


@console_app.command("serve")
def serve_cmd(
    port: Annotated[
        int | None, typer.Option("--port", help="Default LIFECYCLE_CONSOLE_PORT.")
    ] = None,
    bind: Annotated[
        str | None, typer.Option("--bind", help="Default LIFECYCLE_CONSOLE_BIND.")
    ] = None,
) -> None:
    """Serve the console (Waitress) until stopped."""
    # Imported when run: `lifecycle --help` stays quick without Flask and Waitress.
    import waitress

    from lifecycle.console.web import create_app
    from lifecycle.core.db import check_reachable
    from lifecycle.core.settings import get_settings

    s = get_settings()
    s.master_key_bytes()
    check_reachable("primary")
    check_reachable("archive")
    host, port_ = bind or s.console_bind, port or s.console_port
    typer.echo(f"Console: http://{host}:{port_}/", err=True)
    waitress.serve(create_app(), host=host, port=port_, threads=4, ident="lifecycle-console")
