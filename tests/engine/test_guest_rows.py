"""Guest rows (`match_identities:`): rows naming no member that hold a member's email or mobile
number leave with the member, at withdrawal and in the sweep, and are in their access package;
an identity a member still with the site shares is taken for nobody and said so. Real workers,
PostgreSQL and MariaDB primaries."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pyzipper
from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, text

from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights.access import run_access, submit_access
from lifecycle.rights.common import Requester
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from tests.datamap.test_guest_rows import site_map
from tests.helpers import (
    LifecycleEnv,
    active_members,
    give_guest_row_identities,
    seed_site,
    set_env,
    site_engine,
    wait_error_line,
    withdraw_on_site,
)
from tests.helpers import sql_one as _one
from tests.helpers import sql_rows as _q


def _tables(url: str) -> None:
    md = MetaData()
    Table(
        "shop_orders", md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("member_id", BigInteger, nullable=True),
        Column("email", String(200)),
        Column("mobile", String(40)),
        Column("item", String(100)),
        Column("ordered_at", DateTime(timezone=True)),
    )  # fmt: skip
    Table(
        "newsletter", md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("email", String(200)),
        Column("subscribed_at", DateTime(timezone=True)),
    )  # fmt: skip
    eng = site_engine(url)
    md.create_all(eng)
    eng.dispose()


def _orders_left(url: str) -> set[int]:
    return {r[0] for r in _q(url, "SELECT id FROM shop_orders")}


def test_guest_rows_leave_with_their_member_and_shared_identities_are_reported(
    primary_env: LifecycleEnv, start_worker, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 12)
    _tables(primary)
    env.vars["LIFECYCLE_DATA_MAP"] = str(site_map(tmp_path))
    clear_context_cache()
    members = active_members(primary, 7)
    a, b, c, _, e, f, g = members
    now = datetime.now(UTC)
    eng = site_engine(primary)
    with eng.begin() as x:
        people = give_guest_row_identities(x, members)
        orders = [
            (1, None, "  KIM.A@Example.com ", None),  # a's, by email: case and spaces
            (2, None, None, "+82 10 1234 5678"),  # a's, by mobile
            (3, None, "someone@else.example", "010-9999-0000"),  # nobody's: stays
            (4, b, "kim.a@example.com", None),  # b's order: its link says so, stays
            (5, None, "LEE.B@example.com", None),  # b's guest order
            (6, None, "shared@example.com", None),  # c's or d's: nobody's for sure
            (7, None, "Leaver@Example.com", None),  # e's, taken by the sweep
            (8, None, "twin@example.com", None),  # f's or g's: left by the sweep
            (9, e, "leaver@example.com", None),  # e's own order
        ]
        for oid, member, email, mobile in orders:
            x.execute(
                text("INSERT INTO shop_orders (id, member_id, email, mobile, item, ordered_at) "
                     "VALUES (:i, :m, :e, :p, '상품', :t)"),
                {"i": oid, "m": member, "e": email, "p": mobile, "t": now},
            )  # fmt: skip
        for nid, email in ((1, "Kim.A@example.com"), (2, "other@example.com")):
            x.execute(
                text("INSERT INTO newsletter (id, email, subscribed_at) VALUES (:i, :e, :t)"),
                {"i": nid, "e": email, "t": now},
            )
    eng.dispose()
    secrets = [v for pair in people.values() for v in pair] + ["someone@else.example"]

    explain = env.run("datamap", "explain")
    assert explain.returncode == 0, explain.stderr
    assert "shop_orders: rows whose member_id is empty (NULL, '' or 0) belong" in explain.stdout

    start_worker(env, concurrency=1)
    # e's access package holds e's guest order next to e's own.
    out = tmp_path / "e.zip"
    r = env.run("access", str(e), "--out", str(out), "--plain", "--wait", timeout=180)
    assert r.returncode == 0, r.stderr
    with pyzipper.AESZipFile(out) as zf:
        orders_csv = zf.read("shop_orders.csv").decode("utf-8-sig")
    ids = sorted(line.split(",")[0] for line in orders_csv.splitlines()[1:])
    assert ids == ["7", "9"], orders_csv

    # a withdraws: both of a's guest orders and the newsletter row go; others stay. b's own
    # order still holds a's address, so the residue check parks the request, naming it.
    r = env.run("withdraw", str(a), "--wait", timeout=180)
    assert r.returncode == 1, r.stderr
    assert "residue" in r.stderr and "shop_orders.email (1)" in r.stderr, r.stderr
    assert _orders_left(primary) == {3, 4, 5, 6, 7, 8, 9}
    assert _q(primary, "SELECT id FROM newsletter") == [(2,)]
    # Archived as a's (contract, 5 years), under a's pseudonym like a's own rows.
    refs = _q(
        archive,
        "SELECT DISTINCT subject_ref FROM archive_records WHERE request_id = 2 AND "
        "source_table IN ('shop_orders', 'members')",
    )
    assert len(refs) == 1
    assert _one(archive, "SELECT count(*) FROM archive_records WHERE request_id = 2 AND "
                         "source_table = 'shop_orders'") == 2  # fmt: skip
    assert _q(primary, "SELECT state FROM lifecycle_requests WHERE id = 2") == [
        ("needs_attention",)
    ]
    # The operator looked at order 4 (b's, rightly kept): a plain retry searches again and
    # still finds it; the operator accepts it, saying why, and is recorded with it.
    again = env.run("requests", "retry", "2")
    assert again.returncode != 0 and "still needs attention" in again.stderr, again.stderr
    ack = env.run("--operator", "privacy-officer", "requests", "retry", "2", "--acknowledge",
                  "--reason", "주문 4는 다른 회원 b의 주문: 보존", "--wait", "--timeout", "120",
                  timeout=180)  # fmt: skip
    assert ack.returncode == 0, ack.stderr
    assert _q(primary, "SELECT state FROM lifecycle_requests WHERE id = 2") == [("completed",)]
    (payload,) = _q(primary, "SELECT payload FROM lifecycle_requests WHERE id = 2")[0]
    verdict = (json.loads(payload) if isinstance(payload, str) else payload)["residue"]
    assert verdict["acknowledged"] is True and "sealed" not in verdict
    assert verdict["acknowledged_by"] == "privacy-officer"
    assert verdict["acknowledged_reason"] == "주문 4는 다른 회원 b의 주문: 보존"

    # c withdraws: d, still with the site, holds the same address; order 6 is nobody's for
    # sure, stays, and the request says so (table, kind, counts; never the address).
    # The residue check then finds c's address in that order and parks the request too.
    r = env.run("withdraw", str(c), "--wait", timeout=180)
    assert r.returncode == 1, r.stderr
    assert 6 in _orders_left(primary)
    state, error = _q(primary, "SELECT state, error FROM lifecycle_requests WHERE kind = "
                               "'withdrawal' AND member_id = :c", c=c)[0]  # fmt: skip
    assert state == "needs_attention", error
    assert "shop_orders.email" in error, error
    status = env.run("status", "--json")
    parked = json.loads(status.stdout)["requests"]["needs_attention"]
    assert [p["kind"] for p in parked] == ["withdrawal"], parked
    assert "shop_orders.email (1)" in parked[0]["reason"], parked

    # g's package leaves out order 8 (f, still with the site, holds the same address) and
    # says so, in the package and as the request's note.
    out = tmp_path / "g.zip"
    r = env.run("access", str(g), "--out", str(out), "--plain", "--wait", timeout=180)
    assert r.returncode == 0, r.stderr
    with pyzipper.AESZipFile(out) as zf:
        orders_csv = zf.read("shop_orders.csv").decode("utf-8-sig")
        summary = zf.read("요약.txt").decode("utf-8-sig")
    assert orders_csv.splitlines()[1:] == [], orders_csv
    assert "shop_orders: 회원님의 email을(를) 가진 비회원 기록 1건은" in summary, summary
    note = _q(primary, "SELECT state, error FROM lifecycle_requests WHERE kind = 'access' "
                       "AND member_id = :g", g=g)[0]  # fmt: skip
    assert note[0] == "completed" and "shop_orders.email 1 row(s)" in note[1], note

    # e and f withdraw on the site; the sweep takes e's guest order, leaves f's (g holds the
    # same address) and fails visibly with one line saying so.
    withdraw_on_site(primary, now, e, f)
    s = env.run("sweep", "--wait", timeout=240)
    assert s.returncode != 0, s.stdout
    last = wait_error_line(s)
    assert "guest rows left because a member still with the site shares" in last, last
    assert "shop_orders.email 1 row(s)" in last, last
    assert _orders_left(primary) == {3, 4, 5, 6, 8}  # 9 went with e too
    counts = _q(primary, "SELECT outcome FROM lifecycle_job_runs WHERE job = 'sweep'")
    assert counts == [("failed",)]

    everything = explain.stdout + r.stdout + r.stderr + s.stdout + s.stderr + status.stdout
    assert not any(v.strip().lower() in everything.lower() for v in secrets)


def test_check_advises_an_index_for_each_identity_matched_column(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 3)
    _tables(primary)
    env.vars["LIFECYCLE_DATA_MAP"] = str(site_map(tmp_path))
    clear_context_cache()
    r = env.run("datamap", "check")
    advice = [ln for ln in r.stdout.splitlines() if "no index on the canonical" in ln]
    if "postgresql" in primary:
        # An index on the very expression the lookup compares serves it; say which to add.
        got = {ln.split(": ", 2)[1] for ln in advice}
        assert got == {"table shop_orders", "table newsletter", "table members"}, r.stdout
        assert len(advice) == 5, advice  # orders: email, mobile; newsletter; members: both
        statements = [ln.split("add one: ", 1)[1] for ln in advice]
        assert ('CREATE INDEX "lc_shop_orders_email_canonical" ON "shop_orders" '
                '((lower(trim("email"))))') in statements  # fmt: skip
        eng = site_engine(primary)
        with eng.begin() as x:
            for st in statements:
                x.execute(text(st))
            x.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(
                r[0]
                for r in x.execute(
                    text("EXPLAIN SELECT id FROM shop_orders WHERE member_id IS NULL AND "
                         "regexp_replace(mobile, '[^0-9]', '', 'g') IN ('01012345678')")
                )
            )  # fmt: skip
        eng.dispose()
        assert "lc_shop_orders_mobile_canonical" in plan, plan
        again = env.run("datamap", "check")
        assert "no index on the canonical" not in again.stdout, again.stdout
    else:
        # MariaDB cannot index a function of a column: the member link narrows the orders;
        # the newsletter, matched by its address alone, is read whole.
        assert advice == [], r.stdout
        line = next(ln for ln in r.stdout.splitlines() if "matched by email alone" in ln)
        assert line.startswith("warning: table newsletter is matched by email alone (email"), line


LINES = """
  shop_orders:
    subject_column: member_id
    purpose_end: [withdrawal]
    retain_from: ordered_at
    identities: {email: email, mobile: mobile}
    match_identities: [email, mobile]
    columns:
      contract: [email, mobile, item, ordered_at]

  order_lines:
    via: {table: shop_orders, column: order_id}
    columns:
      contract: [item]

  line_notes:
    via: {table: order_lines, column: line_id}
    columns:
      contract: [note]
