"""`lifecycle datamap discover` and the quick pass of `datamap check`, on real PostgreSQL and
MariaDB primaries: personal data planted where the map does not cover it is reported by table,
column, kind and count, and the planted values never appear in any output or log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from lifecycle.core import db
from lifecycle.datamap.discover import HANDLED_ELSEWHERE, IGNORED, KEY, MAPPED, UNMAPPED, discover
from lifecycle.datamap.loader import load_datamap
from lifecycle.engine.context import clear_context_cache
from tests.helpers import REPO, LifecycleEnv, seed_site, site_engine

DEMO_MAP = REPO / "lifecycle" / "datamap" / "maps" / "demo.yaml"
EMAIL = "planted.7f3a@leak.example"
MOBILE = "010-9876-5432"
RRN = "900101-2345670"  # made up, with a valid check digit
ADDRESS = "서울특별시 종로구 세종대로 175"
PLANTED = (EMAIL, MOBILE, RRN, ADDRESS, "9876-5432", "2345670")
STAFF = "인사팀, 내부 관리계획에 따라"
# A hex token holding 02 1234 5678 and 031 1234 5678: no phone number.
TOKEN = "9f3a0212345678c4e1b7d2a00311234567800fa1c3d9e7b2"


@pytest.fixture
def site(primary_env: LifecycleEnv, tmp_path: Path) -> Iterator[tuple[LifecycleEnv, Path]]:
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 5)
    eng = site_engine(primary)
    try:
        with eng.begin() as c:
            # The demo's RRN column has no statutory basis: live values would fail the check
            # before the quick pass is reached.
            c.execute(text("UPDATE members SET rrn = NULL"))
            # A table the map ignores on purpose, and one it does not know at all.
            c.execute(text("CREATE TABLE site_audit (id INTEGER PRIMARY KEY, note VARCHAR(200))"))
            # The staff's accounts: declared handled outside the lifecycle.
            c.execute(text("CREATE TABLE staff_accounts (id INTEGER PRIMARY KEY, "
                           "email VARCHAR(100), token VARCHAR(64))"))  # fmt: skip
            c.execute(text("INSERT INTO staff_accounts VALUES (1, :e, :t)"),
                      {"e": EMAIL, "t": TOKEN})  # fmt: skip
            c.execute(text("CREATE TABLE contact_import (id INTEGER PRIMARY KEY, payload TEXT, "
                           "memo VARCHAR(200), n INTEGER)"))  # fmt: skip
            c.execute(text("INSERT INTO site_audit VALUES (1, :a), (2, 'nothing here')"),
                      {"a": f"문의 {EMAIL}"})  # fmt: skip
            c.execute(
                text("INSERT INTO contact_import VALUES (1, :p, :m, 7), (2, '', '', 8)"),
                {"p": json.dumps({"to": EMAIL, "hp": MOBILE}), "m": f"{RRN} / {ADDRESS}"},
            )
    finally:
        eng.dispose()
    body = DEMO_MAP.read_text(encoding="utf-8") + (
        f"\nignore_tables: [site_audit]\nhandled_elsewhere: {{staff_accounts: {STAFF!r}}}\n"
    )
    path = tmp_path / "map.yaml"
    path.write_text(body, encoding="utf-8")
    clear_context_cache()
    yield primary_env, path
    clear_context_cache()


def _no_values(*outputs: str) -> None:
    joined = "\n".join(outputs)
    for v in PLANTED:
        assert v not in joined, "a planted value was printed"


def test_discover_reports_kinds_counts_and_coverage_never_values(
    site: tuple[LifecycleEnv, Path], caplog: pytest.LogCaptureFixture
) -> None:
    env, path = site
    r = env.run("datamap", "discover", "--file", str(path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "site_audit.note: email 1/2; ignored table (ignore_tables), not covered" in out
    assert "contact_import.payload: json:email 1/2, json:mobile 1/2; NOT COVERED" in out
    assert "contact_import.memo: address 1/2, rrn 1/2; NOT COVERED" in out
    assert "members.email: email 5/5; mapped (contact)" in out
    assert "members.mobile: mobile 5/5; mapped (contact)" in out
    assert "ignored table site_audit: scanned" in out
    assert f"staff_accounts.email: email 1/1; handled elsewhere: {STAFF}" in out
    assert f"table staff_accounts: scanned, handled elsewhere: {STAFF}" in out
    assert "staff_accounts.token" not in out
    assert "contact_import.n" not in out  # integers are not scanned
    assert "not covered by" in out and "tables scanned" in out
    _no_values(r.stdout, r.stderr)

    strict = env.run("datamap", "discover", "--file", str(path), "--strict")
    assert strict.returncode == 1
    last = strict.stderr.strip().splitlines()[-1]
    assert last.startswith("strict: ") and "contact_import.payload" in last
    assert "site_audit.note" in last
    assert "staff_accounts" not in last
    _no_values(strict.stdout, strict.stderr)

    js = env.run("datamap", "discover", "--file", str(path), "--json", "--rows", "1")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["complete"] and doc["rows_per_table"] == 1 and doc["stopped_early"] is None
    by = {(f["table"], f["column"]): f for f in doc["findings"]}
    # Newest row first by primary key: contact_import's row 2 is empty, so one row finds nothing.
    assert ("contact_import", "payload") not in by
    assert by[("members", "email")]["coverage"] == MAPPED
    assert by[("members", "email")]["category"] == "contact"
    staff = by[("staff_accounts", "email")]
    assert staff["coverage"] == HANDLED_ELSEWHERE and staff["covered"] and staff["reason"] == STAFF
    assert doc["handled_elsewhere"] == {"staff_accounts": STAFF}
    _no_values(js.stdout, js.stderr)

    # In-process: coverage states and the logs.
    caplog.set_level(logging.DEBUG)
    dm = load_datamap(path)
    report = discover(db.engine("primary"), dm, rows=10, budget_seconds=60)
    cov = {(f.table, f.column): f.coverage for f in report.findings}
    assert cov[("site_audit", "note")] == IGNORED
    assert cov[("staff_accounts", "email")] == HANDLED_ELSEWHERE
    assert all(f.coverage != HANDLED_ELSEWHERE for f in report.uncovered)
    assert cov[("contact_import", "payload")] == UNMAPPED
    assert cov[("members", "email")] == MAPPED
    assert all(c in (MAPPED, KEY) for (t, _c), c in cov.items() if t == "members")
    assert report.ignored_tables == ["site_audit"] and report.complete
    assert not any(t.startswith("lifecycle_") for t, _c in cov)
    _no_values(caplog.text, repr(report), json.dumps(report.as_dict(), ensure_ascii=False))


def test_a_time_budget_stops_the_scan_and_says_where(site: tuple[LifecycleEnv, Path]) -> None:
    _env, path = site
    ticks = iter([0.0, 0.0] + [999.0] * 100)  # the first table in time, then out of time
    report = discover(
        db.engine("primary"), load_datamap(path), budget_seconds=5, clock=lambda: next(ticks)
    )
    assert report.tables_scanned == 1 and not report.complete
    assert report.stopped_early is not None
    assert f"after 1 of {report.tables_total} tables" in report.stopped_early
    assert "not scanned: " in report.stopped_early


def test_datamap_check_warns_about_uncovered_data_and_fails_only_when_strict(
    site: tuple[LifecycleEnv, Path],
) -> None:
    env, path = site
    ok = env.run("datamap", "check", "--file", str(path))
    assert ok.returncode == 0, ok.stderr
    assert ": OK (" in ok.stdout
    warnings = [w for w in ok.stderr.splitlines() if w.startswith("warning: discover: ")]
    assert any("contact_import.payload: json:email" in w for w in warnings), ok.stderr
    assert any("site_audit.note: email" in w and "ignored table" in w for w in warnings)
    assert "run `lifecycle datamap discover`" in ok.stderr
    assert not any("staff_accounts" in w for w in warnings), ok.stderr
    assert f"staff_accounts  [handled elsewhere: {STAFF}]" in ok.stdout
    _no_values(ok.stdout, ok.stderr)

    strict = env.run("datamap", "check", "--file", str(path), "--strict")
    assert strict.returncode == 1
    assert "hold personal data the map does not cover" in strict.stdout
    _no_values(strict.stdout, strict.stderr)
