"""What `lifecycle status` reports, as plain data (the CLI renders it as tables or JSON).

Each reader is a small function that either returns its data or raises; `build_report` runs
them all, so one unreachable store never hides what the others can tell. What is overdue is
decided once, by each kind's own deadline (`lifecycle.requests.deadlines`). Nothing here returns
personal data: requests are shown by id, kind, state and age; deliveries by id and recipient.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from lifecycle.core import db, leases, queues
from lifecycle.core.errors import LifecycleError
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap import findings
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.guest_rows import GUEST_NOTE
from lifecycle.engine import sweep_watch
from lifecycle.incidents import breach
from lifecycle.notices.addresses import waiting_addresses
from lifecycle.notices.reconcile import in_doubt_by_notice
from lifecycle.ops import flower_locator
from lifecycle.recipients import deliveries
from lifecycle.requests import deadlines, holds
from lifecycle.requests.residue import SAMPLED_NOTE
from models.base import utcnow
from models.engine import OrphanMember, SweepBatch
from models.incidents import Incident, IncidentState
from models.notices import Notice, NoticeRecipient, NoticeRecipientState
from models.requests import OPEN_STATES, JobRun, LifecycleRequest, RequestState

OVERDUE_LIST_LIMIT = 50
# Notice rows a batch still has to act on (held ones wait for a withdrawal to finish).
UNFINISHED_RECIPIENT_STATES = (
    NoticeRecipientState.PENDING.value,
    NoticeRecipientState.SENDING.value,
    NoticeRecipientState.HELD.value,
)
# Celery's Redis transport keeps messages of priority p>0 under "<queue>\x06\x16<p>".
_REDIS_PRIORITY_SEP = "\x06\x16"
_REDIS_PRIORITY_STEPS = (0, 3, 6, 9)


def redact_url(url: str) -> str:
    """A URL fit for a status line: the user stays, the password never shows."""

    def strip(m: re.Match[str]) -> str:
        user = m.group(1).split(":", 1)[0]
        return f"//{user}@" if user else "//"

    return re.sub(r"//([^@/]*)@", strip, url, count=1)


def one_line_reason(exc: BaseException) -> str:
    """The useful tail of a connection error (``Connection refused``), on one line."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # redis-py: "Error 111 connecting to 127.0.0.1:6390. Connection refused."
    m = re.match(r"Error \d+ connecting to [^ ]+\. (.*?)\.?$", line)
    if m:
        return m.group(1)
    # psycopg: 'connection failed: connection to server at "127.0.0.1", port 1 failed: ...'
    if "failed:" in line:
        line = line.rsplit("failed:", 1)[1].strip()
    return line.rstrip(".") or type(exc).__name__


# -- broker ------------------------------------------------------------------------------------


def _is_our_queue(name: str, host_queues: Iterable[str]) -> bool:
    return name in host_queues or name.startswith(queues.SHRED_PREFIX)


def redis_queue_depths(url: str, host: str, timeout: float = 2.0) -> dict[str, Any]:
    """LLEN of every lifecycle queue (all priority levels), plus shred.<host> of every host."""

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    client.ping()
    names = set(queues.worker_queues(host))
    # Queues other hosts' workers declared (shred.<their host>) are in kombu's binding sets;
    # non-empty ones also exist as list keys.
    for key in client.scan_iter(match="_kombu.binding.*", count=200):
        for member in client.smembers(key):
            raw = member.decode(errors="replace") if isinstance(member, bytes) else member
            queue = raw.rsplit(_REDIS_PRIORITY_SEP, 1)[-1]
            if queue.startswith(queues.SHRED_PREFIX):
                names.add(queue)
    for key in client.scan_iter(match=f"{queues.SHRED_PREFIX}*", count=200):
        names.add(key.decode(errors="replace").split(_REDIS_PRIORITY_SEP, 1)[0])
    depths: dict[str, int] = {}
    for name in sorted(names):
        keys = [name] + [f"{name}{_REDIS_PRIORITY_SEP}{p}" for p in _REDIS_PRIORITY_STEPS if p]
        pipe = client.pipeline()
        for k in keys:
            pipe.llen(k)
        depths[name] = int(sum(pipe.execute()))
    # Delivered to a worker, not yet acknowledged (running, or lost with a dead worker until
    # the visibility timeout brings it back).
    unacked = int(client.hlen("unacked"))
    return {"queues": depths, "unacked": unacked}


