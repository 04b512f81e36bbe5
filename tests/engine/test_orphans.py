"""Rows whose member row the site deleted itself (orphans), on PostgreSQL and MariaDB.

A small site of its own (members, posts, payments, uploaded files): a member row deleted by
hand leaves its rows under a member id no member has. ``datamap check`` counts them, status
shows them, and the sweep, once the id was first seen more than the grace ago, takes them as a
withdrawn member's (archived per retained category, counted from when it was first seen;
destroyed otherwise; files shredded by a real worker; ledger entries). Guests' rows (0,
negative ids declared as guests) and a member/post pair just written are never taken.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.orphans import ORPHAN_GRACE
from lifecycle.engine.sweep import run_sweep
from tests.helpers import LifecycleEnv, accounting, site_engine, sql_one, sql_rows, wait_until

MAP = """\
version: 1
site: {{root: "{root}"}}
subject:
  table: o_members
  key: id
  login_column: login
  status_column: status
  withdrawn_value: withdrawn
  withdrawn_at_column: withdrawn_at
categories: [posts]
retention:
  complaint:
    period: 3y
    from: purpose_end
    legal_basis: "전자상거래법 제6조, 시행령 제6조 (소비자의 불만 또는 분쟁처리에 관한 기록)"
  profile: {{period: 0d, legal_basis: "개인정보 보호법 제21조"}}
  posts: {{period: 0d, legal_basis: "개인정보 보호법 제21조"}}
  uploads: {{period: 0d, legal_basis: "개인정보 보호법 제21조"}}
tables:
  o_members:
    key: id
    subject_column: id
    columns:
      profile: [email]
  o_posts:
    key: id
    subject_column: member_id
    orphans: {{guests_below: 0}}
    columns:
      posts: [title, body]
  o_complaints:
    key: id
    subject_column: member_id
    columns:
      complaint: [body]
  o_visits:
    key: id
    subject_column: login
    member_key: login
    columns:
      profile: [page]
  o_files:
    key: id
    subject_column: member_id
    files: [path]
    columns:
      uploads: [path]
