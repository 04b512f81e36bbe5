"""Prometheus metrics for ops: what `lifecycle status` knows, as gauges alert rules can read.

One scrape reads the same sources as `lifecycle status` (`build_report`, without asking the
workers), so a number here and a line there never disagree. Labels are queue names, request
kinds, job names and incident ids; never a member, an address or a value. A store that cannot be
read sets ``lifecycle_up{store=...}`` to 0 and leaves out the gauges it would have given (absent,
not zero: an alert on "no overdue requests" must not fire quiet because the database is down).

The HTTP side is a few lines of WSGI around ``prometheus_client``: Basic authentication against
one generated password (as Flower's), and nothing but ``/metrics``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.timeutil import as_utc
from lifecycle.ops.status import build_report
from lifecycle.requests import residue
from models.base import utcnow
from models.requests import JobRun, LifecycleRequest, RequestState

log = logging.getLogger(__name__)

# Jobs whose last success ops alert on (README "Metrics and alerts"); they are reported even
# before their first run (no sample), so a rule on `absent()` can tell "never ran".
TRACKED_JOBS = ("sweep", "purge")
_SUCCESS = "ok"
_STORES = ("broker", "primary", "archive")


def last_successes(s: Session) -> dict[str, float]:
    """When each job last finished with everything done (Unix seconds), by job name."""
    rows = s.execute(
        select(JobRun.job, func.max(JobRun.finished_at))
        .where(JobRun.outcome == _SUCCESS, JobRun.finished_at.is_not(None))
        .group_by(JobRun.job)
    ).all()
    return {job: as_utc(when).timestamp() for job, when in rows if when is not None}


def residue_findings(s: Session) -> int:
    """Requests parked because a member's identity was found left behind, not yet accepted."""
    parked = s.scalars(
        select(LifecycleRequest).where(LifecycleRequest.state == RequestState.NEEDS_ATTENTION.value)
    )
    return sum(1 for req in parked if residue.open_reason(req) is not None)


