"""`lifecycle demo seed`: counts, uniqueness, referential integrity, PostgreSQL and SQLite."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, inspect, select, text

from lifecycle.datamap.loader import load_datamap
from lifecycle.ops.demo_seed import create_schema, member_age_on, seed
from models import demo_site as site
from models.consents import Consent
from tests.helpers import LifecycleEnv

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RRN = re.compile(r"^\d{6}-[1-4]\d{6}$")


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    return create_engine(f"sqlite:///{tmp_path / 'site.sqlite3'}")


@pytest.fixture
def pg_engine(pg_databases) -> Engine:  # type: ignore[no-untyped-def]
    eng = create_engine(pg_databases.primary_url)
    yield eng
    eng.dispose()


# pg_engine is reached through getfixturevalue, which the integration hook cannot see.
@pytest.fixture(params=["sqlite_engine", pytest.param("pg_engine", marks=pytest.mark.integration)])
def site_engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(request.param)


def _count(conn, table) -> int:  # type: ignore[no-untyped-def]
    return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _aware(v: datetime) -> datetime:
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def _orphans(conn, child: str, column: str, parent: str) -> int:  # type: ignore[no-untyped-def]
    return conn.execute(
        text(
            f"SELECT count(*) FROM {child} c WHERE c.{column} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {parent} p WHERE p.id = c.{column})"
        )
    ).scalar_one()


def test_seed_fills_every_table_consistently(site_engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "files"
    counts = seed(site_engine, 1500, files=True, file_root=root, seed=7, now=NOW)
    with site_engine.connect() as conn:
        for t in site.ALL_TABLES:
            assert _count(conn, t) == counts[t.name], t.name
            assert counts[t.name] > 0, t.name
        assert counts["members"] == 1500
        assert counts["files"] == counts["uploaded_files"]
        # Several rows of each kind per member, on average.
        for name in ("counselling_bookings", "payments", "access_logs", "service_usage"):
            assert counts[name] > 1500, name

        # Unique login ids and emails.
        for col in (site.members.c.login_id, site.members.c.email):
            assert conn.execute(select(func.count(func.distinct(col)))).scalar_one() == 1500

        # Referential integrity, including the links a foreign key does not enforce.
        for t in site.ALL_TABLES:
            if t is not site.members and "member_id" in t.c:
                assert _orphans(conn, t.name, "member_id", "members") == 0, t.name
        assert _orphans(conn, "tax_invoices", "payment_id", "payments") == 0
        assert _orphans(conn, "counselling_records", "booking_id", "counselling_bookings") == 0
        mismatched = conn.execute(
            text(
                "SELECT count(*) FROM tax_invoices i JOIN payments p ON p.id = i.payment_id "
                "WHERE p.member_id <> i.member_id"
            )
        ).scalar_one()
        assert mismatched == 0

        # Under-14 members have guardians; adults do not.
        rows = conn.execute(
            select(
                site.members.c.id,
                site.members.c.birth_date,
                site.members.c.rrn,
                site.members.c.status,
                site.members.c.withdrawn_at,
            )
        ).all()
        with_guardian = set(conn.execute(select(site.guardians.c.member_id)).scalars())
        children = {r.id for r in rows if member_age_on(r.birth_date, NOW.date()) < 14}
        assert children, "the mix must contain under-14 members"
        assert children == with_guardian
        assert all(RRN.match(r.rrn) for r in rows)

        # Withdrawn members: all in the past, some beyond the 5-day deadline (overdue).
        withdrawn = [_aware(r.withdrawn_at) for r in rows if r.status == "withdrawn"]
        assert withdrawn and all(w < NOW for w in withdrawn)
        assert any(w < NOW - timedelta(days=5) for w in withdrawn)
        assert any(w > NOW - timedelta(days=5) for w in withdrawn)
        assert all(r.withdrawn_at is None for r in rows if r.status == "active")

        # Access logs both younger and older than the 3-month rule, and anonymous ones.
        logged = [_aware(v) for v in conn.execute(select(site.access_logs.c.accessed_at)).scalars()]
        assert any(v < NOW - timedelta(days=92) for v in logged)
        assert any(v > NOW - timedelta(days=30) for v in logged)
        anon = select(func.count()).where(site.access_logs.c.member_id.is_(None))
        assert conn.execute(anon).scalar_one() > 0

        # Uploaded files: absolute paths under the root, on disk, in the member's folder.
        files = conn.execute(select(site.uploaded_files.c.member_id, site.uploaded_files.c.path))
        for member_id, path in files:
            p = Path(path)
            assert p.is_absolute() and p.is_file()
            assert p.parent == root.absolute() / "members" / str(member_id)

    # The shipped map describes exactly this schema (plus the lifecycle's consent history,
    # where a purpose the site has no column for is kept; `lifecycle db upgrade` makes it).
    Consent.__table__.create(site_engine, checkfirst=True)
    load_datamap(engine=site_engine)


def test_seeding_again_appends_after_the_highest_id(site_engine: Engine, tmp_path: Path) -> None:
    first = seed(site_engine, 300, files=False, file_root=tmp_path, seed=1, now=NOW)
    second = seed(site_engine, 200, files=False, file_root=tmp_path, seed=1, now=NOW, chunk=64)
    assert first["uploaded_files"] == second["uploaded_files"] == 0
    with site_engine.connect() as conn:
        ids = conn.execute(select(site.members.c.id).order_by(site.members.c.id)).scalars().all()
        assert ids == list(range(1, 501))
        assert _count(conn, site.payments) == first["payments"] + second["payments"]
    # The website's own next insert (no explicit id) must not collide with seeded rows.
    with site_engine.begin() as conn:
        new_id = conn.execute(
            site.members.insert()
            .values(login_id="site-made", password_hash="x", name="n", joined_at=NOW)
            .returning(site.members.c.id)
        ).scalar_one()
        pay_id = conn.execute(
            site.payments.insert()
            .values(member_id=new_id, amount=1, method="card", paid_at=NOW)
            .returning(site.payments.c.id)
        ).scalar_one()
    assert new_id == 501
    assert pay_id == first["payments"] + second["payments"] + 1


def test_same_seed_same_data(tmp_path: Path) -> None:
    engines = [create_engine(f"sqlite:///{tmp_path / f'{i}.sqlite3'}") for i in range(2)]
    dumps = []
    for eng in engines:
        seed(eng, 120, files=False, file_root=tmp_path, seed=42, now=NOW)
        with eng.connect() as conn:
            dumps.append(
                [
                    conn.execute(select(t).order_by(t.c.id)).all()
                    for t in (site.members, site.payments, site.access_logs)
                ]
            )
    assert dumps[0] == dumps[1]
    other = create_engine(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    seed(other, 120, files=False, file_root=tmp_path, seed=43, now=NOW)
    with other.connect() as conn:
        assert conn.execute(select(site.members).order_by(site.members.c.id)).all() != dumps[0][0]


def test_create_schema_is_idempotent(sqlite_engine: Engine) -> None:
    create_schema(sqlite_engine)
    create_schema(sqlite_engine)
    assert {t.name for t in site.ALL_TABLES} <= set(inspect(sqlite_engine).get_table_names())


def test_seed_refuses_zero_members(sqlite_engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        seed(sqlite_engine, 0, files=False, file_root=tmp_path)
    assert "members" not in inspect(sqlite_engine).get_table_names()


# -- the CLI, as a user runs it ----------------------------------------------------------------


def test_cli_seeds_the_embedded_default(embedded_env: LifecycleEnv) -> None:
    res = embedded_env.run("demo", "seed", "--members", "40", "--files", "--seed", "3")
    assert res.returncode == 0, res.stderr
    assert "seeded 40 members" in res.stdout
    assert "members: 40" in res.stdout
    assert list((embedded_env.file_root / "members").iterdir())
    eng = create_engine(f"sqlite:///{embedded_env.var_dir / 'primary.sqlite3'}")
    with eng.connect() as conn:
        assert _count(conn, site.members) == 40
    eng.dispose()


def test_cli_seeds_postgresql(lifecycle_env: LifecycleEnv) -> None:
    res = lifecycle_env.run("demo", "seed", "--members", "25")
    assert res.returncode == 0, res.stderr
    eng = create_engine(lifecycle_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"])
    with eng.connect() as conn:
        assert _count(conn, site.members) == 25
    eng.dispose()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--members", "0"], "--members must be at least 1"),
        (["--members", "-5"], "--members must be at least 1"),
        (["--members", "many"], "--members"),
        ([], "--members"),
        (["--members", "3", "--seed", "x"], "--seed"),
        (["--members", "3", "--bogus"], "--bogus"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(
    embedded_env: LifecycleEnv, args: list[str], needle: str
) -> None:
    res = embedded_env.run("demo", "seed", *args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lifecycle: error:"), res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr
    db = embedded_env.var_dir / "primary.sqlite3"
    if db.exists():
        eng = create_engine(f"sqlite:///{db}")
        assert "members" not in inspect(eng).get_table_names()
        eng.dispose()
    assert not (embedded_env.file_root / "members").exists()


MAIL_DOMAIN = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")
URL_HOST = re.compile(r"https?://([\w.-]+)")


def _reserved(domain: str) -> bool:
    """Names that can never reach a real host: RFC 2606 and RFC 6761."""
    d = domain.lower()
    if d in ("example.com", "example.net", "example.org") or d.endswith(
        (".example.com", ".example.net", ".example.org")
    ):
        return True
    return d.rsplit(".", 1)[-1] in ("test", "invalid", "example", "localhost")


def test_demo_data_names_only_reserved_domains(sqlite_engine: Engine, tmp_path: Path) -> None:
    # Through a real relay, a demo notice must not reach anyone's mailbox.
    seed(sqlite_engine, 1500, files=False, file_root=tmp_path, seed=11, now=NOW)
    seen: set[str] = set()
    emails = 0
    with sqlite_engine.connect() as conn:
        for t in site.ALL_TABLES:
            cols = [c for c in t.c if c.type.python_type is str]
            for row in conn.execute(select(*cols)):
                for value in row:
                    if not value:
                        continue
                    for m in MAIL_DOMAIN.finditer(value):
                        seen.add(m.group(1))
                        emails += 1
                    seen.update(m.group(1) for m in URL_HOST.finditer(value))
    assert emails >= 1500  # every member has an address: the scan saw them
    assert seen, "no domain found: the scan is broken"
    assert not {d for d in seen if not _reserved(d)}