"""


def test_a_guest_rows_children_leave_with_it_and_are_in_the_access_package(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An order's lines (``via`` the order) and their notes (``via`` a line) name no member of
    their own: a guest order's go with it at withdrawal, archived under the same member, and
    are in the access package; a guest order (member_id 0 or NULL) holding a member's address
    is no linkage misfit."""
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 6)
    md = MetaData()
    Table(
        "shop_orders", md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("member_id", BigInteger, nullable=True),
        Column("email", String(200)),
        Column("mobile", String(40)),
        Column("item", String(100)),
        Column("ordered_at", DateTime(timezone=True)),
    )  # fmt: skip
    Table(
        "order_lines", md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("order_id", BigInteger, index=True),
        Column("item", String(100)),
    )  # fmt: skip
    Table(
        "line_notes", md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("line_id", BigInteger, index=True),
        Column("note", String(100)),
    )  # fmt: skip
    eng = site_engine(primary)
    md.create_all(eng)
    set_env(env, monkeypatch, LIFECYCLE_DATA_MAP=str(site_map(tmp_path, LINES)))
    a, b = active_members(primary, 2)
    now = datetime.now(UTC)
    with eng.begin() as x:
        x.execute(text("UPDATE members SET rrn = NULL"))
        for m, email in ((a, "kim.a@example.com"), (b, "lee.b@example.com")):
            x.execute(text("UPDATE members SET email = :e, mobile = NULL WHERE id = :i"),
                      {"e": email, "i": m})  # fmt: skip
        # 1: a's guest order (member_id 0); 2: a's guest order (NULL); 3: b's guest order;
        # 4: a's own order.
        for oid, member, email in (
            (1, 0, "Kim.A@example.com"),
            (2, None, "kim.a@example.com"),
            (3, 0, "lee.b@example.com"),
            (4, a, "kim.a@example.com"),
        ):
            x.execute(
                text("INSERT INTO shop_orders (id, member_id, email, mobile, item, ordered_at) "
                     "VALUES (:i, :m, :e, NULL, '상품', :t)"),
                {"i": oid, "m": member, "e": email, "t": now},
            )  # fmt: skip
            x.execute(text("INSERT INTO order_lines (id, order_id, item) VALUES (:i, :o, '줄')"),
                      {"i": 10 + oid, "o": oid})  # fmt: skip
            x.execute(text("INSERT INTO line_notes (id, line_id, note) VALUES (:i, :l, '메모')"),
                      {"i": 100 + oid, "l": 10 + oid})  # fmt: skip
    eng.dispose()

    check = env.run("datamap", "check")
    assert check.returncode == 0, check.stderr
    assert "warning: linkage" not in check.stderr, check.stderr

    ctx = get_context()
    out = tmp_path / "a.zip"
    rid = submit_access(a, str(out), None, Requester(), plain=True)
    assert run_access(rid)["state"] == "completed"
    with zipfile.ZipFile(out) as zf:

        def ids(name: str) -> list[str]:
            text_ = zf.read(f"{name}.csv").decode("utf-8-sig")
            return sorted(line.split(",")[0] for line in text_.splitlines()[1:])

        assert ids("shop_orders") == ["1", "2", "4"]
        assert ids("order_lines") == ["11", "12", "14"]
        assert ids("line_notes") == ["101", "102", "104"]

    done = carry_out(ctx, submit_withdrawal(ctx, a), task_id="t-guest-children")
    assert done["state"] == "completed", done
    assert _orders_left(primary) == {3}
    assert _q(primary, "SELECT id FROM order_lines") == [(13,)]
    assert _q(primary, "SELECT id FROM line_notes") == [(103,)]
    # Archived under a's pseudonym, like a's own order and its lines.
    refs = _q(archive, "SELECT DISTINCT subject_ref FROM archive_records WHERE source_table IN "
                       "('shop_orders', 'order_lines', 'line_notes')")  # fmt: skip
    assert len(refs) == 1 and refs[0][0]
    assert _one(archive, "SELECT count(*) FROM archive_records WHERE source_table = "
                         "'line_notes'") == 3  # fmt: skip
