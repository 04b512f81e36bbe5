"""`lifecycle shred PATH... [--wait]` the short way: the job written, sent and waited for on the
plain drivers.

A shred job's own work can take a second (20,000 small files, an 8 GiB file), and the full
command spent most of another second around it loading SQLAlchemy, pydantic-settings, Typer,
Celery and every task module (README, "Shredding"). As for `lifecycle withdraw MEMBER_ID`
(``submit_plan``), the full command leaves a *shred plan* in ``VAR_DIR/cache/shred-plan.json``
once it has queued a job: this host's name, queue and storage roots, the statements, the
connection parameters of both databases and Redis (never a password), and the constants of
the task message. The console script (``lifecycle.cli.entry``) then runs a plain
``shred [-r] PATH... [--wait] [--timeout S]`` with this module alone: the same path checks
(``lifecycle.shred.paths``, before anything is written), the same job and item rows, the same
task message and task-sent event (``kombu``, the library Celery sends with), the same
access-log entry on the same hash chain, and the same output.

The plan is used only when nothing it was made from changed (every ``LIFECYCLE_*`` variable,
the ``.env`` file, the code of the modules involved). Anything else is the full command's,
decided before anything is written: any other option, a path that any check refuses (the full
command says why, in its own words), a registered operator list, a database that cannot be
reached. Once the job is committed the short way does not hand it back: a broker that refuses
the message leaves the job to :func:`lifecycle.shred.jobs._send_if_pending` (the full
command's own send, with its warning), and a wait that is not simply "done" (a failed task, the
result backend gone, the timeout, a terminal that shows the progress bar) goes on in the full
command's wait (``lifecycle.cli.shred.wait``), which reads the same rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifecycle import __version__
from lifecycle.cli.operator import claimed_name, unlogged_warning
from lifecycle.cli.submit_plan import connect_plain, db_params, log_entry
from lifecycle.core import settings_env
from lifecycle.core.errors import LifecycleError
from lifecycle.core.private_file import read_own_json, write_own
from lifecycle.shred.paths import absolute, check_paths, db_path
from lifecycle.shred.shredder import REASONS, resolve_roots
from lifecycle.vault import access_entry

PLAN_FILE = "shred-plan.json"
# Bumped when the plan's layout changes.
PLAN_FORMAT = 1
DEFAULT_REASON = "operator request (lifecycle shred)"
DEFAULT_BASIS = "개인정보 보호법 제21조 (파기)"
DEFAULT_TIMEOUT = 3600.0
# How often `--wait` reads the job's state between results on Redis (one primary-key read).
POLL_SECONDS = 0.05
ACTION = "shred"
QUEUED = "shred job {job_id}: {count} path(s) queued on {queue}"
# The code a plan was made by, relative to the repository's root: not trusted once any changed.
_CODE_FILES = (
    "lifecycle/cli/shred_plan.py",
    "lifecycle/cli/shred.py",
    "lifecycle/cli/submit_plan.py",
    "lifecycle/cli/operator.py",
    "lifecycle/core/settings.py",
    "lifecycle/core/settings_env.py",
    "lifecycle/core/mysql_conv.py",
    "lifecycle/core/private_file.py",
    "lifecycle/core/queues.py",
    "lifecycle/core/dispatch.py",
    "lifecycle/shred/jobs.py",
    "lifecycle/shred/paths.py",
    "lifecycle/shred/shredder.py",
    "lifecycle/vault/access_entry.py",
    "lifecycle/vault/accesslog.py",
    "lifecycle/vault/chain.py",
    "models/shred.py",
    "workers/config.py",
    "workers/taskargs.py",
    "tasks/base.py",
)
_ROOT = Path(__file__).resolve().parent.parent.parent
# Celery's task message (protocol 2) for a task sent by name with no options but its id and
# queue; tests/shred/test_lean_shred.py holds these to what Celery itself builds.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_RESULT_CHANNEL = "celery-task-meta-"
# Result states after which the task will not publish again: the wait is the full command's.
_OVER = ("FAILURE", "REVOKED", "REJECTED", "IGNORED")


def plan_stamp() -> str:
    """What a plan is valid for: the settings' sources and the code."""
    h = hashlib.sha256(f"{PLAN_FORMAT}\0{__version__}\0{sys.version_info[:2]}".encode())
    h.update(settings_env.environment_stamp().encode())
    for rel in _CODE_FILES:
        try:
            st = (_ROOT / rel).stat()
        except OSError:
            h.update(f"\0{rel}:missing".encode())
            continue
        h.update(f"\0{rel}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()


def _plan_path() -> Path:
    return settings_env.var_dir() / "cache" / PLAN_FILE


# -- the short way -------------------------------------------------------------------------------


@dataclass
class Args:
    operator: str
    paths: list[str]
    wait: bool
    recursive: bool
    timeout: float


def plain_shred_args(argv: list[str]) -> Args | None:
    """The command line when it is ``[--operator NAME] shred [-r] PATH... [--wait]
    [--timeout S]`` and nothing else; None for any other."""
    operator = ""
    rest = list(argv)
    if len(rest) >= 2 and rest[0] == "--operator":
        operator, rest = rest[1], rest[2:]
    if not rest or rest[0] != "shred":
        return None
    args = Args(operator, [], wait=False, recursive=False, timeout=DEFAULT_TIMEOUT)
    words = iter(rest[1:])
    for word in words:
        if word == "--wait":
            args.wait = True
        elif word in ("-r", "--recursive"):
            args.recursive = True
        elif word == "--timeout":
            try:
                args.timeout = float(next(words, ""))
            except ValueError:
                return None
            if not (math.isfinite(args.timeout) and args.timeout >= 1):
                return None
        elif not word or word.startswith("-"):
            return None  # any other option, and `--`: the full command parses them
        else:
            args.paths.append(word)
    return args if args.paths else None


def _read_plan() -> dict[str, Any] | None:
    # Statements are run from it: only this OS user's own, unwritable by others.
    return read_own_json(_plan_path(), PLAN_FORMAT)


def _redis_url(spec: dict[str, Any]) -> str:
    # A URL with a password was read from its variable (the stamp says it is unchanged).
    return str(os.environ[spec["variable"]]) if "variable" in spec else str(spec["url"])


def _insert(plan: dict[str, Any], primary: Any, paths: list[str], recursive: bool) -> int | None:
    """The job and its items in one primary transaction, committed; None (nothing written)
    when the full command must run (a register of operators to check the OS account against)."""
    with contextlib.closing(primary.cursor()) as cur:
        cur.execute(plan["operators_sql"])
        if cur.fetchone() is not None:
            primary.rollback()
            return None
        primary.rollback()
        now = datetime.now(UTC)
        cur.execute(
            plan["job_sql"],
            {
                **plan["job_values"],
                "recursive": recursive,
                "next_send_at": now + timedelta(seconds=plan["first_resend_seconds"]),
                "created_at": now,
            },
        )
        if plan["primary"]["family"] == "mysql":
            job_id = int(cur.lastrowid)
        else:
            job_id = int(cur.fetchone()[0])
        cur.executemany(
            plan["item_sql"],
            [{**plan["item_values"], "job_id": job_id, "path": db_path(p)} for p in paths],
        )
    primary.commit()
    return job_id


def task_message(
    plan: dict[str, Any], job_id: int, task_id: str, origin: str
) -> tuple[list[Any], dict[str, Any]]:
    """(body, headers) of the message Celery would send for the job."""
    # Lazy: every full command line loads this module (the shred command's defaults), and the
    # website's submit path loads nothing of ``workers`` (tests/rights/test_submit_path.py).
    from workers.taskargs import render_args

    argsrepr, kwargsrepr = render_args([job_id], None, plan["task_params"])
    headers = {
        "lang": "py",
        "task": plan["task_name"],
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "origin": origin,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    return [[job_id], {}, dict(_EMBED)], headers


def _publish(plan: dict[str, Any], job_id: int, task_id: str) -> None:
    """The task message on the host's queue, then the task-sent event Flower shows."""
    # kombu loads redis-py; both only once the job is committed (a refused command needs neither).
    from kombu import Connection, Exchange, Queue

    origin = f"gen{os.getpid()}@{socket.gethostname()}"
    body, headers = task_message(plan, job_id, task_id, origin)
    route = plan["route"]
    queue = Queue(
        route["queue"],
        Exchange(route["exchange"], type=route["exchange_type"]),
        routing_key=route["routing_key"],
    )
    with Connection(
        _redis_url(plan["broker"]), transport_options=plan["broker_transport_options"]
    ) as conn:
        producer = conn.Producer()
        producer.publish(
            body,
            exchange="",
            routing_key=route["queue"],
            serializer="json",
            retry=plan["publish_retry"],
            retry_policy=plan["publish_retry_policy"],
            delivery_mode=route["delivery_mode"],
            declare=[queue],
            headers=headers,
            correlation_id=task_id,
            reply_to=str(uuid.uuid4()),
        )
        event = {
            "hostname": origin,
            # Hours west of UTC, as Celery's events say it.
            "utcoffset": (time.altzone if time.localtime().tm_isdst else time.timezone) / 3600,
            "pid": os.getpid(),
            "clock": 1,
            "uuid": task_id,
            "root_id": task_id,
            "parent_id": None,
            "name": plan["task_name"],
            "args": headers["argsrepr"],
            "kwargs": headers["kwargsrepr"],
            "retries": 0,
            "eta": None,
            "expires": None,
            "queue": route["queue"],
            "exchange": "",
            "routing_key": route["queue"],
            "timestamp": time.time(),
            "type": "task-sent",
        }
        # A monitoring event never fails the command (Celery's own is sent the same way).
        with contextlib.suppress(Exception):
            producer.publish(
                event,
                exchange=Exchange("celeryev", type="fanout"),
                routing_key="task.sent",
                serializer="json",
                headers={"hostname": origin},
                delivery_mode=1,
                declare=[Exchange("celeryev", type="fanout")],
            )


def _send(plan: dict[str, Any], primary: Any, job_id: int) -> None:
    """Send the job as ``jobs._send_if_pending`` does, and record it on the job the same way;
    a broker that refuses it leaves the job to that function (its warning, the resend beat)."""
    sends = 1
    task_id = f"shred-{job_id}-{sends}"
    try:
        _publish(plan, job_id, task_id)
    except Exception:
        import logging

        from lifecycle.core.logging_setup import configure
        from lifecycle.shred.jobs import _send_if_pending

        configure(logging.WARNING, service="cli")  # its warning reads as the full command's
        _send_if_pending(job_id)
        return
    now = datetime.now(UTC)
    with contextlib.closing(primary.cursor()) as cur:
        cur.execute(
            plan["sent_sql"],
            {
                "id": job_id,
                "task_id": task_id,
                "sends": sends,
                "sent_at": now,
                "next_send_at": now + timedelta(seconds=plan["first_resend_seconds"] * sends),
            },
        )
    primary.commit()


def _record(plan: dict[str, Any], actor: str, job_id: int, count: int) -> None:
    details: dict[str, object] = {"shred_job": job_id, "paths": count}
    archive = None
    try:
        archive = connect_plain(plan["archive"])
        if not log_entry(plan, archive, actor, "destroy", ACTION, details=details):
            # No access-log head yet: the full command's writer makes the first one.
            from lifecycle.cli.operator import record

            record("destroy", ACTION, details=details, operator=actor)
    except Exception as exc:
        # The job is queued, as the full command's would be by now: say so and go on.
        print(unlogged_warning(ACTION, exc), file=sys.stderr)
    finally:
        if archive is not None:
            with contextlib.suppress(Exception):
                archive.close()


def _state(plan: dict[str, Any], primary: Any, job_id: int) -> str:
    with contextlib.closing(primary.cursor()) as cur:
        cur.execute(plan["state_sql"], {"id": job_id})
        (state,) = cur.fetchone()
    primary.rollback()  # a fresh snapshot next time (MariaDB reads are repeatable)
    return str(state)


def _full_wait(job_id: int, timeout: float, started: float) -> int:
    """The rest of the wait in the full command's code, with its output and exit status."""
    import logging

    from lifecycle.cli.waiting import wait_for_shred_job as wait
    from lifecycle.core.logging_setup import configure

    configure(logging.WARNING, service="cli")
    try:
        wait(job_id, timeout, started=started)
    except LifecycleError as exc:
        print(f"lifecycle: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _wait(plan: dict[str, Any], primary: Any, job_id: int, timeout: float, started: float) -> int:
    """Until the job row says done, read every ``POLL_SECONDS`` or as soon as the task's
    result arrives on Redis (pub/sub); anything but done goes on in the full command's wait."""
    import redis  # loaded by kombu already

    deadline = started + timeout
    with (
        redis.Redis.from_url(_redis_url(plan["backend"])) as client,
        client.pubsub(ignore_subscribe_messages=True) as sub,
    ):
        try:
            task_id = _task_id(plan, primary, job_id)
            if task_id is None:
                return _full_wait(job_id, timeout, started)
            sub.subscribe(_RESULT_CHANNEL + task_id)
            while _state(plan, primary, job_id) != "done":
                left = deadline - time.monotonic()
                if left <= 0:
                    return _full_wait(job_id, timeout, started)
                # The row says done before the worker stores the task's result (its lease,
                # then Redis): a short poll of the row ends the wait sooner than the result.
                message = sub.get_message(timeout=min(left, POLL_SECONDS))
                if message is not None and _result_state(message) in _OVER:
                    return _full_wait(job_id, timeout, started)
        except redis.RedisError:
            return _full_wait(job_id, timeout, started)
    with contextlib.closing(primary.cursor()) as cur:
        cur.execute(plan["items_sql"], {"id": job_id})
        items = cur.fetchall()
    primary.rollback()
    counts: dict[str, int] = {}
    for status, _, _ in items:
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"shred job {job_id} done: {summary}")
    bad = [(n, i) for n, i in enumerate(items, start=1) if i[0] in ("refused", "failed")]
    for n, (status, reason, detail) in bad:
        text = REASONS.get(reason or "", reason or "")
        print(f"  path {n}: {status}: {text}" + (f" ({detail})" if detail else ""))
    if bad:
        sys.stdout.flush()
        print(
            f"lifecycle: error: shred job {job_id}: {len(bad)} of {len(items)} path(s) "
            "not shredded",
            file=sys.stderr,
        )
        return 1
    return 0


def _task_id(plan: dict[str, Any], primary: Any, job_id: int) -> str | None:
    with contextlib.closing(primary.cursor()) as cur:
        cur.execute(plan["task_sql"], {"id": job_id})
        (task_id,) = cur.fetchone()
    primary.rollback()
    return None if task_id is None else str(task_id)


def _result_state(message: dict[str, Any]) -> str | None:
    try:
        return str(json.loads(message["data"])["status"])
    except (ValueError, KeyError, TypeError):
        return None


def run(argv: list[str]) -> int | None:
    """Run ``shred PATH...`` the short way and return the exit status, or None (having
    written nothing) when the full command must run it."""
    started = time.monotonic()
    args = plain_shred_args(argv)
    if args is None:
        return None
    plan = _read_plan()
    if plan is None:
        return None
    try:
        if plan.get("stamp") != plan_stamp():
            return None
        actor = claimed_name(args.operator) or access_entry.os_user()
        roots = resolve_roots(plan["roots"])
        paths = check_paths(absolute(args.paths), roots, strict=True, recursive=args.recursive)
    except (OSError, LifecycleError):
        return None  # the full command refuses it in its own words
    if args.wait and sys.stderr.isatty():
        return None  # the progress bar is the full command's (rich)
    primary = None
    try:
        try:
            primary = connect_plain(plan["primary"])
            job_id = _insert(plan, primary, paths, args.recursive)
        except Exception:
            # Nothing was committed: the full command runs it and reports any error itself.
            return None
        if job_id is None:
            return None
        _send(plan, primary, job_id)
        _record(plan, actor, job_id, len(paths))
        print(QUEUED.format(job_id=job_id, count=len(paths), queue=plan["route"]["queue"]))
        if not args.wait:
            return 0
        sys.stdout.flush()
        return _wait(plan, primary, job_id, args.timeout, started)
    finally:
        if primary is not None:
            with contextlib.suppress(Exception):
                primary.rollback()
            with contextlib.suppress(Exception):
                primary.close()


# -- the plan, made by the full command ----------------------------------------------------------


def store_plan() -> None:
    """Leave the plan for the next `lifecycle shred PATH...` after the full command queued a
    job on this host; nothing when the site does not fit the short way. A cache only: any
    failure here is silent and costs the next command its full start."""
    with contextlib.suppress(Exception):
        plan = _make_plan()
        if plan is not None:
            write_own(_plan_path(), json.dumps(plan).encode(), ".shred-plan-")


def _redis_spec(variable: str, url: str) -> dict[str, str] | None:
    from urllib.parse import urlsplit

    if not url.startswith(("redis://", "rediss://")):
        return None
    if os.environ.get(variable) == url:
        return {"variable": variable}
    # A value from the .env file or a default: kept only without a password.
    return None if urlsplit(url).password else {"url": url}


def _make_plan() -> dict[str, Any] | None:
    # The full command's libraries, loaded already when it calls this.
    from lifecycle.core import dispatch
    from lifecycle.core.db import engine
    from lifecycle.core.queues import shred_queue
    from lifecycle.core.settings import get_settings
    from lifecycle.shred.jobs import DEFAULT_CATEGORIES, FIRST_RESEND_AFTER
    from models.guards import Operator
    from models.shred import ShredItem, ShredItemState, ShredJob, ShredJobState

    settings = get_settings()
    primary, archive = db_params("primary", settings), db_params("archive", settings)
    broker = _redis_spec(f"{settings_env.ENV_PREFIX}BROKER_URL", settings.broker_url)
    backend = _redis_spec(f"{settings_env.ENV_PREFIX}RESULT_BACKEND", settings.result_backend)
    if primary is None or archive is None or broker is None or backend is None:
        return None
    app = dispatch.celery_app()
    queue_name = shred_queue(settings.host_name)
    queue = app.amqp.queues[queue_name]
    if queue.exchange.type != "direct":
        return None  # Celery would publish to that exchange: the short way sends direct only
    q = engine("primary").dialect.identifier_preparer.quote
    jobs, items = q(ShredJob.__tablename__), q(ShredItem.__tablename__)
    job_cols: tuple[str, ...] = (
        "host",
        "state",
        "origin",
        "reason",
        "legal_basis",
        "categories",
        "request_id",
    )
    job_cols += ("paths_key", "passes", "zero", "verify", "recursive", "sends", "next_send_at")
    job_cols += ("created_at",)
    item_cols = ("job_id", "host", "state", "attempts", "ledgered", "path")
    returning = " RETURNING id" if primary["family"] == "postgresql" else ""
    return {
        "format": PLAN_FORMAT,
        "stamp": plan_stamp(),
        "roots": [str(r) for r in settings.file_roots],
        "primary": primary,
        "archive": archive,
        "broker": broker,
        "backend": backend,
        "broker_transport_options": dict(app.conf.broker_transport_options or {}),
        "publish_retry": bool(app.conf.task_publish_retry),
        "publish_retry_policy": dict(app.conf.task_publish_retry_policy or {}),
        "route": {
            "queue": queue_name,
            "exchange": queue.exchange.name,
            "exchange_type": queue.exchange.type,
            "routing_key": queue.routing_key,
            "delivery_mode": queue.exchange.delivery_mode or 2,
        },
        "task_name": dispatch.SHRED_FILES,
        "task_params": list(dispatch.PARAMS[dispatch.SHRED_FILES]),
        "first_resend_seconds": FIRST_RESEND_AFTER.total_seconds(),
        "job_values": {
            "host": settings.host_name,
            "state": ShredJobState.PENDING.value,
            "origin": "cli",
            "reason": DEFAULT_REASON,
            "legal_basis": DEFAULT_BASIS,
            "categories": json.dumps(sorted(set(DEFAULT_CATEGORIES))),
            "request_id": None,
            "paths_key": None,
            "passes": 1,
            "zero": False,
            "verify": False,
            "sends": 0,
        },
        "item_values": {
            "host": settings.host_name,
            "state": ShredItemState.PENDING.value,
            "attempts": 0,
            "ledgered": False,
        },
        "operators_sql": f"SELECT 1 FROM {q(Operator.__tablename__)} LIMIT 1",
        "job_sql": (
            f"INSERT INTO {jobs} ({', '.join(q(c) for c in job_cols)}) "
            f"VALUES ({', '.join(f'%({c})s' for c in job_cols)}){returning}"
        ),
        "item_sql": (
            f"INSERT INTO {items} ({', '.join(q(c) for c in item_cols)}) "
            f"VALUES ({', '.join(f'%({c})s' for c in item_cols)})"
        ),
        "sent_sql": (
            f"UPDATE {jobs} SET task_id = %(task_id)s, sends = %(sends)s, sent_at = %(sent_at)s, "
            "next_send_at = %(next_send_at)s WHERE id = %(id)s"
        ),
        "state_sql": f"SELECT state FROM {jobs} WHERE id = %(id)s",
        "task_sql": f"SELECT task_id FROM {jobs} WHERE id = %(id)s",
        "items_sql": (
            f"SELECT status, reason, detail FROM {items} WHERE job_id = %(id)s ORDER BY id"
        ),
        **_access_log_sql(),
    }


def _access_log_sql() -> dict[str, str]:
    from lifecycle.cli.submit_plan import access_log_sql

    return access_log_sql()
