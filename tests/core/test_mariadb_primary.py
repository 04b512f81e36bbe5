"""MySQL/MariaDB as the website's database: URLs, migrations, the PHP outbox statement, MyISAM
refusal, zero dates, job locks, and the paths for servers without SKIP LOCKED or RETURNING."""

from __future__ import annotations

import re
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import event, text

from lifecycle.core import dbkind
from lifecycle.core.locks import JobLock
from lifecycle.core.settings import Settings, reset_settings_cache
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from tests.helpers import (
    REPO,
    LifecycleEnv,
    accounting,
    assert_map_fits_with_demo_rrns,
    check_exact_accounting,
    mysql_exec,
    remaining_rows,
    seed_site,
    site_engine,
    snapshot_site,
    wait_until,
    withdraw_all,
)

MARIADB = pytest.mark.parametrize("primary_env", ["mariadb"], indirect=True)


def _db(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def _pymysql(url: str) -> pymysql.Connection:  # type: ignore[type-arg]
    from sqlalchemy.engine import make_url

    u = make_url(url)
    # What PHP's PDO does with its default emulated prepares: values quoted into the text
    # client-side, one statement sent; PyMySQL sends the same.
    return pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, password=u.password or "",
        database=u.database, charset="utf8mb4", autocommit=False,
    )  # fmt: skip


def _scalar(url: str, sql: str, **params: object) -> object:
    eng = site_engine(url)
    try:
        with eng.connect() as c:
            return c.execute(text(sql), params).scalar()
    finally:
        eng.dispose()


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p@db.example/site",
        "mysql+pymysql://u:p@db.example/site",
        "mysql+mysqldb://u:p@db.example/site",
        "mariadb://u:p@db.example/site",
        "mariadb+pymysql://u:p@db.example/site?charset=utf8mb4",
    ],
)
def test_every_mysql_url_form_runs_on_the_installed_driver(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path))
    s = Settings(primary_database_url=url)
    assert s.sqlalchemy_url("primary") == "mysql+pymysql://u:p@db.example/site?charset=utf8mb4"


def test_mysql_urls_connect_to_the_real_server(
    mysql_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.core import db

    bare = mysql_database.replace("mysql+pymysql://", "mysql://").split("?")[0]
    for url in (bare, bare.replace("mysql://", "mariadb://"), bare.replace("://", "+mysqldb://")):
        monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path))
        monkeypatch.setenv("LIFECYCLE_PRIMARY_DATABASE_URL", url)
        reset_settings_cache()
        db.dispose_all()
        db.check_reachable("primary")
        eng = db.engine("primary")
        assert dbkind.is_mysql(eng) and eng.driver == "pymysql"
        with eng.connect() as c:
            assert c.execute(text("SELECT @@session.time_zone")).scalar() == "+00:00"
    reset_settings_cache()
    db.dispose_all()


@pytest.mark.parametrize(
    ("var", "url", "expect"),
    [
        ("LIFECYCLE_ARCHIVE_DATABASE_URL", "mysql://u@h/a", "the archive is not kept in MySQL"),
        ("LIFECYCLE_PRIMARY_DATABASE_URL", "mysql+asyncmy://u@h/s", "driver 'asyncmy'"),
        ("LIFECYCLE_PRIMARY_DATABASE_URL", "oracle://u@h/s", "mysql:// (MySQL 8 / MariaDB"),
    ],
)
def test_unsupported_database_urls_are_refused_in_one_line(
    var: str, url: str, expect: str, tmp_path: Path
) -> None:
    env = LifecycleEnv(vars={"LIFECYCLE_VAR_DIR": str(tmp_path / "var"), var: url},
                       var_dir=tmp_path / "var", file_root=tmp_path)  # fmt: skip
    r = env.run("db", "upgrade")
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and expect in r.stderr and "Traceback" not in r.stderr


def test_an_unreachable_or_missing_mysql_database_is_one_line(
    mysql_server: str, tmp_path: Path
) -> None:
    from tests.helpers import free_port

    for url, reason in (
        (f"mysql://root:hunter22@127.0.0.1:{free_port()}/site", "Can't connect"),
        ("mysql://root@127.0.0.1:3306/lct_no_such_database", "Unknown database"),
    ):
        env = LifecycleEnv(
            vars={
                "LIFECYCLE_VAR_DIR": str(tmp_path / "var"),
                "LIFECYCLE_PRIMARY_DATABASE_URL": url,
            },
            var_dir=tmp_path / "var",
            file_root=tmp_path,
        )
        for cmd in (("db", "upgrade"), ("datamap", "check")):
            r = env.run(*cmd)
            assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
            assert reason in r.stderr and "unreachable" in r.stderr
            assert "hunter22" not in r.stderr and "Traceback" not in r.stderr


