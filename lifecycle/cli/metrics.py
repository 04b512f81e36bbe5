"""`lifecycle metrics serve`: the Prometheus endpoint ops scrape (lifecycle.ops.metrics)."""

from __future__ import annotations

import signal

import typer

from lifecycle.cli.app import app
from lifecycle.core.errors import UserError

metrics_app = typer.Typer(help="Prometheus metrics for ops (queue depth, overdue requests, ...).")
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("serve")
def serve_cmd(
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Port (default LIFECYCLE_METRICS_PORT, 5557)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Address to bind (default LIFECYCLE_METRICS_ADDRESS, loopback)."
    ),
) -> None:
    """Serve GET /metrics behind Basic auth until stopped; prints the URL and login."""
    # Lazy: prometheus_client and the status readers are only for this command.
    from lifecycle.core.settings import get_settings
    from lifecycle.ops import metrics

    s = get_settings()
    bind = address or s.metrics_address
    app_ = metrics.wsgi_app(metrics.registry(s), s.metrics_user, s.metrics_password_value())
    try:
        server = metrics.serve(app_, bind, port or s.metrics_port)
    except OSError as exc:
        raise UserError(
            f"metrics: cannot listen on {bind}:{port or s.metrics_port}: {exc.strerror}"
        ) from None
    host = bind if bind not in ("", "0.0.0.0") else "127.0.0.1"
    typer.echo(
        f"metrics: http://{host}:{server.server_port}/metrics  login: {s.metrics_user} "
        f"(password: LIFECYCLE_METRICS_PASSWORD or {s.var_dir / 'metrics.password'})",
        err=True,
    )

    def stop(*_: object) -> None:
        # `lifecycle up` stops its children with SIGTERM: end like Ctrl-C, exit status 0.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
