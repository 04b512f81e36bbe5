"""Helpers for the engine tests: seeding, snapshots, exact accounting, personal-data scans."""

from __future__ import annotations

import base64
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from lifecycle.core.dbkind import MYSQL_BACKENDS, mysql_connect_args
from lifecycle.datamap.loader import SHIPPED_DEMO_MAP, load_datamap


def site_engine(url: str) -> Engine:
    """An engine on ``url`` set up as the workers' are (on MySQL: UTC session, zero dates)."""
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() in MYSQL_BACKENDS:
        return create_engine(url, connect_args=mysql_connect_args())
    return create_engine(url)


def q(eng: Engine, name: str) -> str:
    """``name`` quoted for the engine's SQL dialect (MySQL uses backticks)."""
    return eng.dialect.identifier_preparer.quote_identifier(name)


def insert_id(conn: Any, sql: str, params: dict[str, Any]) -> int:
    """Run an INSERT and return the new row's id (RETURNING where the server has it)."""
    if conn.dialect.name in MYSQL_BACKENDS:
        return int(conn.execute(text(sql), params).lastrowid)
    return int(conn.execute(text(sql + " RETURNING id"), params).scalar_one())


def ago(**kw: float) -> Any:
    """A UTC instant in the past, to bind instead of a dialect's interval arithmetic."""
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(**kw)


def seed_site(
    primary_url: str, members: int, *, files: bool = False, file_root: Path | None = None
) -> dict[str, int]:
    from lifecycle.ops.demo_seed import seed

    eng = site_engine(primary_url)
    try:
        return seed(eng, members, files=files, file_root=file_root or Path("/nonexistent"))
    finally:
        eng.dispose()


def withdraw_all(primary_url: str, where: str = "TRUE") -> int:
    eng = site_engine(primary_url)
    try:
        with eng.begin() as c:
            return c.execute(
                text(
                    "UPDATE members SET status = 'withdrawn', withdrawn_at = "
                    f"coalesce(withdrawn_at, CURRENT_TIMESTAMP) WHERE {where}"
                )
            ).rowcount
    finally:
        eng.dispose()


def table_counts(url: str) -> dict[str, int]:
    eng = site_engine(url)
    try:
        from sqlalchemy import inspect

        names = inspect(eng).get_table_names()
        with eng.connect() as c:
            return {
                n: c.execute(text(f"SELECT count(*) FROM {q(eng, n)}")).scalar_one() for n in names
            }
    finally:
        eng.dispose()


@dataclass
class SiteSnapshot:
    """Every row of every mapped table, by (table, pk), with its member."""

    rows: dict[tuple[str, str], Any] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    personal: set[str] = field(default_factory=set)


def snapshot_site(primary_url: str) -> SiteSnapshot:
    eng = site_engine(primary_url)
    try:
        dm = load_datamap(SHIPPED_DEMO_MAP, engine=eng)
        snap = SiteSnapshot()
        with eng.connect() as c:
            for tm in dm.tables.values():
                snap.categories[tm.name] = list(tm.columns)
                rel = tm.subject_column
                sql = f"SELECT {q(eng, tm.key)}, {q(eng, rel)} FROM {q(eng, tm.name)}"
                for pk, m in c.execute(text(sql)):
                    snap.rows[(tm.name, str(pk))] = m
            # Korean names are three characters: keep them, but not ones that happen to occur
            # in the map's own texts (legal bases), which do appear in the ledger.
            shipped = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
            for name, email, mobile, rrn, phone, addr in c.execute(
                text("SELECT name, email, mobile, rrn, home_phone, home_address FROM members")
            ):
                for v in (name, email, mobile, rrn, phone, addr):
                    if v and len(v) >= 3 and v not in shipped:
                        snap.personal.add(v)
        return snap
    finally:
        eng.dispose()


def remaining_rows(primary_url: str, snap: SiteSnapshot) -> set[tuple[str, str]]:
    eng = site_engine(primary_url)
    out: set[tuple[str, str]] = set()
    try:
        dm = load_datamap(SHIPPED_DEMO_MAP, engine=eng)
        with eng.connect() as c:
            for tm in dm.tables.values():
                for (pk,) in c.execute(text(f"SELECT {q(eng, tm.key)} FROM {q(eng, tm.name)}")):
                    out.add((tm.name, str(pk)))
        return out
    finally:
        eng.dispose()


@dataclass
class Accounting:
    archived: Counter[tuple[str, str]]  # archive_records per (table, category)
    ledger_archive: Counter[tuple[str, str]]
    ledger_destroy: Counter[tuple[str, str]]
    records: set[tuple[str, str, str]]
    outbox: int
    ledger_ok: bool
    ledger_message: str