# -- migrations ----------------------------------------------------------------------------------


def test_migrations_build_innodb_tables_with_microsecond_utc_times(mysql_primary: str) -> None:
    eng = site_engine(mysql_primary)
    with eng.connect() as c:
        engines = dict(
            c.execute(
                text(
                    "SELECT table_name, engine FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name LIKE 'lifecycle%'"
                )
            ).all()
        )
        times = c.execute(
            text(
                "SELECT DISTINCT column_type FROM information_schema.columns WHERE "
                "table_schema = DATABASE() AND data_type IN ('datetime', 'timestamp')"
            )
        ).scalars()
        assert set(times) == {"datetime(6)"}
    eng.dispose()
    assert len(engines) >= 12 and set(engines.values()) == {"InnoDB"}


# -- the PHP outbox statement ----------------------------------------------------------------------


def _documented_sql() -> str:
    doc = (REPO / "docs" / "mysql.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- withdrawal-request-sql -->\n```sql\n(.*?)\n```", doc, re.S)
    assert m, "docs/mysql.md lost its withdrawal-request-sql block"
    return m.group(1)


def _php_withdraws(primary: str, member_id: int, key: str, *, commit: bool = True) -> None:
    # The PDO example of docs/mysql.md: the site's own change and the request, one transaction.
    sql = re.sub(r":(\w+)", r"%(\1)s", _documented_sql())
    conn = _pymysql(primary)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE members SET status = 'withdrawn', withdrawn_at = UTC_TIMESTAMP(6) "
                "WHERE id = %(id)s",
                {"id": member_id},
            )
            cur.execute(sql, {"member_id": member_id, "idempotency_key": key})
        conn.commit() if commit else conn.rollback()
    finally:
        conn.close()


@MARIADB
def test_php_pdo_statement_is_picked_up_by_the_relay_and_carried_out(
    primary_env: LifecycleEnv, start_worker
) -> None:  # type: ignore[no-untyped-def]
    from lifecycle.requests.relay import dispatch_pending

    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 20)
    clear_context_cache()
    snap = snapshot_site(primary)
    mid = int(_scalar(primary, "SELECT min(id) FROM members WHERE status = 'active'"))  # type: ignore[arg-type]
    other = mid + 1

    # A rolled-back transaction leaves neither the withdrawal nor a request.
    _php_withdraws(primary, other, f"withdraw-{other}-a", commit=False)
    assert _scalar(primary, "SELECT count(*) FROM lifecycle_requests") == 0
    assert _scalar(primary, "SELECT status FROM members WHERE id = :m", m=other) == "active"

    # Committed, and retried by the site with the same key: one request.
    _php_withdraws(primary, mid, f"withdraw-{mid}-b")
    _php_withdraws(primary, mid, f"withdraw-{mid}-b")
    assert _scalar(primary, "SELECT count(*) FROM lifecycle_requests") == 1
    rid = int(_scalar(primary, "SELECT id FROM lifecycle_requests"))  # type: ignore[arg-type]

    start_worker(env, concurrency=1)
    assert dispatch_pending() == 1
    assert dispatch_pending() == 0  # already dispatched: never sent twice

    def done() -> object:
        return _scalar(primary, "SELECT state FROM lifecycle_requests WHERE id = :i", i=rid) in (
            "completed",
            "failed",
        )

    wait_until(done, timeout=120, what="the PHP site's request completing")
    state, error = (
        _scalar(primary, "SELECT state FROM lifecycle_requests WHERE id = :i", i=rid),
        _scalar(primary, "SELECT error FROM lifecycle_requests WHERE id = :i", i=rid),
    )
    assert (state, error) == ("completed", None)
    assert _scalar(primary, "SELECT count(*) FROM members WHERE id = :m", m=mid) == 0
    assert _scalar(primary, "SELECT count(*) FROM payments WHERE member_id = :m", m=mid) == 0
    assert _scalar(primary, "SELECT count(*) FROM members WHERE id = :m", m=other) == 1
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))


# -- MyISAM --------------------------------------------------------------------------------------


