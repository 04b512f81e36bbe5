"""The data-map checks' findings, stored, on real PostgreSQL and MariaDB primaries:
`datamap discover` and the linkage part of `datamap check` record their findings (names and
counts, never a value) with their run; a new run replaces the open ones of its kind and keeps
the history; an acknowledgement is carried over; the weekly beat job stores both, runs on a real
worker, and fails visibly (its run recorded as failed) when it cannot run; the gauges and
`lifecycle status` count what is open."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from lifecycle.core import db, dispatch
from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.datamap import findings
from lifecycle.engine.context import clear_context_cache
from lifecycle.ops import metrics
from models.findings import DataMapFinding
from models.requests import JobRun
from schedules.beat import beat_schedule
from tests.datamap.test_linkage import _map
from tests.helpers import LifecycleEnv, seed_site, set_env, site_engine, wait_until

pytestmark = pytest.mark.integration
EMAIL = "stored.finding.4e1c@leak.example"
MOBILE = "010-2468-1357"


def _open(kind: str) -> dict[tuple[str, str], DataMapFinding]:
    with db.session("primary") as s:
        rows = findings.open_findings(s, kind)
        s.expunge_all()
    return {(f.table_name, f.column_name): f for f in rows}


def _runs(job: str) -> list[JobRun]:
    with db.session("primary") as s:
        rows = list(s.scalars(select(JobRun).where(JobRun.job == job).order_by(JobRun.id)))
        s.expunge_all()
    return rows


def _gauges() -> dict[str, float]:
    snap = metrics.snapshot(get_settings())
    out = {}
    for fam in metrics.families(snap):
        if fam.name.startswith("lifecycle_datamap_"):
            out[fam.name] = fam.samples[0].value
    return out


def _attention() -> list[str]:
    return list(metrics.snapshot(get_settings())["report"]["attention"])


def test_findings_are_stored_replaced_acknowledged_and_kept_current(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_worker
) -> None:  # type: ignore[no-untyped-def]
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 12)
    set_env(env, monkeypatch, LIFECYCLE_DATA_MAP=str(_map(tmp_path)))
    clear_context_cache()
    eng = site_engine(primary)
    with eng.begin() as c:
        c.execute(text("UPDATE members SET rrn = NULL"))
        # A table the map does not know, holding contact data.
        c.execute(text("CREATE TABLE contact_import (id INTEGER PRIMARY KEY, payload TEXT)"))
        c.execute(text("INSERT INTO contact_import VALUES (1, :p)"),
                  {"p": json.dumps({"to": EMAIL, "hp": MOBILE})})  # fmt: skip
        a, b = [r[0] for r in c.execute(text(
            "SELECT id FROM members WHERE status = 'active' AND email IS NOT NULL "
            "AND email <> '' ORDER BY id"
        ))][:2]  # fmt: skip
        email_b = c.execute(text("SELECT email FROM members WHERE id = :b"), {"b": b}).scalar()
        # A guardian row linked to a holding b's address: a wrong link.
        c.execute(
            text("INSERT INTO guardians (member_id, name, relation, email) "
                 "VALUES (:a, 'x', 'parent', :e)"),
            {"a": a, "e": email_b},
        )  # fmt: skip
    eng.dispose()

    # `datamap discover`: its findings stored with its run, counts only.
    r = env.run("datamap", "discover")
    assert r.returncode == 0, r.stderr
    assert "findings stored (run" in r.stderr
    (run1,) = _runs(findings.JOB_DISCOVER)
    assert run1.outcome == "ok"
    found = _open("discovery")
    leak = found[("contact_import", "payload")]
    assert not leak.covered and leak.coverage == "not covered" and leak.run_id == run1.id
    assert leak.patterns == {"json:email": 1, "json:mobile": 1} and leak.rows == 1
    assert any(f.covered for f in found.values())  # members.email: mapped, stored too
    assert _gauges()["lifecycle_datamap_uncovered_findings"] == 1.0
    assert any("1 column(s) hold personal data the data map does not cover" in line
               for line in _attention())  # fmt: skip

    # The linkage part of `datamap check`.
    r = env.run("datamap", "check")
    assert r.returncode == 0, r.stderr
    (lrun,) = _runs(findings.JOB_LINKAGE)
    links = _open("linkage")
    assert set(links) == {("guardians", "email")}
    assert links[("guardians", "email")].rows == 1 and lrun.counts == {"linkage": 1}
    assert _gauges()["lifecycle_datamap_linkage_findings"] == 1.0
    # The quick discover pass of `check` does not replace the full one's findings.
    assert _open("discovery")[("contact_import", "payload")].id == leak.id

    # Never a value in what is stored.
    with db.session("primary") as s:
        stored = json.dumps(
            [(f.table_name, f.column_name, f.patterns, f.coverage) for f in
             s.scalars(select(DataMapFinding))], ensure_ascii=False,
        )  # fmt: skip
    for value in (EMAIL, MOBILE, str(email_b)):
        assert value.lower() not in stored.lower()

    # Acknowledging: a reason is required, only an open uncovered discovery finding.
    with pytest.raises(UserError), db.session("primary") as s:
        findings.acknowledge(s, leak.id, "  ", "김책임")
    with pytest.raises(UserError), db.session("primary") as s:
        findings.acknowledge(s, links[("guardians", "email")].id, "이유", "김책임")
    with db.session("primary") as s:
        findings.acknowledge(s, leak.id, "이관 중인 임시 테이블, 12월 말 삭제 예정", "김책임")
    with pytest.raises(UserError, match="이미"), db.session("primary") as s:
        findings.acknowledge(s, leak.id, "다시", "김책임")
    assert _gauges()["lifecycle_datamap_uncovered_findings"] == 0.0
    assert not any("does not cover" in line for line in _attention())
    st = env.run("status")
    assert "data-map findings open: 0 uncovered column(s) (+1 acknowledged), 1 wrong" in (
        " ".join(st.stdout.split())
    ), st.stdout

    # The weekly job, on a real worker (the archive queue): both kinds replaced, the history
    # kept, the acknowledgement carried over to the same column's new finding.
    schedule = beat_schedule(get_settings())["datamap-scan-weekly"]
    assert schedule["task"] == dispatch.DATAMAP_SCAN
    start_worker(env, concurrency=1)
    dispatch.send(dispatch.DATAMAP_SCAN)
    scan = wait_until(
        lambda: [r for r in _runs(findings.JOB_SCAN) if r.outcome != "running"],
        180, "the weekly data-map scan to finish",
    )[0]  # fmt: skip
    assert scan.outcome == "ok", scan.counts
    assert scan.counts is not None and scan.counts["uncovered"] == 1
    now = _open("discovery")[("contact_import", "payload")]
    assert now.id != leak.id and now.run_id == scan.id
    assert now.acknowledged_by == "김책임" and now.ack_reason.startswith("이관 중인")
    with db.session("primary") as s:
        old = s.get(DataMapFinding, leak.id)
        assert old is not None and old.closed_by_run == scan.id and old.closed_at is not None
    assert _open("linkage")[("guardians", "email")].run_id == scan.id

    # The wrong link fixed: the next run closes its finding; the history stays.
    eng = site_engine(primary)
    with eng.begin() as c:
        c.execute(text("DELETE FROM guardians WHERE member_id = :a AND relation = 'parent' "
                       "AND name = 'x'"), {"a": a})  # fmt: skip
    eng.dispose()
    counts = findings.scan()
    assert counts["linkage"] == 0
    assert _open("linkage") == {}
    assert _gauges()["lifecycle_datamap_linkage_findings"] == 0.0
    with db.session("primary") as s:
        history = s.scalar(
            select(func.count()).select_from(DataMapFinding).where(DataMapFinding.kind == "linkage")
        )
    assert history == 2

    # A scan that cannot run fails visibly, its run recorded as failed, nothing replaced.
    before = _open("discovery")
    set_env(env, monkeypatch, LIFECYCLE_DATA_MAP=str(tmp_path / "missing.yaml"))
    clear_context_cache()
    with pytest.raises(findings.ScanFailed) as err:
        findings.scan()
    assert "could not run" in str(err.value) and "\n" not in str(err.value)
    assert _runs(findings.JOB_SCAN)[-1].outcome == "failed"
    assert {k: f.id for k, f in _open("discovery").items()} == {k: f.id for k, f in before.items()}
    failed = {
        s.labels["job"]: s.value
        for fam in metrics.families(metrics.snapshot(get_settings()))
        if fam.name == "lifecycle_last_run_failed"
        for s in fam.samples
    }
    assert failed[findings.JOB_SCAN] == 1.0
