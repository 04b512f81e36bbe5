"""OpenCart 4.1 through the shipped data map, on a real MariaDB primary.

OpenCart runs on MySQL/MariaDB (its installer offers mysqli and PDO MySQL only), so MariaDB is
its one primary here. The tables are built as OpenCart 4.1.0.4 installs them (InnoDB, utf8mb4,
every column NULL-able), seeded with customers who order, return, review, comment on the blog,
collect points and store credit and log in; orders a customer placed as a guest before signing
up; a phone order the owner keyed in for a customer as a guest; a real guest; uploads on disk;
sessions; the staff account and visitor logs. Withdrawal, the nightly sweep, access and
correction then run through the map; nothing of any other customer may change, and afterwards
the leaver's address and number may remain only where docs/opencart-schema.md says the map
cannot reach yet.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.core.errors import UserError
from lifecycle.datamap.loader import describe, load_datamap
from lifecycle.engine.context import get_context
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.access import run_access, submit_access
from lifecycle.rights.common import Requester
from lifecycle.rights.correction import run_correction, submit_correction
from lifecycle.rights.withdrawal import carry_out, resolve_member, submit_withdrawal
from tests.fixtures import opencart as oc
from tests.helpers import (
    REPO,
    PlatformSite,
    accounting,
    mysql_rows_by_content,
    mysql_site_connect,
    run_every_shred_job,
)

MAP = REPO / "lifecycle" / "datamap" / "maps" / "opencart.yaml"
# Outside the map's subject (docs/opencart-schema.md): the staff's back-office account, logins
# and API calls, which the map declares handled elsewhere, with a reason discover shows.
HANDLED_ELSEWHERE = [
    ("oc_api_history", "ip"),
    ("oc_user", "email"),
    ("oc_user", "ip"),
    ("oc_user_authorize", "ip"),
    ("oc_user_login", "ip"),
]
ADMIN, MINJI, JUNHO, SEOYEON = oc.CUSTOMERS


@dataclass
class Site(PlatformSite):
    seeded: oc.Seeded


@pytest.fixture
def site(mariadb_platform_site: Callable[..., AbstractContextManager[Site]]) -> Iterator[Site]:
    def install(url: str, root: Path) -> oc.Seeded:
        oc.build(url)
        return oc.seed(url, root)

    with mariadb_platform_site(
        Site, map_source=MAP, organisation="오픈카트 예시 상점", install=install
    ) as s:
        yield s


def snapshot(site: Site) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    return mysql_rows_by_content(site.primary, "oc\\_%")


def residue(site: Site, c: oc.Customer) -> set[tuple[str, str, str]]:
    """(table, column, what) wherever the customer's address or number (as typed, or as bare
    digits) is still found in a text column of the shop, in any case."""
    found: set[tuple[str, str, str]] = set()
    conn = mysql_site_connect(site.primary)
    try:
        with conn.cursor() as cur:
            for table, column in oc.text_columns(site.primary):
                for what, value in (("email", c.email), ("mobile", c.telephone),
                                    ("mobile", c.digits)):  # fmt: skip
                    cur.execute(
                        f"SELECT count(*) FROM `{table}` WHERE INSTR(LOWER(`{column}`), %s) > 0",
                        (value.lower(),),
                    )
                    if cur.fetchone()[0]:
                        found.add((table, column, what))
    finally:
        conn.close()
    return found


def rows_of(snap: dict[str, dict[Any, dict[str, Any]]], table: str, **match: Any) -> list[Any]:
    return [r for r in snap[table].values() if all(r.get(k) == v for k, v in match.items())]


def test_tables_are_built_as_opencart_installs_them(site: Site) -> None:
    rows = site.sql(
        "SELECT table_name, engine, table_collation FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name LIKE 'oc\\_%'"
    )
    assert len(rows) == len(oc.TABLES)
    assert {(e, c) for _t, e, c in rows} == {("InnoDB", "utf8mb4_unicode_ci")}
    cols = {
        (t, c): (ct, n, d)
        for t, c, ct, n, d in site.sql(
            "SELECT table_name, column_name, column_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = DATABASE()"
        )
    }
    assert cols[("oc_customer", "customer_id")][:2] == ("int(11)", "NO")
    assert cols[("oc_customer", "email")][:2] == ("varchar(96)", "YES")
    assert cols[("oc_order", "customer_id")] == ("int(11)", "YES", "0")
    assert cols[("oc_session", "data")][0] == "mediumtext"
    assert cols[("oc_session", "session_id")][:2] == ("varchar(32)", "NO")
    assert cols[("oc_subscription", "frequency")][0].startswith("enum('day'")
    # No unique index beyond the primary keys, and no foreign keys.
    uniques = site.sql(
        "SELECT DISTINCT table_name, index_name FROM information_schema.statistics "
        "WHERE table_schema = DATABASE() AND non_unique = 0 AND index_name <> 'PRIMARY' "
        "AND table_name LIKE 'oc\\_%'"
    )
    assert uniques == []
    assert site.sql(
        "SELECT count(*) FROM information_schema.referential_constraints "
        "WHERE constraint_schema = DATABASE() AND table_name LIKE 'oc\\_%'"
    ) == [(0,)]
    assert site.sql("SELECT count(*) FROM oc_order WHERE customer_id = 0")[0][0] == 4


def test_datamap_check_explain_and_discover_against_opencart(site: Site) -> None:
    # Unmodified OpenCart: nothing is added to its schema. A session's customer is read from
    # its JSON, and the check says what that costs.
    ok = site.env.run("datamap", "check")
    assert ok.returncode == 0, ok.stderr
    assert "warning: table oc_session names its member inside the JSON of data (path " \
           "customer_id), which no index serves" in ok.stdout  # fmt: skip
    assert "oc_order  [purpose end: withdrawal, age(date_added: its periods over)]" in ok.stdout
    # Guest orders (customer_id 0) are nobody's link: no linkage warning for them.
    assert "warning: linkage" not in ok.stderr, ok.stderr
    assert "orphans" not in ok.stderr, ok.stderr
    explain = site.env.run("datamap", "explain")
    assert explain.returncode == 0, explain.stderr
    assert "oc_order: rows whose customer_id is empty (NULL, '' or 0) belong to the member " \
           "whose email they hold" in explain.stdout  # fmt: skip
    for table in ("oc_user", "oc_user_login", "oc_api_history"):
        assert f"{table}: handled elsewhere: " in explain.stdout, explain.stdout
        assert f"{table}  [handled elsewhere: " in ok.stdout, ok.stdout
    # Every customer is covered and the staff's tables are declared: strict passes.
    strict_check = site.env.run("datamap", "check", "--strict")
    assert strict_check.returncode == 0, strict_check.stderr
    assert "warning: discover" not in strict_check.stderr, strict_check.stderr
    strict = site.env.run("datamap", "discover", "--strict")
    assert strict.returncode == 0, strict.stderr
    assert "oc_user.email: email 1/1; handled elsewhere: 직원 계정: " in strict.stdout
    assert "0 not covered by" in strict.stdout
    found = site.env.run("datamap", "discover", "--json")
    assert found.returncode == 0, found.stderr
    doc = json.loads(found.stdout)
    assert doc["complete"], doc
    assert [(f["table"], f["column"]) for f in doc["findings"] if not f["covered"]] == []
    elsewhere = [f for f in doc["findings"] if f["coverage"] == "handled elsewhere"]
    assert sorted((f["table"], f["column"]) for f in elsewhere) == HANDLED_ELSEWHERE
    assert all(f["reason"] == doc["handled_elsewhere"][f["table"]] for f in elsewhere)
    # Random hex tokens (device authorisations, carts, sessions) hold no phone number.
    phones = {"landline", "mobile", "json:landline", "json:mobile"}
    assert not [
        (f["table"], f["column"]) for f in doc["findings"]
        if f["column"] in ("token", "code", "session_id") and phones & set(f["kinds"])
    ]  # fmt: skip
    cov = {(f["table"], f["column"]): f["category"] for f in doc["findings"]}
    assert cov[("oc_customer", "telephone")] == "contact"
    assert cov[("oc_order", "shipping_address_1")] == "contract"
    assert cov[("oc_customer_history", "comment")] == "profile"
    assert cov[("oc_gdpr", "email")] == "privacy_requests"
    assert cov[("oc_session", "data")] == "sessions"


def test_withdrawal_and_sweep_leave_nothing_of_the_leaver_and_touch_no_one_else(
    site: Site,
) -> None:
    before = snapshot(site)
    files_before = {p: p.read_bytes() for p in site.seeded.files}
    assert residue(site, MINJI)
    ctx = get_context()
    # The login is the email (still correctable): `lifecycle withdraw` takes it, in any case.
    mid = resolve_member(ctx, MINJI.email.upper())
    assert mid == MINJI.id
    out = carry_out(ctx, submit_withdrawal(ctx, mid), task_id="t-oc")
    assert out["state"] == "completed", out.get("residue")
    counts = run_sweep(get_context())
    run_every_shred_job(site.primary)
    now = max(r["date_added"] for r in before["oc_customer_online"].values())
    after = snapshot(site)

    # The customer row and every row the map links to her are gone: addresses, IPs,
    # activity, logins, tokens, carts, points, wishlist, reviews, blog comments and ratings,
    # returns, her orders and their lines, and her guest orders under the same address or
    # number (archived as hers, until their periods end).
    minji_options = [r for r in before["oc_order_option"].values()
                     if site.seeded.orders.get(r["order_id"]) == MINJI.id]  # fmt: skip
    minji_codes = {r["value"] for r in minji_options if r["type"] == "file"}
    assert minji_codes
    member_tables = [t for t, rows in before.items()
                     if any(r.get("customer_id") == MINJI.id for r in rows.values())]  # fmt: skip
    assert len(member_tables) >= 18, member_tables
    for table in member_tables:
        assert not rows_of(after, table, customer_id=MINJI.id), table
    minji_orders = [o for o, c in site.seeded.orders.items() if c == MINJI.id]
    guest_orders = site.seeded.guest_orders_of[MINJI.id]
    for table in ("oc_order", "oc_order_product", "oc_order_option", "oc_order_total",
                  "oc_order_history"):  # fmt: skip
        left = {r["order_id"] for r in after[table].values()}
        assert not left & set(minji_orders + guest_orders), table
    assert not [r for r in after["oc_customer_login"].values() if r["email"] == MINJI.email]
    assert not after["oc_gdpr"]
    assert not [r for r in after["oc_return"].values() if r["customer_id"] == 0]

    # Every row of everyone else is exactly as it was.
    gone = 0
    for table, rows in before.items():
        for key, r in rows.items():
            if key in after[table]:
                continue
            gone += 1
            mine = (
                r.get("customer_id") == MINJI.id
                or r.get("order_id") in minji_orders + guest_orders
                or (table == "oc_customer_login" and r["email"] == MINJI.email)
                or table in ("oc_gdpr", "oc_return_history")
                or (table == "oc_session" and site.seeded.sessions[r["session_id"]] == MINJI.id)
                # Her upload: only her order's option names its code.
                or (table == "oc_upload" and r["code"] in minji_codes)
                # A session a day past its expiry ends by age (the sweep).
                or (table == "oc_session" and r["expire"] < now - timedelta(days=1))
                or (table == "oc_return" and r["order_id"] in guest_orders)
                # The nightly sweep's age phase: orders past every period, and visitor logs
                # older than 3 months.
                or r.get("order_id") in site.seeded.old_orders
                or (table.endswith("_report") and "country" in r and r["store_id"] == 0
                    and r["date_added"] < max(x["date_added"] for x in rows.values())
                    - timedelta(days=90))
            )  # fmt: skip
            assert mine, (table, {k: v for k, v in r.items() if k.endswith("_id")})
    assert gone > 40
    assert rows_of(after, "oc_customer", customer_id=JUNHO.id)
    assert len(rows_of(after, "oc_order", customer_id=0)) == 2  # the real guest's, seoyeon's

    # The sweep took the active customer junho's order past every period (and its lines), and
    # left his recent one.
    old_junho = [o for o in site.seeded.old_orders if site.seeded.orders[o] == JUNHO.id]
    assert old_junho and not [r for r in after["oc_order"].values() if r["order_id"] in old_junho]
    # Past every period: nothing of it is archived, all destroyed: the order, its line, option,
    # 3 totals and 2 history rows; the visitor logs older than 3 months (3 tables x 2); and the
    # stale session, keyed by text.
    assert counts["archived_parts"] == 0 and counts["deleted_rows"] == 8 + 6 + 1, counts
    assert len(rows_of(after, "oc_order", customer_id=JUNHO.id)) == 1

    # No residue: the leaver's address and number are found nowhere in the shop. Her session
    # went through the JSON link; the guest's live one and the others' stay.
    assert residue(site, MINJI) == set()
    left = {r["session_id"] for r in after["oc_session"].values()}
    stale = {r["session_id"] for r in before["oc_session"].values()
             if r["expire"] < now - timedelta(days=1)}  # fmt: skip
    assert stale
    assert left == {k for k, c in site.seeded.sessions.items() if c != MINJI.id} - stale

    # Uploads: the leaver's upload (named only by her order's option) and its file went at
    # withdrawal; the guest's stays, as everyone else's file.
    assert not [r for r in after["oc_upload"].values() if r["code"] in minji_codes]
    for p, content in files_before.items():
        if site.seeded.file_owner[p] == MINJI.id:
            assert not p.exists(), p
        else:
            assert p.read_bytes() == content, p
    assert any(o == MINJI.id for o in site.seeded.file_owner.values())

    acc = accounting(site.primary, site.archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.outbox == 0
    assert acc.ledger_destroy[("oc_customer", "contact")] == 1
    assert acc.ledger_destroy[("oc_review", "posts")] == 1
    assert acc.ledger_destroy[("oc_address", "profile")] == 2
    # Her recent order and the guest orders are archived, under their periods.
    assert acc.archived[("oc_order", "contract")] >= 3


def test_access_package_for_a_customer_and_for_the_owner(site: Site, tmp_path: Path) -> None:

    def package(c: oc.Customer) -> dict[str, str]:
        out = tmp_path / f"{c.id}.zip"
        rid = submit_access(c.id, str(out), None, Requester(), plain=True)
        result = run_access(rid)
        assert result["state"] == "completed", result
        with zipfile.ZipFile(out) as zf:
            return {n: zf.read(n).decode("utf-8-sig") for n in zf.namelist()}

    def rows(files: dict[str, str], name: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(files[f"{name}.csv"])))

    minji = package(MINJI)
    (me,) = rows(minji, "oc_customer")
    assert (me["email"], me["telephone"]) == (MINJI.email, MINJI.telephone)
    orders = {int(r["order_id"]) for r in rows(minji, "oc_order")}
    mine = {o for o, c in site.seeded.orders.items() if c == MINJI.id}
    assert orders == mine | set(site.seeded.guest_orders_of[MINJI.id])
    assert {r["order_id"] for r in rows(minji, "oc_order_product")} == {str(o) for o in orders}
    assert len(rows(minji, "oc_address")) == 2
    assert len(rows(minji, "oc_return")) == 2  # her own, and the one she filed as a guest
    assert [r["author"] for r in rows(minji, "oc_review")] == [MINJI.name]
    assert [r["email"] for r in rows(minji, "oc_customer_login")] == [MINJI.email]
    everyone_else = [c for c in oc.CUSTOMERS if c.id != MINJI.id]
    for name, text in minji.items():
        for other in everyone_else:
            assert other.email not in text and other.telephone not in text, (name, other.id)
        assert oc.GUEST_EMAIL not in text

    # The owner: their own order only; the phone order they keyed in for seoyeon as a guest
    # is hers (her address and number), and no other customer's identity is in the package.
    owner = package(ADMIN)
    assert {int(r["order_id"]) for r in rows(owner, "oc_order")} == {
        o for o, c in site.seeded.orders.items() if c == ADMIN.id}  # fmt: skip
    for name, text in owner.items():
        for other in [c for c in oc.CUSTOMERS if c.id != ADMIN.id]:
            assert other.email not in text and other.telephone not in text, (name, other.id)
        assert oc.GUEST_EMAIL not in text
    seoyeon = package(SEOYEON)
    assert set(site.seeded.guest_orders_of[SEOYEON.id]) <= {
        int(r["order_id"]) for r in rows(seoyeon, "oc_order")}  # fmt: skip


def test_a_correction_of_email_and_phone(site: Site) -> None:
    ctx = get_context()
    rid = submit_correction(
        JUNHO.id, {"telephone": "010-7777-8888", "email": "junho.new@mail.example"}
    )
    out = run_correction(rid)
    assert out["state"] in ("notifying", "completed"), out
    assert site.sql(
        "SELECT email, telephone FROM oc_customer WHERE customer_id = %s", JUNHO.id
    ) == [("junho.new@mail.example", "010-7777-8888")]
    # Nobody else changed; his orders keep what they recorded.
    assert site.sql("SELECT email FROM oc_customer WHERE customer_id = %s", MINJI.id) == [
        (MINJI.email,)]  # fmt: skip
    assert {
        e for (e,) in site.sql("SELECT email FROM oc_order WHERE customer_id = %s", JUNHO.id)
    } == {JUNHO.email}
    with pytest.raises(UserError, match="email: not an email address"):
        submit_correction(JUNHO.id, {"email": "not-an-address"})
    # The email is the login: never another customer's (one line, nothing created).
    with pytest.raises(UserError, match="another member already has that login"):
        submit_correction(JUNHO.id, {"email": MINJI.email.upper()})
    # The command line takes the new address, or the customer_id.
    assert resolve_member(ctx, "junho.new@mail.example") == JUNHO.id
    assert resolve_member(ctx, str(JUNHO.id)) == JUNHO.id
    r = site.env.run("correct", str(JUNHO.id), "--set", "telephone=010-1212-3434")
    assert r.returncode == 0, r.stderr
    assert f"submitted for member {JUNHO.id}" in r.stdout


def test_withdraw_takes_the_customer_id_and_records_it_outside_the_shop(site: Site) -> None:
    r = site.env.run("withdraw", SEOYEON.email)
    assert r.returncode == 0, r.stderr
    assert f"for member {SEOYEON.id} submitted" in r.stdout
    assert site.sql("SELECT member_id FROM lifecycle_withdrawals") == [(SEOYEON.id,)]
    # Nothing was added to or changed in OpenCart's own tables.
    assert site.sql("SELECT status FROM oc_customer WHERE customer_id = %s", SEOYEON.id) == [(1,)]
    again = site.env.run("withdraw", str(SEOYEON.id))
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert again.stderr.strip().count("\n") == 0


def test_the_shipped_map_loads_and_explains_its_rules() -> None:
    dm = load_datamap(MAP)
    s = dm.subject
    assert (s.key, s.login_column, s.keep_row) == ("customer_id", "email", False)
    assert s.login_is_contact
    assert dm.tables["oc_order_product"].tax_evidence
    assert dm.tables["oc_upload"].via is not None and dm.tables["oc_upload"].via.many
    assert (s.email_column, s.mobile_column) == ("email", "telephone")
    assert dm.tables["oc_order"].match_identities == ("email", "mobile")
    assert dm.tables["oc_order"].tax_evidence
    lines = list(describe(dm))
    # An age rule with its own period says so; the uploads' category line alone would read
    # "0d from purpose_end" and hide the 5 years.
    assert "oc_upload: purpose ends by age, 5y after date_added" in lines
    assert not any(ln.startswith("oc_product_report: purpose ends by age") for ln in lines)
    assert any(ln.startswith("oc_product_report: access_log -> 3mo from record") for ln in lines)