@MARIADB
def test_myisam_tables_are_refused_with_the_statement_to_run(
    primary_env: LifecycleEnv, start_worker
) -> None:  # type: ignore[no-untyped-def]
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 5)
    assert_map_fits_with_demo_rrns(env.run("datamap", "check"))
    # Foreign keys need InnoDB on both sides: a PHP site's MyISAM tables have none.
    conn = _pymysql(primary)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, constraint_name FROM information_schema.referential_constraints "
            "WHERE constraint_schema = DATABASE() "
            "AND 'payments' IN (table_name, referenced_table_name)"
        )
        for table, fk in cur.fetchall():
            cur.execute(f"ALTER TABLE `{table}` DROP FOREIGN KEY `{fk}`")
    conn.close()
    mysql_exec("ALTER TABLE `payments` ENGINE=MyISAM", _db(primary))
    before = _scalar(primary, "SELECT count(*) FROM payments")

    r = env.run("datamap", "check")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    assert "payments (MyISAM)" in r.stderr and "ALTER TABLE `payments` ENGINE=InnoDB;" in r.stderr

    w = start_worker(env, wait=False)
    w.proc.wait(60)
    assert w.proc.returncode != 0
    out = w.output()
    assert "refused to start" in out and "ALTER TABLE `payments` ENGINE=InnoDB;" in out
    assert "Traceback" not in out

    # The engine refuses the map too (a worker started before the table changed).
    clear_context_cache()
    with pytest.raises(Exception, match=r"ALTER TABLE `payments` ENGINE=InnoDB;"):
        get_context()
    assert _scalar(primary, "SELECT count(*) FROM payments") == before

    mysql_exec("ALTER TABLE `payments` ENGINE=InnoDB", _db(primary))
    assert_map_fits_with_demo_rrns(env.run("datamap", "check"))


# -- zero dates ----------------------------------------------------------------------------------


@MARIADB
def test_zero_dates_read_as_no_date(primary_env: LifecycleEnv) -> None:
    from lifecycle.core import db

    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 30)
    clear_context_cache()
    conn = _pymysql(primary)
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # what PHP packages run with
        cur.execute("ALTER TABLE members MODIFY last_login_at DATETIME(6) NULL")
        cur.execute(
            "UPDATE members SET status = 'withdrawn', withdrawn_at = '0000-00-00 00:00:00', "
            "birth_date = '0000-00-00' WHERE id IN (2, 3)"
        )
    conn.commit()
    conn.close()
    with db.engine("primary").connect() as c:
        rows = c.execute(text("SELECT withdrawn_at, birth_date FROM members WHERE id IN (2, 3)"))
        assert [tuple(r) for r in rows] == [(None, None), (None, None)]
    primary_snap = snapshot_site(primary)
    out = run_sweep(get_context())
    assert out["withdrawal_subjects"] >= 2
    assert _scalar(primary, "SELECT count(*) FROM members WHERE id IN (2, 3)") == 0
    archive = primary_env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    check_exact_accounting(
        primary_snap, remaining_rows(primary, primary_snap), accounting(primary, archive)
    )


# -- locks and the paths for older / other servers ------------------------------------------------


def test_get_lock_keeps_a_second_runner_out(mysql_database: str) -> None:
    a = site_engine(mysql_database)
    b = site_engine(mysql_database)
    first, second = JobLock(a, "sweep"), JobLock(b, "sweep")
    assert first.acquire()
    assert not second.acquire()
    assert first.still_held()
    first.release()
    assert second.acquire()
    second.release()
    a.dispose()
    b.dispose()


