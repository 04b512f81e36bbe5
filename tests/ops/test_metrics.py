"""`lifecycle metrics serve`: the Prometheus endpoint, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lifecycle.core import db
from lifecycle.ops import metrics
from lifecycle.requests import residue
from models.base import utcnow
from models.incidents import Incident
from models.requests import JobRun, LifecycleRequest
from tests.helpers import REPO, LifecycleEnv, free_port, stop_group, wait_port

PASSWORD = "scrape-secret"


@contextmanager
def _serving(env: LifecycleEnv, **more: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli.main", "metrics", "serve", "--port", str(port)],
        env=env.environ(LIFECYCLE_METRICS_PASSWORD=PASSWORD, **more),
        cwd=env.var_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_port(port, 60)
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        stop_group(proc, 10)


def _samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _seed() -> dict[str, int]:
    now = utcnow()
    with db.session("primary") as s:
        s.add(LifecycleRequest(kind="withdrawal", member_id=501, state="received"))
        s.add(
            LifecycleRequest(
                kind="correction",
                member_id=502,
                state="dispatched",
                created_at=now - timedelta(days=20),
            )
        )
        parked = LifecycleRequest(kind="withdrawal", member_id=503, state="needs_attention")
        residue.record(parked, {"found": {"notes.body": 2}, "searched": 3})
        s.add(parked)
        for job, outcome, hours_ago in (("sweep", "ok", 2), ("purge", "failed", 0)):
            s.add(
                JobRun(
                    job=job,
                    started_at=now - timedelta(hours=hours_ago + 1),
                    finished_at=now - timedelta(hours=hours_ago),
                    outcome=outcome,
                )
            )
        inc = Incident(
            opened_by="test",
            detected_at=now - timedelta(hours=2),
            deadline_at=now + timedelta(hours=70),
            occurred_from=now - timedelta(days=1),
            occurred_to=now,
            description="test",
        )
        s.add(inc)
        s.flush()
        return {"incident": inc.id, "deadline": int((now + timedelta(hours=70)).timestamp())}


def test_metrics_say_what_status_says_behind_a_login(primary_env: LifecycleEnv) -> None:
    seeded = _seed()
    with _serving(primary_env) as url:
        assert httpx.get(url, timeout=30).status_code == 401
        assert httpx.get(url, auth=("prometheus", "wrong"), timeout=30).status_code == 401
        assert httpx.get(url.replace("/metrics", "/"), timeout=30).status_code == 404
        r = httpx.get(url, auth=("prometheus", PASSWORD), timeout=60)
    assert r.status_code == 200, r.text
    got = _samples(r.text)
    assert got[("lifecycle_up", (("store", "primary"),))] == 1
    assert got[("lifecycle_up", (("store", "archive"),))] == 1
    assert got[("lifecycle_up", (("store", "broker"),))] == 1
    assert got[("lifecycle_queue_depth", (("queue", "requests"),))] == 0
    # The parked withdrawal is open too (needs attention is an open state).
    assert got[("lifecycle_requests_open", (("kind", "withdrawal"),))] == 2
    assert got[("lifecycle_requests_open", (("kind", "correction"),))] == 1
    assert got[("lifecycle_requests_overdue", (("kind", "correction"),))] == 1
    assert got[("lifecycle_requests_overdue", (("kind", "withdrawal"),))] == 0
    assert got[("lifecycle_requests_needing_attention", ())] == 1
    assert got[("lifecycle_residue_findings", ())] == 1
    assert got[("lifecycle_deliveries_failing", ())] == 0
    assert got[("lifecycle_notices_in_doubt", ())] == 0
    assert got[("lifecycle_last_run_failed", (("job", "purge"),))] == 1
    assert got[("lifecycle_last_run_failed", (("job", "sweep"),))] == 0
    # The failed purge never succeeded: no sample, so `absent(...)` alerts say "never".
    assert ("lifecycle_last_success_timestamp_seconds", (("job", "purge"),)) not in got
    sweep_ok = got[("lifecycle_last_success_timestamp_seconds", (("job", "sweep"),))]
    assert abs(sweep_ok - (utcnow() - timedelta(hours=2)).timestamp()) < 300
    incident = (("incident", str(seeded["incident"])),)
    assert (
        abs(got[("lifecycle_incident_deadline_timestamp_seconds", incident)] - seeded["deadline"])
        <= 1
    )
    # No ground of 시행령 제40조① in the seeded incident: no report outstanding, none submitted.
    assert got[("lifecycle_incident_report_outstanding", incident)] == 0
    assert not any(k[0] == "lifecycle_incident_report_submitted_timestamp_seconds" for k in got)
    assert got[("lifecycle_attention_items", ())] >= 3


def test_a_store_that_does_not_answer_is_down_not_zero(primary_env: LifecycleEnv) -> None:
    closed = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    with _serving(primary_env, LIFECYCLE_PRIMARY_DATABASE_URL=closed) as url:
        r = httpx.get(url, auth=("prometheus", PASSWORD), timeout=60)
    assert r.status_code == 200, r.text
    got = _samples(r.text)
    assert got[("lifecycle_up", (("store", "primary"),))] == 0
    assert got[("lifecycle_up", (("store", "broker"),))] == 1
    names = {name for name, _ in got}
    # Absent rather than 0: "no overdue requests" must not be read off a database that is down.
    assert "lifecycle_requests_overdue" not in names
    assert "lifecycle_requests_open" not in names


def test_basic_auth_is_checked_exactly() -> None:
    def header(pair: str) -> str:
        return "Basic " + base64.b64encode(pair.encode()).decode()

    assert metrics.authorised(header("prometheus:pw"), "prometheus", "pw")
    assert not metrics.authorised(header("prometheus:pw2"), "prometheus", "pw")
    assert not metrics.authorised(header("other:pw"), "prometheus", "pw")
    assert not metrics.authorised("Basic !!!", "prometheus", "pw")
    assert not metrics.authorised("Bearer pw", "prometheus", "pw")
    assert not metrics.authorised(None, "prometheus", "pw")


def test_every_metric_the_example_alert_rules_use_is_published() -> None:
    snap = {
        "report": {
            "broker": {"queues": {"requests": 0}, "unacked": 0},
            "primary": {"ok": True},
            "archive": {"ok": True},
            "requests": {"deadlines": {"withdrawal": {"open": 1, "overdue": 0}}},
            "deliveries": {"available": True, "failing_total": 0},
            "notices": {"available": True, "in_doubt_total": 0},
            "jobs": [{"job": "sweep", "outcome": "ok"}],
            "incidents": [{"id": 1, "deadline_at": "2026-01-01T00:00:00+00:00"}],
            "findings": {"discovery_uncovered": 0, "linkage": 0},
        },
        "successes": {"sweep": 1.0, "purge": 1.0},
        "residue": 0,
    }
    published = {f.name for f in metrics.families(snap)}
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\blifecycle_[a-z_]+", rule["expr"])
    }
    assert used and used <= published, used - published