"""

PK = {
    "postgresql": "id SERIAL PRIMARY KEY",
    "mysql": "id INT AUTO_INCREMENT PRIMARY KEY",
}
TS = {"postgresql": "TIMESTAMP WITH TIME ZONE", "mysql": "DATETIME"}


def _build(env: LifecycleEnv, url: str, tmp_path: Path) -> Path:
    eng = site_engine(url)
    kind = "postgresql" if eng.dialect.name == "postgresql" else "mysql"
    pk, ts = PK[kind], TS[kind]
    tail = " ENGINE=InnoDB" if kind == "mysql" else ""
    with eng.begin() as c:
        for ddl in (
            f"CREATE TABLE o_members ({pk}, login VARCHAR(40) NOT NULL, email VARCHAR(80), "
            f"status VARCHAR(20) NOT NULL, withdrawn_at {ts} NULL){tail}",
            f"CREATE TABLE o_posts ({pk}, member_id INT NULL, title VARCHAR(80), body TEXT){tail}",
            f"CREATE TABLE o_complaints ({pk}, member_id INT NULL, body TEXT){tail}",
            f"CREATE TABLE o_files ({pk}, member_id INT NULL, path VARCHAR(255)){tail}",
            f"CREATE TABLE o_visits ({pk}, login VARCHAR(40) NULL, page VARCHAR(80)){tail}",
            "CREATE INDEX ix_o_visits_login ON o_visits (login)",
            "CREATE INDEX ix_o_posts_member ON o_posts (member_id)",
            "CREATE INDEX ix_o_complaints_member ON o_complaints (member_id)",
            "CREATE INDEX ix_o_files_member ON o_files (member_id)",
        ):
            c.execute(text(ddl))
        for i in range(1, 7):
            c.execute(
                text(
                    "INSERT INTO o_members (id, login, email, status) VALUES (:i, :l, :e, 'active')"
                ),
                {"i": i, "l": f"user{i}", "e": f"user{i}@example.org"},
            )
            for n in range(3):
                c.execute(
                    text("INSERT INTO o_posts (member_id, title, body) VALUES (:m, :t, :b)"),
                    {"m": i, "t": f"post {n} of {i}", "b": "본문"},
                )
            c.execute(
                text("INSERT INTO o_complaints (member_id, body) VALUES (:m, '환불 요청')"),
                {"m": i},
            )
            c.execute(
                text("INSERT INTO o_visits (login, page) VALUES (:l, '/')"), {"l": f"user{i}"}
            )
            for n in range(2):
                p = env.file_root / f"m{i}_{n}.jpg"
                p.write_bytes(b"x" * 64)
                c.execute(
                    text("INSERT INTO o_files (member_id, path) VALUES (:m, :p)"),
                    {"m": i, "p": str(p)},
                )
        # Guests (0) and anonymous posts (negative), which the map declares as such.
        for m in (None, 0, -3):
            c.execute(
                text("INSERT INTO o_posts (member_id, title, body) VALUES (:m, 'guest', 'g')"),
                {"m": m},
            )
        if kind == "postgresql":
            c.execute(text("SELECT setval('o_members_id_seq', 100)"))
        else:
            c.execute(text("ALTER TABLE o_members AUTO_INCREMENT = 101"))
    eng.dispose()
    path = tmp_path / "orphans.yaml"
    path.write_text(MAP.format(root=env.file_root), encoding="utf-8")
    return path


def _exec(url: str, sql: str, **params: object) -> None:
    eng = site_engine(url)
    with eng.begin() as c:
        c.execute(text(sql), params)
    eng.dispose()


def _age_orphans(url: str, by: timedelta) -> None:
    """What a later sweep sees: the recorded first sightings moved back by ``by``."""
    old = datetime.now(UTC) - by
    _exec(url, "UPDATE lifecycle_orphan_members SET first_seen_at = :t", t=old)


@pytest.mark.integration
def test_rows_of_a_member_row_deleted_by_hand_are_found_and_swept(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_worker
) -> None:  # type: ignore[no-untyped-def]
    from workers.app import reconfigure

    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    path = _build(env, primary, tmp_path)
    env.vars["LIFECYCLE_DATA_MAP"] = str(path)
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(path))
    reconfigure()
    clear_context_cache()
    r = env.run("datamap", "check", "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "orphans:" not in r.stderr

    leaver_files = [p for (p,) in sql_rows(primary, "SELECT path FROM o_files WHERE member_id = 2")]
    others = sql_rows(
        primary, "SELECT id, member_id, title FROM o_posts WHERE member_id <> 2 OR member_id "
        "IS NULL ORDER BY id"
    )  # fmt: skip
    # The site deletes member 2's row itself (as Rhymix's own 탈퇴 does).
    _exec(primary, "DELETE FROM o_members WHERE id = 2")

    r = env.run("datamap", "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "orphans: o_posts.member_id: 3 row(s)" in r.stderr, r.stderr
    assert "orphans: o_complaints.member_id: 1 row(s)" in r.stderr
    assert "orphans: o_files.member_id: 2 row(s)" in r.stderr
    # A login-id link: counted, but the sweep has no member id to take them by.
    assert "orphans: o_visits.login: 1 row(s)" in r.stderr and "not taken" in r.stderr
    assert "guest" not in r.stderr and "user2" not in r.stderr
    strict = env.run("datamap", "check", "--strict")
    assert strict.returncode == 1 and "7 row(s) name a member" in strict.stdout

    start_worker(env, concurrency=2)
    # First sweep: the orphan is recorded, nothing taken (it could be a member not yet
    # committed).
    first = run_sweep(get_context())
    assert first.get("orphan_members", 0) == 0
    assert first["orphan_rows_unhandled"] == 1
    assert sql_one(primary, "SELECT count(*) FROM o_posts WHERE member_id = 2") == 3
    assert sql_rows(primary, "SELECT member_id FROM lifecycle_orphan_members") == [(2,)]
    status = env.run("status", "--json")
    report = json.loads(status.stdout)
    assert report["orphans"]["members"] == 1
    assert any("orphans" in line for line in report["attention"])
    assert any("login-id link" in line for line in report["attention"])

    # A member and its first post the site is writing right now: the post shows first.
    _exec(primary, "INSERT INTO o_posts (member_id, title, body) VALUES (101, 'hello', 'hi')")
    # The next night: member 2 was first seen past the grace; 101 was seen only now.
    _age_orphans(primary, ORPHAN_GRACE + timedelta(hours=1))
    seen_at = sql_rows(primary, "SELECT first_seen_at FROM lifecycle_orphan_members")[0][0]
    dry = env.run("sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "orphan      o_posts" in dry.stdout and "orphan      o_complaints" in dry.stdout
    out = run_sweep(get_context())
    assert out["orphan_members"] == 1 and out["orphan_planned"] == 1, out
    assert sql_one(primary, "SELECT count(*) FROM o_posts WHERE member_id = 2") == 0
    assert sql_one(primary, "SELECT count(*) FROM o_complaints WHERE member_id = 2") == 0
    assert sql_one(primary, "SELECT count(*) FROM o_files WHERE member_id = 2") == 0
    wait_until(
        lambda: not any(Path(p).exists() for p in leaver_files), 60, "the orphan's files shredded"
    )
    # Everyone else's rows untouched, guests and anonymous posts included.
    assert sql_rows(
        primary, "SELECT id, member_id, title FROM o_posts WHERE member_id <> 2 OR member_id "
        "IS NULL ORDER BY id"
    )[: len(others)] == others  # fmt: skip
    assert sql_one(primary, "SELECT count(*) FROM o_files") == 10
    assert all(Path(p).exists() for (p,) in sql_rows(primary, "SELECT path FROM o_files"))
    # The complaint is archived for 3 years from when the lifecycle first saw the member gone.
    recs = sql_rows(
        archive,
        "SELECT source_table, retain_until FROM archive_records WHERE source_table = "
        "'o_complaints'",
    )
    assert len(recs) == 1
    until = recs[0][1]
    seen = seen_at if isinstance(seen_at, datetime) else datetime.fromisoformat(str(seen_at))
    assert isinstance(until, date) and abs((until - seen.date()).days - 3 * 365) <= 2
    reasons = [
        r for (r,) in sql_rows(archive, "SELECT reason FROM ledger_entries") if "first saw" in r
    ]
    assert reasons, "the ledger says retention counts from when the lifecycle first saw it"
    acc = accounting(primary, archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.ledger_destroy[("o_posts", "posts")] == 3
    assert acc.ledger_destroy[("o_files", "uploads")] == 2
    assert acc.ledger_archive[("o_complaints", "complaint")] == 1
    # The just-written post is still there; its member commits now, and nothing ever takes it.
    _exec(primary, "INSERT INTO o_members (id, login, status) VALUES (101, 'new', 'active')")
    _age_orphans(primary, ORPHAN_GRACE + timedelta(hours=1))
    third = run_sweep(get_context())
    assert third.get("orphan_members", 0) == 0
    assert sql_one(primary, "SELECT count(*) FROM o_posts WHERE member_id = 101") == 1
    assert sql_rows(primary, "SELECT member_id FROM lifecycle_orphan_members") == []
    assert sql_one(primary, "SELECT count(*) FROM o_visits WHERE login = 'user2'") == 1
    _exec(primary, "DELETE FROM o_visits WHERE login = 'user2'")
    r = env.run("datamap", "check", "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    clear_context_cache()