def accounting(primary_url: str, archive_url: str) -> Accounting:
    a = site_engine(archive_url)
    p = site_engine(primary_url)
    try:
        with a.connect() as c:
            records: set[tuple[str, str, str]] = set()
            archived: Counter[tuple[str, str]] = Counter()
            for t, pk, cat in c.execute(
                text("SELECT source_table, source_pk, category FROM archive_records")
            ):
                assert (t, pk, cat) not in records, "duplicate archive record"
                records.add((t, pk, cat))
                archived[(t, cat)] += 1
            la: Counter[tuple[str, str]] = Counter()
            ld: Counter[tuple[str, str]] = Counter()
            for action, cats, tables, rows in c.execute(
                text("SELECT action, categories, tables, rows FROM ledger_entries")
            ):
                cats = json.loads(cats) if isinstance(cats, str) else cats
                tables = json.loads(tables) if isinstance(tables, str) else tables
                if action in ("archive", "destroy") and len(cats) == 1 and len(tables) == 1:
                    (la if action == "archive" else ld)[(tables[0], cats[0])] += int(rows)
        from sqlalchemy.orm import Session

        from lifecycle.vault import ledger

        with Session(a) as s:
            res = ledger.verify(s)
        with p.connect() as c:
            outbox = c.execute(text("SELECT count(*) FROM lifecycle_ledger_outbox")).scalar_one()
        return Accounting(archived, la, ld, records, outbox, res.ok, res.message())
    finally:
        a.dispose()
        p.dispose()


def check_exact_accounting(
    snap: SiteSnapshot, remaining: set[tuple[str, str]], acc: Accounting
) -> None:
    """Every row that left the primary DB is, per category, archived exactly once or destroyed
    with a ledger entry; nothing archived is still in the primary DB; the ledger verifies."""
    assert acc.ledger_ok, acc.ledger_message
    assert acc.outbox == 0, "destruction entries still parked in the outbox"
    gone: Counter[str] = Counter()
    for key in snap.rows:
        if key not in remaining:
            gone[key[0]] += 1
    for t, pk, _cat in acc.records:
        assert (t, pk) in snap.rows, f"archive record for a row that never existed: {t}"
        assert (t, pk) not in remaining, f"{t} row is both archived and still in primary"
    for table, cats in snap.categories.items():
        for cat in cats:
            archived = acc.archived[(table, cat)]
            destroyed = acc.ledger_destroy[(table, cat)]
            assert acc.ledger_archive[(table, cat)] == archived, (
                f"{table}/{cat}: ledger says {acc.ledger_archive[(table, cat)]} archived, "
                f"archive holds {archived}"
            )
            assert archived + destroyed == gone[table], (
                f"{table}/{cat}: {gone[table]} rows left primary but {archived} archived + "
                f"{destroyed} destroyed in the ledger"
            )


# -- scans for personal data ---------------------------------------------------------------------


def redis_dump(port: int) -> bytes:
    """Every key and value in a Redis server, with kombu's base64 message bodies decoded."""
    import redis

    r = redis.Redis(port=port)
    out: list[bytes] = []

    def add(v: bytes) -> None:
        out.append(v)
        try:
            msg = json.loads(v)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(msg, dict) and isinstance(msg.get("body"), str):
            with contextlib.suppress(ValueError):
                out.append(base64.b64decode(msg["body"]))

    for key in r.scan_iter(count=1000):
        out.append(key)
        kind = r.type(key)
        if kind == b"string":
            add(r.get(key) or b"")
        elif kind == b"list":
            for v in r.lrange(key, 0, -1):
                add(v)
        elif kind == b"hash":
            for k, v in r.hgetall(key).items():
                out += [k]
                add(v)
        elif kind == b"set":
            out += list(r.smembers(key))
        elif kind == b"zset":
            out += [m for m in r.zrange(key, 0, -1)]
    return b"\n".join(out)


def database_dump(url: str) -> bytes:
    """Every table of a database as text (bytea shows as hex, so ciphertexts stay opaque)."""
    eng: Engine = site_engine(url)
    try:
        from sqlalchemy import inspect

        chunks: list[bytes] = []
        with eng.connect() as c:
            for name in inspect(eng).get_table_names():
                for row in c.execute(text(f"SELECT * FROM {q(eng, name)}")):
                    chunks.append(repr(tuple(row)).encode())
                    for v in row:
                        if isinstance(v, str):
                            chunks.append(v.encode())
        return b"\n".join(chunks)
    finally:
        eng.dispose()


def leaks(blob: bytes, values: set[str]) -> list[str]:
    """Which personal values occur in ``blob`` (reported masked, so a failure leaks nothing)."""
    found = []
    for v in values:
        if v.encode() in blob:
            found.append(v[:2] + "*" * (len(v) - 2))
    return found
