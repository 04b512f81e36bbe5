"""Guest rows whose identity is held in meta rows (`owner:` with `identities:`): a legacy
WooCommerce order names its customer in one meta row and a guest's address in another. Such an
order, with its meta rows, leaves with the member whose identity it holds, at withdrawal and in
the sweep, and is in their access package; a shared identity is taken for nobody and said so.
Real workers, PostgreSQL and MariaDB primaries."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import pyzipper
from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, Text, text

from lifecycle.core.settings import reset_settings_cache
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from tests.datamap.test_guest_rows import META_ORDERS, site_map
from tests.engine.test_replay import backup
from tests.helpers import (
    LifecycleEnv,
    active_members,
    give_guest_row_identities,
    seed_site,
    site_engine,
    wait_error_line,
    withdraw_on_site,
)
from tests.helpers import sql_one as _one
from tests.helpers import sql_rows as _q


def _tables(url: str) -> None:
    md = MetaData()
    Table(
        "meta_orders", md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("title", String(200)),
        Column("created_at", DateTime(timezone=True)),
    )  # fmt: skip
    Table(
        "meta_order_meta", md,
        Column("meta_id", BigInteger, primary_key=True, autoincrement=True),
        Column("order_id", BigInteger, nullable=False, index=True),
        Column("meta_key", String(255), index=True),
        Column("meta_value", Text),
    )  # fmt: skip
    eng = site_engine(url)
    md.create_all(eng)
    eng.dispose()


def _order(conn: Any, oid: int, meta: dict[str, str], at: datetime) -> None:
    """Order ``oid`` with one meta row per item of ``meta`` (key -> value)."""
    conn.execute(
        text("INSERT INTO meta_orders (id, title, created_at) VALUES (:i, '주문', :t)"),
        {"i": oid, "t": at},
    )
    for k, v in meta.items():
        conn.execute(
            text("INSERT INTO meta_order_meta (order_id, meta_key, meta_value) "
                 "VALUES (:i, :k, :v)"),
            {"i": oid, "k": k, "v": v},
        )  # fmt: skip


def _orders_left(url: str) -> set[int]:
    return {r[0] for r in _q(url, "SELECT id FROM meta_orders")}


def _meta_of(url: str) -> set[int]:
    return {r[0] for r in _q(url, "SELECT DISTINCT order_id FROM meta_order_meta")}


def test_guest_rows_held_in_meta_rows_leave_with_their_member(
    primary_env: LifecycleEnv, start_worker, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 12)
    _tables(primary)
    env.vars["LIFECYCLE_DATA_MAP"] = str(site_map(tmp_path, META_ORDERS))
    clear_context_cache()
    members = active_members(primary, 7)
    a, b, c, _, e, f, _ = members
    now = datetime.now(UTC)
    eng = site_engine(primary)
    with eng.begin() as x:
        people = give_guest_row_identities(x, members)
        # id -> meta rows (key -> value); _customer '0' or absent: a guest's order.
        orders: dict[int, dict[str, str]] = {
            1: {"_customer": "0", "_email": "  KIM.A@Example.com "},  # a's, case and spaces
            2: {"_phone": "+82 10 1234 5678", "_address": "서울"},  # a's, by mobile, no owner row
            3: {"_customer": "0", "_email": "someone@else.example"},  # nobody's: stays
            4: {"_customer": str(b), "_email": "lee.b@example.com"},  # b's own: stays
            5: {"_customer": "", "_email": "LEE.B@example.com"},  # b's guest order: stays
            6: {"_customer": "0", "_email": "shared@example.com"},  # c's or d's: nobody's
            7: {"_customer": "0", "_email": "Leaver@Example.com"},  # e's, taken by the sweep
            8: {"_customer": "0", "_email": "twin@example.com"},  # f's or g's: left
            9: {"_customer": str(e), "_email": "leaver@example.com"},  # e's own order
        }
        for oid, meta in orders.items():
            _order(x, oid, meta, now)
    eng.dispose()
    secrets = [v for pair in people.values() for v in pair] + ["someone@else.example"]

    check = env.run("datamap", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    explain = env.run("datamap", "explain")
    assert explain.returncode == 0, explain.stderr
    assert "meta_orders: rows whose owner meta_order_meta row" in explain.stdout

    start_worker(env, concurrency=1)
    # e's access package holds e's guest order and its meta rows next to e's own.
    out = tmp_path / "e.zip"
    r = env.run("access", str(e), "--out", str(out), "--plain", "--wait", timeout=180)
    assert r.returncode == 0, r.stderr
    with pyzipper.AESZipFile(out) as zf:
        orders_csv = zf.read("meta_orders.csv").decode("utf-8-sig")
        meta_csv = zf.read("meta_order_meta.csv").decode("utf-8-sig")
    ids = sorted(line.split(",")[0] for line in orders_csv.splitlines()[1:])
    assert ids == ["7", "9"], orders_csv
    assert len(meta_csv.splitlines()[1:]) == 4, meta_csv

    # a withdraws: both of a's guest orders and their meta rows go (archived as a's), the
    # others stay; nothing of a's is left, so the request completes.
    r = env.run("withdraw", str(a), "--wait", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _orders_left(primary) == {3, 4, 5, 6, 7, 8, 9}
    assert _meta_of(primary) == {3, 4, 5, 6, 7, 8, 9}
    assert _q(primary, "SELECT state FROM lifecycle_requests WHERE id = 2") == [("completed",)]
    refs = _q(
        archive,
        "SELECT DISTINCT subject_ref FROM archive_records WHERE request_id = 2 AND "
        "source_table IN ('meta_orders', 'meta_order_meta', 'members')",
    )
    assert len(refs) == 1
    assert _one(archive, "SELECT count(*) FROM archive_records WHERE request_id = 2 AND "
                         "source_table = 'meta_orders'") == 2  # fmt: skip
    assert _one(archive, "SELECT count(*) FROM archive_records WHERE request_id = 2 AND "
                         "source_table = 'meta_order_meta'") == 4  # fmt: skip

    # c withdraws: d, still with the site, holds the same address; order 6 is nobody's for
    # sure, stays, and the request says so (table, kind, counts; never the address). The
    # residue check then finds c's address in its meta row and parks the request.
    r = env.run("withdraw", str(c), "--wait", timeout=180)
    assert r.returncode == 1, r.stderr
    assert 6 in _orders_left(primary) and 6 in _meta_of(primary)
    state, error = _q(primary, "SELECT state, error FROM lifecycle_requests WHERE kind = "
                               "'withdrawal' AND member_id = :c", c=c)[0]  # fmt: skip
    assert state == "needs_attention", error
    assert "meta_order_meta.meta_value" in error, error
    status = env.run("status", "--json")
    parked = json.loads(status.stdout)["requests"]["needs_attention"]
    assert [p["kind"] for p in parked] == ["withdrawal"], parked

    # e and f withdraw on the site; the sweep takes e's guest order (and e's own) with their
    # meta rows, leaves f's (g holds the same address) and fails visibly saying so.
    withdraw_on_site(primary, now, e, f)
    s = env.run("sweep", "--wait", timeout=240)
    assert s.returncode != 0, s.stdout
    last = wait_error_line(s)
    assert "guest rows left because a member still with the site shares" in last, last
    assert "meta_orders.email 1 row(s)" in last, last
    assert _orders_left(primary) == {3, 4, 5, 6, 8}
    assert _meta_of(primary) == {3, 4, 5, 6, 8}

    everything = explain.stdout + r.stdout + r.stderr + s.stdout + s.stderr + status.stdout
    assert not any(v.strip().lower() in everything.lower() for v in secrets)


def test_replay_takes_a_restored_meta_held_guest_order_again(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A withdrawal took a guest order found by its meta row; the primary is restored from a
    backup taken before; `ledger replay` takes the order and its meta rows again."""
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 3)
    _tables(primary)
    path = site_map(tmp_path, META_ORDERS)
    env.vars["LIFECYCLE_DATA_MAP"] = str(path)
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(path))
    reset_settings_cache()
    clear_context_cache()
    [a] = active_members(primary, 1)
    eng = site_engine(primary)
    with eng.begin() as x:
        x.execute(text("UPDATE members SET rrn = NULL, email = 'kim.a@example.com' WHERE id = :i"),
                  {"i": a})  # fmt: skip
        for oid, email in ((1, "Kim.A@example.com "), (2, "other@example.com")):
            _order(x, oid, {"_customer": "0", "_email": email}, datetime.now(UTC))
    eng.dispose()
    restore = backup(primary, tmp_path)
    ctx = get_context()
    assert carry_out(ctx, submit_withdrawal(ctx, a))["state"] == "completed"
    assert _orders_left(primary) == {2} and _meta_of(primary) == {2}
    restore()
    clear_context_cache()
    assert _orders_left(primary) == {1, 2} and _meta_of(primary) == {1, 2}

    r = env.run("ledger", "replay", "--since", date.today().isoformat())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "re-applied: 1 member(s) the restore brought back (1 withdrawal(s)" in r.stdout
    assert _orders_left(primary) == {2} and _meta_of(primary) == {2}
