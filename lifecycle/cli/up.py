"""`lifecycle up`: worker + beat + Flower in one command."""

from __future__ import annotations

import os

import typer

from lifecycle.cli.app import app


@app.command("up")
def up(
    concurrency: int = typer.Option(
        2, "--concurrency", "-c", min=1, max=64, help="Worker processes."
    ),
    loglevel: str = typer.Option("INFO", "--loglevel", help="Celery log level."),
    migrate: bool = typer.Option(
        True, "--migrate/--no-migrate", help="Apply database migrations first (idempotent)."
    ),
) -> None:
    """Start a worker, beat, Flower, the privacy office's console and the metrics endpoint;
    print their URLs and logins; Ctrl-C stops them all."""
    from lifecycle.core.db import check_reachable
    from lifecycle.core.settings import get_settings
    from lifecycle.ops import flower_locator
    from workers import launcher
    from workers.broker import check_broker

    s = get_settings()
    s.master_key_bytes()  # fail now, with one line, rather than in a worker later
    check_reachable("primary")
    check_reachable("archive")
    check_broker()
    if migrate:
        from lifecycle.core.migrate import upgrade_all

        upgrade_all()
    if s.embedded:
        typer.secho(
            "lifecycle: EMBEDDED MODE (SQLite + filesystem broker under "
            f"{s.var_dir}): for trying out only, NOT crash-safe. Production: set "
            "LIFECYCLE_*_URL to PostgreSQL and Redis (see README).",
            fg=typer.colors.YELLOW,
            err=True,
        )
    host = s.flower_address if s.flower_address not in ("", "0.0.0.0") else "127.0.0.1"
    typer.echo(
        f"Flower: http://{host}:{s.flower_port}/  login: {s.flower_user} / "
        f"{s.flower_password_value()}"
    )
    console_host = s.console_bind if s.console_bind not in ("", "0.0.0.0") else "127.0.0.1"
    typer.echo(
        f"Console: http://{console_host}:{s.console_port}/  accounts: lifecycle console user add"
    )
    mhost = s.metrics_address if s.metrics_address not in ("", "0.0.0.0") else "127.0.0.1"
    typer.echo(
        f"Metrics: http://{mhost}:{s.metrics_port}/metrics  login: {s.metrics_user} / "
        f"{s.metrics_password_value()}"
    )
    typer.echo("Press Ctrl-C to stop worker, beat, Flower, the console and metrics.", err=True)
    children = launcher.plan(s, concurrency=concurrency, loglevel=loglevel)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # So that `lifecycle status` in another shell finds this Flower
    # (lifecycle/ops/flower_locator.py).
    flower_locator.record(s)
    try:
        code = launcher.run_forever(children, lambda line: typer.echo(line, err=True))
    finally:
        flower_locator.clear(s)
    raise typer.Exit(code)


@app.command("ping")
def ping(
    wait: bool = typer.Option(False, "--wait", help="Wait for the worker's answer."),
) -> None:
    """Enqueue a no-op job to check the whole path (broker, worker, results, Flower)."""
    from lifecycle.cli.waiting import wait_for_task
    from tasks.ping import ping as ping_task
    from workers.broker import check_broker

    check_broker()

    result = ping_task.delay()
    typer.echo(f"enqueued lifecycle.ping as task {result.id}")
    if wait:
        wait_for_task(result, "ping", timeout=120)
        typer.echo("pong")
