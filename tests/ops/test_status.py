"""`lifecycle status` against real PostgreSQL, Redis and a worker; and with stores down."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.engine import make_url

from lifecycle.core import db
from models.base import utcnow
from models.requests import JobRun, LifecycleRequest
from tests.helpers import LifecycleEnv, WorkerProc, free_port, migrate_embedded


def _seed_requests() -> dict[str, list[int]]:
    now = utcnow()
    rows = {
        "fresh": [("withdrawal", "received", 0), ("correction", "dispatched", 1)],
        "overdue": [("withdrawal", "restricted", 6), ("withdrawal", "dispatched", 10)],
        "closed": [("withdrawal", "completed", 30), ("correction", "failed", 8)],
    }
    ids: dict[str, list[int]] = {}
    with db.session("primary") as s:
        for group, items in rows.items():
            for i, (kind, state, days) in enumerate(items):
                req = LifecycleRequest(
                    kind=kind,
                    member_id=1000 + len(ids.get(group, [])) + i,
                    state=state,
                    created_at=now - timedelta(days=days, hours=1),
                )
                s.add(req)
                s.flush()
                ids.setdefault(group, []).append(req.id)
        s.add(
            JobRun(
                job="lifecycle.sweep.run",
                started_at=now - timedelta(hours=30),
                finished_at=now - timedelta(hours=29),
                outcome="success",
                counts={"archived": 5},
            )
        )
        s.add(
            JobRun(
                job="lifecycle.sweep.run",
                started_at=now - timedelta(hours=6),
                finished_at=now - timedelta(hours=5),
                outcome="failure",
                counts={"archived": 2, "failed": 1},
            )
        )
    return ids


def test_status_reports_everything_on_postgres_and_redis(
    primary_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]
) -> None:
    from workers.app import app

    ids = _seed_requests()
    start_worker(primary_env, concurrency=1)
    # A shred job for a host whose worker is not running waits in that host's queue.
    app.send_task("lifecycle.shred.files", args=[1], queue="shred.otherhost")

    # Nothing listens on this Flower port (other Flowers may run on the default one).
    flower = {"LIFECYCLE_FLOWER_PORT": str(free_port())}
    r = primary_env.run("status", "--json", **flower)
    # Overdue requests and a failed run need an operator: not ok, exit 1 (cron alerts).
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["unreachable"] == []
    assert "2 request(s) past their legal deadline" in report["attention"]
    assert report["workers"]["online"] == 1
    assert report["broker"]["queues"]["shred.otherhost"] == 1
    assert report["broker"]["queues"]["requests"] == 0
    assert {"requests", "archive", "notify", "shred.testhost"} <= report["broker"]["queues"].keys()
    assert "@" not in report["broker"]["url"]
    assert report["requests"]["open_by_state"] == {
        "dispatched": 2,
        "received": 1,
        "restricted": 1,
    }
    assert report["requests"]["open_total"] == 4
    assert report["requests"]["overdue_total"] == 2
    overdue = report["requests"]["overdue"]
    assert [o["id"] for o in overdue] == [ids["overdue"][1], ids["overdue"][0]]  # oldest first
    assert overdue[0]["age_days"] >= 10 and 6 <= overdue[1]["age_days"] < 7
    assert set(overdue[0]) == {"id", "kind", "state", "created_at", "age_days"}
    sweep = next(j for j in report["jobs"] if j["job"] == "lifecycle.sweep.run")
    assert sweep["outcome"] == "failure" and sweep["counts"] == {"archived": 2, "failed": 1}
    assert report["archive"]["ok"] is True
    assert report["flower"]["reachable"] is False  # no Flower here; reported, not fatal

    text = primary_env.run("status", **flower)
    assert text.returncode == 1, text.stderr
    out = text.stdout
    assert "workers online: 1" in out
    assert "OVERDUE (past the legal deadline): 2" in out
    for rid in ids["overdue"]:
        assert str(rid) in out
    assert "shred.otherhost" in out
    assert "lifecycle.sweep.run" in out and "failure" in out
    assert "flower: NOT reachable" in out


def test_status_stops_waiting_once_the_workers_it_knows_have_answered(
    primary_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]
) -> None:
    start_worker(primary_env, concurrency=1)
    flower = {"LIFECYCLE_FLOWER_PORT": str(free_port())}
    first = primary_env.run("status", "--json", **flower)
    assert json.loads(first.stdout)["workers"]["online"] == 1, first.stderr
    known = json.loads((primary_env.var_dir / "known-workers.json").read_text())
    assert list(known) == json.loads(first.stdout)["workers"]["names"]

    # With a 30 s timeout, a status that waited it out would hit the 25 s subprocess limit:
    # it must return once the one known worker answered, and still report it.
    again = primary_env.run("status", "--json", "--timeout", "30", timeout=25, **flower)
    assert json.loads(again.stdout)["workers"]["online"] == 1, again.stderr

    # A name seen more than a day ago is no longer expected (it would cost the full timeout).
    stale = {"gone@host": "2020-01-01T00:00:00+00:00"} | known
    (primary_env.var_dir / "known-workers.json").write_text(json.dumps(stale))
    third = primary_env.run("status", "--json", "--timeout", "30", timeout=25, **flower)
    assert json.loads(third.stdout)["workers"]["online"] == 1, third.stderr
    assert "gone@host" not in json.loads((primary_env.var_dir / "known-workers.json").read_text())


def test_status_with_broker_down_still_reads_the_databases(primary_env: LifecycleEnv) -> None:
    ids = _seed_requests()
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    r = primary_env.run("status", LIFECYCLE_BROKER_URL=broker, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first == f"broker: unreachable ({broker}): Connection refused"
    assert "OVERDUE (past the legal deadline): 2" in r.stdout
    assert str(ids["overdue"][0]) in r.stdout
    assert "Traceback" not in r.stdout + r.stderr

    j = primary_env.run("status", "--json", LIFECYCLE_BROKER_URL=broker, timeout=60)
    assert j.returncode == 3
    report = json.loads(j.stdout)
    assert report["ok"] is False
    assert report["unreachable"] == [first]
    assert report["broker"] == {"error": first}
    assert report["requests"]["overdue_total"] == 2


def test_status_with_primary_db_down_still_reads_the_broker(primary_env: LifecycleEnv) -> None:
    port = free_port()
    # The same server family as the primary of this run: its driver's error is what is shown.
    if make_url(primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]).get_backend_name() == "mysql":
        url = f"mysql://root:secretpw@127.0.0.1:{port}/nowhere"
        shown = f"mysql+pymysql://root@127.0.0.1:{port}/nowhere"
    else:
        url = f"postgresql+psycopg://postgres:secretpw@127.0.0.1:{port}/nowhere"
        shown = f"postgresql+psycopg://postgres@127.0.0.1:{port}/nowhere"
    r = primary_env.run("status", "--json", LIFECYCLE_PRIMARY_DATABASE_URL=url, timeout=60)
    assert r.returncode == 3, r.stderr
    report = json.loads(r.stdout)
    assert len(report["unreachable"]) == 1
    line = report["unreachable"][0]
    assert line.startswith(f"primary database: unreachable ({shown}"), line
    assert "secretpw" not in r.stdout
    assert "requests" in report["broker"]["queues"]
    assert report["archive"]["ok"] is True


def test_status_on_the_embedded_default(embedded_env: LifecycleEnv) -> None:
    migrate_embedded(embedded_env)
    r = embedded_env.run("status", "--json", "--timeout", "0.5")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["broker"]["queues"]["requests"] == 0
    assert report["workers"]["online"] == 0
    assert report["requests"]["open_total"] == 0
    # The filesystem broker has no host by design: no false alarm about it on stderr.
    assert "No hostname was supplied" not in r.stderr
    assert r.stderr.strip() == "", r.stderr


def test_status_sees_a_worker_on_the_embedded_broker(
    embedded_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]
) -> None:
    # status pings through its own bare app (workers/control.py): it must reach a worker over
    # the file-backed transport with the same folders as the job runtime's app.
    migrate_embedded(embedded_env)
    w = start_worker(embedded_env, concurrency=1)
    r = embedded_env.run("status", "--json", "--timeout", "5", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    workers = json.loads(r.stdout)["workers"]
    assert workers["online"] == 1 and workers["names"][0].startswith(f"{w.name}@"), workers


# Runs the console script's entry point, then prints the modules status need not import.
STATUS_PROBE = """
import json, sys
from lifecycle.cli.main import run

