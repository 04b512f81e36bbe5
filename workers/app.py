"""The Celery application. `celery -A workers.app worker` and `lifecycle up` both load it."""

from __future__ import annotations

from celery import Celery
from celery.signals import beat_init, worker_init, worker_process_init
from kombu import pools

from lifecycle.core.db import dispose_all
from lifecycle.core.settings import get_settings, reset_settings_cache
from lifecycle.vault import accesslog
from schedules.beat import beat_schedule
from workers.config import celery_config
from workers.logsignals import connect_celery
from workers.reporting import connect_reporting

TASK_MODULES = [
    "tasks.ping",
    "tasks.relay",
    "tasks.correct",
    "tasks.notify",
    "tasks.notice",
    "tasks.shred",
    "tasks.withdraw",
    "tasks.rights",
    "tasks.sweep",
    "tasks.purge",
    "tasks.identifiers",
    "tasks.ledger",
    "tasks.deadlines",
    "tasks.datamap",
]


def create_app() -> Celery:
    settings = get_settings()
    # LifecycleAMQP builds every message (apply_async and send_task by name) with id-only
    # argsrepr/kwargsrepr and refuses non-id arguments: see tasks/base.py.
    app = Celery("lifecycle", include=TASK_MODULES, amqp="tasks.base:LifecycleAMQP")
    app.conf.update(celery_config(settings))

    app.conf.beat_schedule = beat_schedule(settings)
    return app


app = create_app()
# Worker and beat log JSON with task and request ids (workers/logsignals.py).
connect_celery()
connect_reporting()


@worker_process_init.connect
def _fresh_connections(**_kwargs: object) -> None:
    # Prefork children must open their own DB connections, never reuse the parent's sockets.

    dispose_all()
    # Their access-log entries are automated work, not a person at a terminal (the review).
    accesslog.set_process_role("worker")


@beat_init.connect
def _start_ticker(sender: object = None, **_kwargs: object) -> None:
    accesslog.set_process_role("beat")
    # The relay, the lease watchdog and the other frequent checks run here, not as tasks.
    # Imported here, not at the top: the ticker pulls in every domain package, and a command
    # that only sends a job (the CLI) would pay a quarter of a second for it.
    from schedules.ticker import start_in_beat

    start_in_beat(sender)


@worker_init.connect
def _refuse_non_transactional_tables(**_kwargs: object) -> None:
    accesslog.set_process_role("worker")  # a solo or threads pool has no process_init
    # On MySQL/MariaDB a MyISAM table would keep deletions that a failed step rolled back: such a
    # worker must not start. Other databases are always transactional; an unreachable database
    # is left to the tasks, which retry.
    import sys

    from sqlalchemy import inspect

    from lifecycle.core.db import engine
    from lifecycle.core.errors import UserError
    from lifecycle.core.storage_engines import require_transactional
    from lifecycle.datamap.current import current_datamap

    settings = get_settings()
    if not settings.sqlalchemy_url("primary").startswith("mysql"):
        return
    try:
        eng = engine("primary")
        dm = current_datamap().expand(inspect(eng).get_table_names())
        require_transactional(eng, dm.tables)
    except UserError as exc:
        sys.stderr.write(f"lifecycle worker refused to start: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
    except Exception:  # unreachable DB and the like: the tasks report and retry
        return


def reconfigure() -> None:
    """Re-read Settings into the already-imported app (tests and the CLI change env at run time).

    Celery caches the broker pool, producer pool and result backend on first use; drop them so
    the next call connects to the newly configured servers.
    """

    reset_settings_cache()
    dispose_all()
    settings = get_settings()
    # kombu keeps connection and producer pools in module-level registries keyed by the broker
    # URL: closing only app._pool leaves a closed pool there that the next send_task to the
    # same URL would pick up ("Acquire on closed pool"). Reset the registries as a whole.

    pools.reset()
    # app._after_fork, _backend_cache and _local: Celery's private state (not in celery-types).
    app._after_fork()  # type: ignore[attr-defined]
    # The message factory caches the queues, routes and the event dispatcher (whose exchange
    # type depends on the transport: fanout on Redis); a new one reads the new settings.
    app.__dict__.pop("amqp", None)
    app._backend_cache = None  # type: ignore[attr-defined]
    app._local.__dict__.pop("backend", None)  # type: ignore[attr-defined]
    app.conf.update(celery_config(settings))
    app.conf.beat_schedule = beat_schedule(settings)