def filesystem_queue_depths(folder: Path, host: str) -> dict[str, Any]:
    """Message files per queue in the embedded broker's folder (``<ms>_<uuid>.<queue>.msg``)."""
    queue_dir = folder / "queue"
    if not queue_dir.is_dir():
        raise FileNotFoundError(f"broker folder {queue_dir} does not exist")
    host_queues = queues.worker_queues(host)
    depths = dict.fromkeys(host_queues, 0)
    for entry in os.scandir(queue_dir):
        name = entry.name
        if not name.endswith(".msg"):
            continue
        queue = name.partition(".")[2].removesuffix(".msg")
        if _is_our_queue(queue, host_queues):
            depths[queue] = depths.get(queue, 0) + 1
    return {"queues": dict(sorted(depths.items())), "unacked": None}


# Workers seen answering within this window are expected to answer again: the ping returns as
# soon as that many have, instead of always waiting out the timeout (a broadcast cannot know how
# many listen). A worker gone for good is dropped from the file after the window.
KNOWN_WORKERS_WINDOW = timedelta(hours=24)


def workers_online(
    app: Any, timeout: float = 1.0, known_file: Path | None = None, now: datetime | None = None
) -> list[str]:
    """Names of workers that answered a broadcast ping within ``timeout`` seconds.

    With ``known_file``, the ping stops once as many workers answered as were seen in the last
    day (a stopped worker then costs the full timeout, as before), and the file is updated.
    """
    now = now or datetime.now(UTC)
    known = _read_known_workers(known_file, now) if known_file else {}
    replies = app.control.inspect(timeout=timeout, limit=len(known) or None).ping() or {}
    names = sorted(replies)
    if known_file is not None:
        _write_known_workers(known_file, known | dict.fromkeys(names, now.isoformat()))
    return names


def _read_known_workers(path: Path, now: datetime) -> dict[str, str]:
    try:
        seen = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(seen, dict):
        return {}
    known: dict[str, str] = {}
    for name, when in seen.items():
        try:
            if now - datetime.fromisoformat(str(when)) <= KNOWN_WORKERS_WINDOW:
                known[str(name)] = str(when)
        except (TypeError, ValueError):
            continue
    return known


def _write_known_workers(path: Path, known: dict[str, str]) -> None:
    # A cache only: a status run that cannot write it (read-only var dir) still reports.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, sort_keys=True))
        os.replace(tmp, path)


# -- primary database --------------------------------------------------------------------------


def open_requests_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(LifecycleRequest.state, func.count())
        .where(LifecycleRequest.state.in_([st.value for st in OPEN_STATES]))
        .group_by(LifecycleRequest.state)
    ).all()
    return {state: int(n) for state, n in sorted(rows)}


def parked_requests(session: Session) -> list[dict[str, Any]]:
    """Requests in ``needs_attention`` with their one-line reasons (names and counts only:
    e.g. a residue check's table.column and counts), oldest first."""
    rows = session.execute(
        select(LifecycleRequest.id, LifecycleRequest.kind, LifecycleRequest.error)
        .where(LifecycleRequest.state == RequestState.NEEDS_ATTENTION.value)
        .order_by(LifecycleRequest.id)
        .limit(OVERDUE_LIST_LIMIT)
    ).all()
    return [{"id": int(i), "kind": k, "reason": e} for i, k, e in rows]


@dataclass(frozen=True)
class OverdueRequest:
    id: int
    kind: str
    state: str
    created_at: datetime
    age_days: float


def _site_day(now: datetime) -> Any:
    from zoneinfo import ZoneInfo

    from lifecycle.core.settings import get_settings

    return as_utc(now).astimezone(ZoneInfo(get_settings().timezone)).date()