def snapshot(
    settings: Any,
    *,
    primary_session: Callable[[], Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything one scrape reports, as plain data (tests read it without HTTP)."""
    now = now or utcnow()
    factory = primary_session or (lambda: db.session("primary"))
    report = build_report(settings, primary_session=factory, now=now)
    out: dict[str, Any] = {"report": report, "successes": None, "residue": None}
    if "primary" in report and report["primary"].get("ok"):
        try:
            with factory() as s:
                out["successes"] = last_successes(s)
                out["residue"] = residue_findings(s)
        except Exception as exc:
            # Lost between the report's read and this one: the scrape says the store is down
            # rather than publishing half of what it knows.
            log.warning("metrics: primary read failed: %s", type(exc).__name__)
            report["primary"] = {"error": type(exc).__name__}
    return out


def families(snap: dict[str, Any]) -> list[GaugeMetricFamily]:
    """The gauges of one snapshot (pure: no I/O)."""
    report = snap["report"]
    down = {k for k in _STORES if "error" in (report.get(k) or {"error": "not read"})}
    out: list[GaugeMetricFamily] = []

    up = GaugeMetricFamily(
        "lifecycle_up", "1 when the store answered this scrape, 0 when it did not", labels=["store"]
    )
    for store in _STORES:
        up.add_metric([store], 0.0 if store in down else 1.0)
    out.append(up)

    broker = report.get("broker")
    if broker and "queues" in broker and "broker" not in down:
        depth = GaugeMetricFamily(
            "lifecycle_queue_depth", "Messages waiting in each job queue", labels=["queue"]
        )
        for queue, n in sorted(broker["queues"].items()):
            depth.add_metric([queue], float(n))
        out.append(depth)
        if broker.get("unacked") is not None:
            out.append(
                GaugeMetricFamily(
                    "lifecycle_jobs_unacknowledged",
                    "Jobs delivered to a worker and not yet acknowledged",
                    value=float(broker["unacked"]),
                )
            )

    if "primary" in down or "requests" not in report:
        return out
    req = report["requests"]
    open_ = GaugeMetricFamily(
        "lifecycle_requests_open", "Open data-subject requests by kind", labels=["kind"]
    )
    overdue = GaugeMetricFamily(
        "lifecycle_requests_overdue",
        "Open requests past their legal deadline by kind",
        labels=["kind"],
    )
    for kind, d in sorted((req.get("deadlines") or {}).items()):
        open_.add_metric([kind], float(d.get("open", 0)))
        overdue.add_metric([kind], float(d.get("overdue", 0)))
    out += [open_, overdue]
    parked = (req.get("open_by_state") or {}).get(RequestState.NEEDS_ATTENTION.value, 0)
    out.append(
        GaugeMetricFamily(
            "lifecycle_requests_needing_attention",
            "Requests parked until an operator acts (status names each with its reason)",
            value=float(parked),
        )
    )
    out.append(
        GaugeMetricFamily(
            "lifecycle_requests_failed_recently",
            "Requests that failed in the last 7 days",
            value=float(req.get("failed_total", 0)),
        )
    )
    deliveries = report.get("deliveries") or {}
    if deliveries.get("available"):
        out.append(
            GaugeMetricFamily(
                "lifecycle_deliveries_failing",
                "Deliveries to third parties failing or being retried",
                value=float(deliveries.get("failing_total", 0)),
            )
        )
    notices = report.get("notices") or {}
    if notices.get("available"):
        out.append(
            GaugeMetricFamily(
                "lifecycle_notices_in_doubt",
                "Notice recipients whose sending is in doubt (lifecycle notice reconcile)",
                value=float(notices.get("in_doubt_total", 0)),
            )
        )
    if snap.get("residue") is not None:
        out.append(
            GaugeMetricFamily(
                "lifecycle_residue_findings",
                "Requests parked because a member's identity was found left in the database",
                value=float(snap["residue"]),
            )
        )
    found = report.get("findings")
    if found is not None:
        out.append(
            GaugeMetricFamily(
                "lifecycle_datamap_uncovered_findings",
                "Columns holding personal data the data map does not cover (open discovery "
                "findings nobody acknowledged)",
                value=float(found.get("discovery_uncovered", 0)),
            )
        )
        out.append(
            GaugeMetricFamily(
                "lifecycle_datamap_linkage_findings",
                "Table columns whose rows hold another member's identity (open linkage findings)",
                value=float(found.get("linkage", 0)),
            )
        )
    orphans = (report.get("orphans") or {}).get("members")
    out.append(
        GaugeMetricFamily(
            "lifecycle_orphan_members",
            "Member ids deleted by the site still named by rows",
            value=float(orphans or 0),
        )
    )
    if snap.get("successes") is not None:
        last = GaugeMetricFamily(
            "lifecycle_last_success_timestamp_seconds",
            "When the job last finished with everything its plan named done",
            labels=["job"],
        )
        for job in sorted(set(TRACKED_JOBS) | set(snap["successes"])):
            if job in snap["successes"]:
                last.add_metric([job], snap["successes"][job])
        out.append(last)
    failed = GaugeMetricFamily(
        "lifecycle_last_run_failed",
        "1 when the job's latest run did not do all it was asked",
        labels=["job"],
    )
    for run in report.get("jobs") or []:
        failed.add_metric([run["job"]], 0.0 if run.get("outcome") in ("ok", "running") else 1.0)
    out.append(failed)
    incidents = report.get("incidents") or []
    deadline = GaugeMetricFamily(
        "lifecycle_incident_deadline_timestamp_seconds",
        "72-hour deadline (제34조) of each open breach incident",
        labels=["incident"],
    )
    for inc in incidents:
        deadline.add_metric(
            [str(inc["id"])], datetime.fromisoformat(inc["deadline_at"]).timestamp()
        )
    out.append(deadline)
    # Drafting is not reporting (시행령 제40조): 1 while a due report is not recorded as
    # submitted; the submission's time, labelled with who received it, once it is.
    outstanding = GaugeMetricFamily(
        "lifecycle_incident_report_outstanding",
        "1 while an open breach incident's due report (시행령 제40조①) is not recorded as "
        "submitted",
        labels=["incident"],
    )
    submitted = GaugeMetricFamily(
        "lifecycle_incident_report_submitted_timestamp_seconds",
        "When an open breach incident's report was submitted, by recipient (pipc or kisa)",
        labels=["incident", "to"],
    )
    for inc in incidents:
        outstanding.add_metric([str(inc["id"])], 1.0 if inc.get("report_outstanding") else 0.0)
        if inc.get("submitted_at"):
            submitted.add_metric(
                [str(inc["id"]), str(inc.get("submitted_to"))],
                datetime.fromisoformat(inc["submitted_at"]).timestamp(),
            )
    out += [outstanding, submitted]
    out.append(
        GaugeMetricFamily(
            "lifecycle_attention_items",
            "Lines `lifecycle status` lists as needing attention (its exit status 1)",
            value=float(len(report.get("attention") or [])),
        )
    )
    return out


class LifecycleCollector(Collector):
    """Reads a fresh snapshot on every scrape (Prometheus scrapes about once a minute)."""

    def __init__(self, settings: Any, **snapshot_args: Any) -> None:
        self._settings = settings
        self._args = snapshot_args

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from families(snapshot(self._settings, **self._args))


def registry(settings: Any, **snapshot_args: Any) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(LifecycleCollector(settings, **snapshot_args))
    return reg


def authorised(header: str | None, user: str, password: str) -> bool:
    """Whether an ``Authorization`` header carries this user and password (Basic)."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    expected = f"{user}:{password}"
    return hmac.compare_digest(given.encode(), expected.encode())


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_app(reg: CollectorRegistry, user: str, password: str) -> WsgiApp:
    metrics = make_wsgi_app(reg)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: only /metrics is served\n"]
        if not authorised(environ.get("HTTP_AUTHORIZATION"), user, password):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Basic realm="lifecycle"')],
            )
            return [b"authentication required\n"]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


class _QuietHandler(WSGIRequestHandler):
    # wsgiref logs every request line to stderr; a scrape a minute is noise, not news.
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


def serve(app: WsgiApp, address: str, port: int) -> Any:
    """A threading HTTP server for ``app`` (call ``serve_forever`` on it)."""
    return make_server(address, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