@MARIADB
def test_without_skip_locked_or_returning_the_moves_are_still_exact(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MySQL 8 has no DELETE ... RETURNING and MariaDB 10.5 no SKIP LOCKED: the same server,
    told it lacks both, must take exactly the same rows."""
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = primary_env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 60)
    withdraw_all(primary, "id % 4 = 0")
    clear_context_cache()
    monkeypatch.setattr(dbkind, "delete_returning", lambda bind: False)
    monkeypatch.setattr(dbkind, "skip_locked", lambda bind: False)
    snap = snapshot_site(primary)
    ctx = get_context()
    seen: list[str] = []
    event.listen(
        ctx.primary, "before_cursor_execute", lambda *a: seen.append(a[2].upper()), named=False
    )
    mid = int(_scalar(primary, "SELECT min(id) FROM members WHERE status = 'active'"))  # type: ignore[arg-type]
    rid = submit_withdrawal(ctx, mid)
    assert carry_out(ctx, rid)["state"] == "completed"
    out = run_sweep(ctx, member_batch=5)
    assert out["batches_done"] == out["batches"] > 2
    deletes = [s for s in seen if s.lstrip().startswith("DELETE")]
    assert deletes and not any("RETURNING" in s for s in deletes)
    assert not any("SKIP LOCKED" in s for s in seen)
    assert any("FOR UPDATE" in s for s in seen)
    assert _scalar(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))


@MARIADB
def test_two_relays_never_send_one_request_twice_with_or_without_skip_locked(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another relay holds the received rows: with SKIP LOCKED (MariaDB 10.6+) this one skips
    them at once; without it (MariaDB 10.5) it waits, then finds them already dispatched."""
    import threading
    import time

    from lifecycle.requests.relay import dispatch_pending

    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 5)
    for mid in (1, 2):
        _php_withdraws(primary, mid, f"withdraw-{mid}")

    def hold() -> pymysql.Connection:  # type: ignore[type-arg]
        other = _pymysql(primary)
        with other.cursor() as cur:
            cur.execute("SELECT id FROM lifecycle_requests WHERE state = 'received' FOR UPDATE")
            assert len(cur.fetchall()) == 2
        return other

    holders: list[pymysql.Connection] = []  # type: ignore[type-arg]
    try:
        holders.append(hold())
        started = time.monotonic()
        assert dispatch_pending() == 0  # skipped, not waited for
        assert time.monotonic() - started < 5
        holders.pop().rollback()

        monkeypatch.setattr(dbkind, "skip_locked", lambda bind: False)
        holders.append(hold())
        sent: list[int] = []
        relay = threading.Thread(target=lambda: sent.append(dispatch_pending()), daemon=True)
        relay.start()
        # The relay's statement waits on the row locks (this database's lock waits only: the
        # server is shared).
        wait_until(
            lambda: _scalar(
                primary,
                "SELECT count(*) FROM information_schema.INNODB_TRX t"
                " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
                " WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()",
            ),
            30,
            "the relay waiting on the row locks",
        )
        assert relay.is_alive(), "without SKIP LOCKED the second relay must wait on the row locks"
        with holders[0].cursor() as cur:
            cur.execute(
                "UPDATE lifecycle_requests SET state = 'dispatched' WHERE state = 'received'"
            )
        holders.pop().commit()
        relay.join(30)
        assert sent == [0]
        assert _scalar(primary, "SELECT count(*) FROM lifecycle_requests WHERE attempts > 0") == 0
    finally:
        for h in holders:
            h.close()  # a held lock would block the test database's DROP


@pytest.mark.parametrize("mode", ["", "NO_BACKSLASH_ESCAPES"])
def test_a_list_rendered_once_matches_exactly_its_values(mysql_database: str, mode: str) -> None:
    """A sweep batch's lists are escaped once and pasted into every statement (dbkind.SqlList):
    quotes, backslashes, Korean text and integers must come back as exactly themselves, under
    either way the server may read a backslash."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select
    from sqlalchemy.types import NullType

    eng = site_engine(mysql_database)

    @event.listens_for(eng, "connect")
    def _mode(dbapi: object, _rec: object) -> None:
        with dbapi.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("SET SESSION sql_mode = %s", (mode,))

    md = MetaData()
    t = Table("lc_sqllist", md, Column("id", Integer, primary_key=True), Column("v", String(50)))
    values = ["o'brien", "back\\slash", "\\'", "탈퇴 회원", "100%", "nul\x00byte"]
    try:
        md.create_all(eng)
        with eng.begin() as c:
            c.execute(
                insert(t), [{"id": i, "v": v} for i, v in enumerate([*values, "other"], start=1)]
            )
            listed = dbkind.SqlList(c.connection.dbapi_connection, values)
            by_text = select(t.c.v).where(t.c.v.op("IN")(bindparam(None, listed, NullType())))
            assert sorted(c.scalars(by_text)) == sorted(values)
            ids = dbkind.SqlList(c.connection.dbapi_connection, [1, 3])
            by_id = select(t.c.id).where(t.c.id.op("IN")(bindparam(None, ids, NullType())))
            assert sorted(c.scalars(by_id)) == [1, 3]
    finally:
        md.drop_all(eng)
        eng.dispose()