try:
    run(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("tasks", "schedules")
    or m in ("workers.app", "lifecycle.vault.ledger", "lifecycle.vault.keystore", "models.archive")
)))
"""


def test_status_pings_without_the_job_runtime_or_the_vault(
    primary_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]
) -> None:
    start_worker(primary_env, concurrency=1)
    r = subprocess.run(
        [sys.executable, "-c", STATUS_PROBE, "status", "--json"],
        env=primary_env.environ(LIFECYCLE_FLOWER_PORT=str(free_port())),
        cwd=primary_env.var_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    *report, loaded = r.stdout.strip().splitlines()
    assert json.loads("\n".join(report))["workers"]["online"] == 1, r.stdout + r.stderr
    # Start-up cost with no use here: the task modules' message factory and beat's schedule;
    # the ledger, the keystore and the archive's models. (Not cryptography itself: MariaDB's
    # driver loads it for its authentication.)
    assert json.loads(loaded) == [], loaded


def test_status_rejects_bad_options(embedded_env: LifecycleEnv) -> None:
    r = embedded_env.run("status", "--timeout", "0")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--timeout" in r.stderr


def _seed_attention(kind: str) -> int:
    """One thing that needs an operator; returns the request id involved."""
    from models.recipients import Delivery, Recipient

    now = utcnow()
    with db.session("primary") as s:
        req = LifecycleRequest(kind="correction", member_id=7, state="notifying")
        req.created_at = now - timedelta(days=11 if kind == "overdue" else 0)
        s.add(req)
        s.flush()
        if kind == "delivery":
            crm = Recipient(name="crm", channel="webhook", endpoint="http://127.0.0.1:9/h")
            s.add(crm)
            s.flush()
            s.add(
                Delivery(
                    message_id="msg-attention-1",
                    recipient_id=crm.id,
                    kind="correction",
                    request_id=req.id,
                    member_id=7,
                    fields=["email"],
                    state="pending",
                    attempts=3,
                    last_status="500",
                    next_attempt_at=now + timedelta(minutes=5),
                )
            )
        return req.id


def test_status_is_not_ok_and_exits_1_when_something_needs_attention(
    primary_env: LifecycleEnv,
) -> None:
    flower = {"LIFECYCLE_FLOWER_PORT": str(free_port())}
    clean = primary_env.run("status", "--json", "--timeout", "0.3", **flower)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["ok"] is True

    _seed_attention("overdue")
    r = primary_env.run("status", "--json", "--timeout", "0.3", **flower)
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["unreachable"] == []
    assert report["attention"] == ["1 request(s) past their legal deadline"]

    _seed_attention("delivery")
    r = primary_env.run("status", "--json", "--timeout", "0.3", **flower)
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert "1 third-party deliveries failing or being retried" in report["attention"]
    human = primary_env.run("status", "--timeout", "0.3", **flower)
    assert human.returncode == 1
    assert "needs attention: 1 request(s) past their legal deadline" in human.stdout