def active_holds(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """Active legal holds by id, scope and end (no member ids) and the requests they stop."""
    day = _site_day(now or datetime.now(UTC))
    act = holds.active(session, day)
    return {
        "active_total": len(act),
        "active": [
            {"id": h.id, "scope": h.scope, "category": h.category, "until": h.until.isoformat()}
            for h in act[:OVERDUE_LIST_LIMIT]
        ],
        "held_requests": sorted(holds.open_requests_held(session, day)),
    }


def _age_days(now: datetime, created: datetime) -> float:
    return round((now - created).total_seconds() / 86400, 1)


def overdue_by_kind(session: Session, now: datetime | None = None) -> list[OverdueRequest]:
    """Open requests past their own kind's legal deadline (or their recorded extension); not
    those a legal hold stops (listed under holds)."""
    now = now or datetime.now(UTC)
    return [
        OverdueRequest(r.id, r.kind, r.state, r.created_at, _age_days(now, r.created_at))
        for r in deadlines.overdue(session, now)
    ]


FAILED_WINDOW = timedelta(days=7)


def recently_failed(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Requests that failed in the last week, newest first, with their one-line reason (the
    workers write no personal data there)."""
    rows = session.execute(
        select(
            LifecycleRequest.id,
            LifecycleRequest.kind,
            LifecycleRequest.error,
            LifecycleRequest.steps_done,
        )
        .where(
            LifecycleRequest.state == RequestState.FAILED.value,
            LifecycleRequest.updated_at >= now - FAILED_WINDOW,
        )
        .order_by(LifecycleRequest.id.desc())
    ).all()
    # steps_done: what it did before it failed (`lifecycle requests retry` resumes after it).
    return [
        {
            "id": i,
            "kind": k,
            "error": (e or "")[:300],
            "steps_done": [x for x in (d or "").split(",") if x],
        }
        for i, k, e, d in rows
    ]


def recently_noted(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Withdrawals of the last week that completed but left guest rows a member still with the
    site could also own (lifecycle/engine/guests.py), or whose residue check searched some
    tables by a sample only, with their one-line note."""
    rows = session.execute(
        select(LifecycleRequest.id, LifecycleRequest.kind, LifecycleRequest.error)
        .where(
            LifecycleRequest.state == RequestState.COMPLETED.value,
            LifecycleRequest.updated_at >= now - FAILED_WINDOW,
            or_(
                LifecycleRequest.error.startswith(GUEST_NOTE),
                LifecycleRequest.error.startswith(SAMPLED_NOTE),
            ),
        )
        .order_by(LifecycleRequest.id.desc())
    ).all()
    return [{"id": i, "kind": k, "note": (e or "")[:300]} for i, k, e in rows]


def failing_deliveries(s: Session) -> list[dict[str, Any]] | None:
    """Third-party deliveries that failed or are being retried."""
    rows = deliveries.failing_deliveries(s)
    keep = ("id", "recipient", "kind", "request_id", "state", "attempts", "last_status")
    out = []
    for row in rows:
        item = {k: row.get(k) for k in keep if k in row}
        nxt = row.get("next_attempt_at")
        item["next_attempt_at"] = nxt.isoformat() if isinstance(nxt, datetime) else nxt
        out.append(item)
    return out


def notices_in_doubt(s: Session) -> list[dict[str, Any]] | None:
    """Notices with rows in doubt (maybe delivered, not resent): they need an operator's
    `lifecycle notice reconcile`."""
    return in_doubt_by_notice(s)


def last_job_runs(session: Session, jobs: tuple[str, ...] = ("sweep",)) -> list[JobRun]:
    """The latest run of each named job (jobs never run are left out)."""
    out: list[JobRun] = []
    for job in jobs:
        run = session.scalar(
            select(JobRun).where(JobRun.job == job).order_by(JobRun.id.desc()).limit(1)
        )
        if run is not None:
            out.append(run)
    return out


def latest_job_runs(session: Session) -> list[dict[str, Any]]:
    """The latest run of every job recorded in lifecycle_job_runs, as plain data."""
    jobs = tuple(sorted(session.scalars(select(JobRun.job).distinct())))
    out = []
    for run in last_job_runs(session, jobs):
        out.append(
            {
                "job": run.job,
                "run_id": run.id,
                "task_id": run.task_id,
                "started_at": as_utc(run.started_at).isoformat() if run.started_at else None,
                "finished_at": as_utc(run.finished_at).isoformat() if run.finished_at else None,
                "outcome": run.outcome,
                "counts": run.counts or {},
            }
        )
    return out


def orphan_status(session: Session) -> dict[str, Any]:
    """Member ids the site deleted while rows still name them (lifecycle.engine.orphans), as
    the last sweep recorded them: how many, and since when the oldest was seen."""
    o = OrphanMember.__table__
    n, oldest = session.execute(select(func.count(), func.min(o.c.first_seen_at))).one()
    return {
        "members": int(n),
        "oldest_first_seen_at": as_utc(oldest).isoformat() if oldest is not None else None,
    }


def unfinished_work(session: Session, now: datetime) -> dict[str, Any]:
    """Everything started and not finished, with its age: stalls show up here, not silence.

    ``jobs``: leased jobs (running, retrying, re-dispatched, or stalled: lease expired and not
    yet re-sent); ``batches``: sweep runs with batches still pending; ``notices``: notices with
    members still to send to.
    """
    conn = session.connection()
    jobs = leases.unfinished(conn, now=now)
    b, jr = SweepBatch.__table__, JobRun.__table__
    batches = [
        {
            "run_id": int(run_id),
            "pending": int(n),
            "age_seconds": int((now - as_utc(started)).total_seconds()),
            "idle_seconds": int((now - as_utc(last)).total_seconds()),
        }
        for run_id, n, started, last in conn.execute(
            select(b.c.run_id, func.count(), jr.c.started_at, func.max(b.c.updated_at))
            .join(jr, jr.c.id == b.c.run_id)
            .where(b.c.state == "pending", jr.c.outcome == "running")
            .group_by(b.c.run_id, jr.c.started_at)
            .order_by(b.c.run_id)
        )
    ]
    n, nr = Notice.__table__, NoticeRecipient.__table__
    notices = [
        {
            "notice_id": int(notice_id),
            "kind": kind,
            "state": state,
            "unsent": int(left),
            "age_seconds": int((now - as_utc(created)).total_seconds()),
            "idle_seconds": int((now - as_utc(updated)).total_seconds()),
        }
        for notice_id, kind, state, created, updated, left in conn.execute(
            select(n.c.id, n.c.kind, n.c.state, n.c.created_at, n.c.updated_at, func.count())
            .join(nr, nr.c.notice_id == n.c.id)
            .where(nr.c.state.in_(UNFINISHED_RECIPIENT_STATES))
            .group_by(n.c.id, n.c.kind, n.c.state, n.c.created_at, n.c.updated_at)
            .order_by(n.c.id)
        )
    ]
    # A sweep run left running that no lease brings back: said here, never silent.
    unattended = [
        {"run_id": u.run_id, "idle_seconds": u.idle_seconds, "reason": u.reason}
        for u in sweep_watch.unattended_runs(conn, now)
    ]
    return {
        "unattended_runs": unattended,
        "jobs": jobs[:OVERDUE_LIST_LIMIT],
        "jobs_total": len(jobs),
        "stalled_total": sum(1 for j in jobs if j["state"] == "stalled"),
        "batches": batches,
        "notices": notices[:OVERDUE_LIST_LIMIT],
    }


# -- putting it together -------------------------------------------------------------------------


def open_incidents(s: Session, now: datetime) -> list[dict[str, Any]]:
    """Open breach incidents with their 72-hour clock and notice counts (no personal data)."""
    datamap = None
    if s.scalar(select(Incident.id).where(Incident.state == IncidentState.OPEN.value).limit(1)):
        # The map says which categories are 민감정보 (a ground for the report); the clock and
        # the counts do not need it, so a map that fails to load (`lifecycle datamap check`
        # says why) does not hide them.
        with contextlib.suppress(Exception):
            datamap = current_datamap()
    return breach.open_summaries(s, now, datamap)


def _section(
    report: dict[str, Any], key: str, label: str, target: str, fn: Callable[[], Any]
) -> Any:
    try:
        value = fn()
    except Exception as exc:
        line = f"{label}: unreachable ({target}): {one_line_reason(exc)}"
        report["unreachable"].append(line)
        report[key] = {"error": line}
        return None
    report[key] = value
    return value


def build_report(
    settings: Any,
    *,
    app: Any = None,
    primary_session: Callable[[], Any] | None = None,
    archive_check: Callable[[], None] | None = None,
    flower_check: Callable[[], bool] | None = None,
    worker_timeout: float = 1.0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything `lifecycle status` shows; ``report["unreachable"]`` lists what failed."""

    now = now or utcnow()
    report: dict[str, Any] = {"generated_at": now.isoformat(), "unreachable": []}
    broker_url = redact_url(settings.broker_url)
    if settings.broker_is_filesystem:
        broker_target = f"filesystem {settings.broker_folder}"

        def read_broker() -> dict[str, Any]:
            return filesystem_queue_depths(settings.broker_folder, settings.host_name)
    else:
        broker_target = broker_url

        def read_broker() -> dict[str, Any]:
            return redis_queue_depths(settings.broker_url, settings.host_name)

    broker = _section(report, "broker", "broker", broker_target, read_broker)
    if broker is not None:
        broker["url"] = broker_url
    if broker is not None and app is not None:

        def read_workers() -> dict[str, Any]:
            known = Path(settings.var_dir) / "known-workers.json"
            names = workers_online(app, worker_timeout, known, now)
            return {"online": len(names), "names": names}

        _section(report, "workers", "workers", broker_target, read_workers)
    elif app is not None:
        report["workers"] = {"error": "not asked: the broker is unreachable"}

    primary_url = redact_url(settings.sqlalchemy_url("primary"))
    session_factory = primary_session or (lambda: db.session("primary"))
    days = int(getattr(settings, "destruction_deadline_days", 5))

    def read_requests() -> dict[str, Any]:
        with session_factory() as s:
            by_state = open_requests_by_state(s)
            overdue = overdue_by_kind(s, now)
            by_kind = deadlines.by_kind(s, now)
            deliveries = failing_deliveries(s)
            in_doubt = notices_in_doubt(s)
            addresses = waiting_addresses(s, now)
            jobs = latest_job_runs(s)
            held = active_holds(s, now)
            unfinished = unfinished_work(s, now)
            failed = recently_failed(s, now)
            incidents = open_incidents(s, now)
            parked = parked_requests(s)
            noted = recently_noted(s, now)
            orphaned = orphan_status(s)
            found = findings.open_counts(s)
        return {
            "findings": found,
            "incidents": incidents,
            "needs_attention": parked,
            "noted_total": len(noted),
            "noted": noted[:OVERDUE_LIST_LIMIT],
            "orphans": orphaned,
            "holds": held,
            "unfinished": unfinished,
            "failed_total": len(failed),
            "failed": failed[:OVERDUE_LIST_LIMIT],
            "open_by_state": by_state,
            "open_total": sum(by_state.values()),
            "deadline_days": days,
            "overdue_total": len(overdue),
            "deadlines": by_kind,
            "overdue": [
                {
                    "id": o.id,
                    "kind": o.kind,
                    "state": o.state,
                    "created_at": o.created_at.isoformat(),
                    "age_days": o.age_days,
                }
                for o in overdue[:OVERDUE_LIST_LIMIT]
            ],
            "failing_deliveries": deliveries,
            "notices_in_doubt": in_doubt,
            "notice_addresses": addresses,
            "jobs": jobs,
        }

    primary = _section(report, "primary", "primary database", primary_url, read_requests)
    if primary is not None:
        report["requests"] = {
            k: primary[k]
            for k in (
                "open_by_state",
                "open_total",
                "deadline_days",
                "overdue_total",
                "overdue",
                "deadlines",
                "failed_total",
                "failed",
                "needs_attention",
                "noted_total",
                "noted",
            )
        }
        report["deliveries"] = (
            {"available": False}
            if primary["failing_deliveries"] is None
            else {
                "available": True,
                "failing_total": len(primary["failing_deliveries"]),
                "failing": primary["failing_deliveries"][:OVERDUE_LIST_LIMIT],
            }
        )
        doubt = primary["notices_in_doubt"]
        report["notices"] = (
            {"available": False}
            if doubt is None
            else {
                "available": True,
                "in_doubt_total": sum(n["in_doubt"] for n in doubt),
                "in_doubt": doubt[:OVERDUE_LIST_LIMIT],
                # Withdrawn members' addresses kept for an unsent notice (counts only).
                "captured_addresses": primary["notice_addresses"],
            }
        )
        report["jobs"] = primary["jobs"]
        report["holds"] = primary["holds"]
        report["unfinished"] = primary["unfinished"]
        report["incidents"] = primary["incidents"]
        report["orphans"] = primary["orphans"]
        report["findings"] = primary["findings"]
        report["primary"] = {"ok": True, "url": primary_url}

    archive_url = redact_url(settings.sqlalchemy_url("archive"))
    check = archive_check or (lambda: _ping_db("archive"))

    def read_archive() -> dict[str, Any]:
        check()
        return {"ok": True, "url": archive_url}

    _section(report, "archive", "archive database", archive_url, read_archive)

    if flower_check is not None:
        url = flower_locator.locate(settings)
        try:
            reachable = bool(flower_check())
        except Exception:
            reachable = False
        # Flower is a viewer, not a store: its absence is reported but is not a failure here.
        report["flower"] = {"url": url, "reachable": reachable}
    report["attention"] = needs_attention(report)
    try:
        settings.organisation()
    except LifecycleError as exc:
        # Every answer, notice and access package would fail on it: say so before one does.
        report["attention"].append(str(exc))
    report["ok"] = not report["unreachable"] and not report["attention"]
    return report


# Outcomes of a job run that mean it did all it was asked (or is still at it); any other
# ("failed", "abandoned", ...) means it did not.
_GOOD_RUN_OUTCOMES = ("ok", "done", "success", "running")


def needs_attention(report: dict[str, Any]) -> list[str]:
    """One line per thing an operator must look at (cron alerts on them: exit status 1).

    A store that could not be read is not listed here (that is exit status 3); what it would
    have said is unknown, not fine.
    """
    out: list[str] = []
    req = report.get("requests") or {}
    if req.get("overdue_total"):
        out.append(f"{req['overdue_total']} request(s) past their legal deadline")
    if req.get("failed_total"):
        out.append(f"{req['failed_total']} request(s) failed in the last 7 days")
    if req.get("noted_total"):
        out.append(
            f"{req['noted_total']} request(s) completed with a note in the last 7 days "
            "(guest rows left for a shared identity)"
        )
    found = report.get("findings") or {}
    if found.get("discovery_uncovered"):
        out.append(
            f"{found['discovery_uncovered']} column(s) hold personal data the data map does not "
            "cover (open discovery findings; the console's 데이터 맵 점검 page lists them)"
        )
    if found.get("linkage"):
        out.append(
            f"{found['linkage']} table column(s) link rows to the wrong member (open linkage "
            "findings; `lifecycle datamap check` shows them)"
        )
    orphaned = (report.get("orphans") or {}).get("members")
    if orphaned:
        out.append(
            f"{orphaned} member id(s) deleted by the site still named by rows (orphans, "
            "datamap check lists the tables); the sweep takes them once past the grace"
        )
    parked = (req.get("open_by_state") or {}).get(RequestState.NEEDS_ATTENTION.value)
    if parked:
        out.append(f"{parked} request(s) need attention")
        for p in req.get("needs_attention") or []:
            out.append(f"request {p['id']} ({p['kind']}) needs attention: {p['reason']}")
    dl = report.get("deliveries") or {}
    if dl.get("failing_total"):
        out.append(f"{dl['failing_total']} third-party deliveries failing or being retried")
    notices = report.get("notices") or {}
    if notices.get("in_doubt_total"):
        out.append(f"{notices['in_doubt_total']} notice(s) in doubt (lifecycle notice reconcile)")
    for run in report.get("jobs") or []:
        unhandled = (run.get("counts") or {}).get("orphan_rows_unhandled")
        if unhandled:
            out.append(
                f"{run.get('job')} run {run.get('run_id')}: {unhandled} orphan row(s) under a "
                "login-id link the sweep cannot take (datamap check lists the tables)"
            )
        if run.get("outcome") not in _GOOD_RUN_OUTCOMES:
            out.append(f"last {run['job']} run {run['run_id']} {run['outcome']}")
    for inc in report.get("incidents") or []:
        out.extend(breach.attention(inc))
    unfinished = report.get("unfinished") or {}
    if unfinished.get("stalled_total"):
        out.append(f"{unfinished['stalled_total']} job(s) stalled (lease expired, not re-sent)")
    out += [str(u["reason"]) for u in unfinished.get("unattended_runs") or []]
    return out


def _ping_db(which: str) -> None:

    with db.engine(which).connect() as conn:  # type: ignore[arg-type]
        conn.execute(text("SELECT 1"))
