"""WordPress + WooCommerce through the shipped data map, on a real MariaDB and PostgreSQL primary.

WordPress runs on MariaDB/MySQL, which is what a Korean shop on WooCommerce uses; the map and the
fixture run on PostgreSQL as well, so every test runs on both. The store
(tests/fixtures/woocommerce.py) is seeded as one that moved to HPOS: kim has an order from before
the move (keyed in by the administrator, its wp_posts copy naming her only in `_customer_user`),
one since, and a guest order under her address; order notes by the administrator; a review,
one signed out; a session, a saved card, a download, an analytics row. Lee is the customer who
stays, with an order past its five years; yuna choi is a guest who never signed up.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, String, Text, cast, column, func, inspect, select, table

from lifecycle.core.errors import UserError
from lifecycle.core.settings import reset_settings_cache
from lifecycle.datamap.loader import load_datamap
from lifecycle.datamap.member_table import clear_cache
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.access import run_access, submit_access
from lifecycle.rights.common import Requester
from lifecycle.rights.correction import run_correction, submit_correction
from lifecycle.rights.withdrawal import carry_out, resolve_member, submit_withdrawal
from tests.fixtures import woocommerce as wc
from tests.helpers import (
    REPO,
    LifecycleEnv,
    accounting,
    platform_map,
    run_every_shred_job,
    site_engine,
    sql_rows,
)

MAP = REPO / "lifecycle" / "datamap" / "maps" / "woocommerce.yaml"
KIM, LEE, ADMIN, CHOI = (wc.PEOPLE[k] for k in ("kim", "lee", "admin", "choi"))


@dataclass
class Site:
    env: LifecycleEnv
    primary: str
    archive: str
    engine: Engine
    store: wc.Store
    hpos: bool = True  # False: a store that never moved to HPOS (woocommerce-legacy.yaml)

    def rows(self, name: str, *cols: str, order: str | None = None) -> list[tuple[Any, ...]]:
        t = table(name, *(column(c) for c in cols))
        q = select(*t.c)
        if order:
            q = q.order_by(column(order))
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(q)]

    def ids(self, name: str, key: str) -> list[int]:
        return sorted(int(r[0]) for r in self.rows(name, key))


def write_map(path: Path, root: Path, source: Path = MAP) -> Path:
    return platform_map(path, source, root)


@contextlib.contextmanager
def store_site(
    env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, source: Path = MAP, *, hpos: bool = True
) -> Iterator[Site]:
    """The store seeded on ``env``'s primary (``hpos``: with the HPOS tables) and the shipped
    map ``source`` in force until the block ends."""
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    eng = site_engine(primary)
    root = env.file_root / "www"
    store = wc.build_store(eng, root, hpos=hpos)
    path = write_map(env.var_dir / source.name, root, source)
    env.vars["LIFECYCLE_DATA_MAP"] = str(path)
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(path))
    reset_settings_cache()
    clear_context_cache()
    clear_cache()
    try:
        yield Site(env, primary, env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"], eng, store, hpos)
    finally:
        eng.dispose()
        clear_context_cache()
        clear_cache()


@pytest.fixture
def site(primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    with store_site(primary_env, monkeypatch) as s:
        yield s


def residue(site: Site, people: list[wc.Person]) -> set[tuple[str, str, str]]:
    """(table, column, what) wherever a person's address (any case), mobile number (with or
    without hyphens) or login id is still found in a text column of the site's tables."""
    found: set[tuple[str, str, str]] = set()
    insp = inspect(site.engine)
    with site.engine.connect() as c:
        for name in wc.store_tables(hpos=site.hpos):
            for col in insp.get_columns(name):
                if not isinstance(col["type"], (String, Text)):
                    continue
                value = func.lower(cast(column(col["name"]), Text))
                for p in people:
                    forms = [
                        ("email", p.email.lower()),
                        ("mobile", p.phone),
                        ("mobile", p.phone_digits),
                    ]
                    if p.login:
                        forms.append(("login", p.login))
                    for what, needle in forms:
                        n = c.scalar(
                            select(func.count())
                            .select_from(table(name))
                            .where(value.contains(needle, autoescape=True))
                        )
                        if n:
                            found.add((name, col["name"], what))
    return found


def test_check_and_discover_are_clean_against_the_store(site: Site) -> None:
    if site.engine.dialect.name in ("mysql", "mariadb"):
        with site.engine.connect() as c:
            engines = dict(
                c.exec_driver_sql(
                    "SELECT table_name, engine FROM information_schema.tables "
                    "WHERE table_schema = DATABASE()"
                ).all()
            )
        assert {engines[t] for t in wc.store_tables()} == {"InnoDB"}
    r = site.env.run("datamap", "check", "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK (" in r.stdout, r.stdout
    found = site.env.run("datamap", "discover", "--strict", "--json")
    assert found.returncode == 0, found.stdout + found.stderr
    doc = json.loads(found.stdout)
    assert doc["complete"], doc
    assert not [f for f in doc["findings"] if not f["covered"]], doc["findings"]
    cov = {(f["table"], f["column"]): f["category"] for f in doc["findings"]}
    assert cov[("wc_orders", "billing_email")] == "contract"
    assert cov[("woocommerce_sessions", "session_value")] == "sessions"
    assert cov[("wp_comments", "comment_author_email")] in ("contract", "posts")


Snapshot = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


def snapshot(site: Site) -> Snapshot:
    """Every row of every table of the store, by primary key."""
    insp = inspect(site.engine)
    out: Snapshot = {}
    with site.engine.connect() as c:
        for name in wc.store_tables(hpos=site.hpos):
            cols = [col["name"] for col in insp.get_columns(name)]
            pk = insp.get_pk_constraint(name)["constrained_columns"]
            t = table(name, *(column(x) for x in cols))
            out[name] = {
                tuple(r[k] for k in pk): dict(r) for r in c.execute(select(*t.c)).mappings()
            }
    return out


def removed(before: Snapshot, after: Snapshot) -> dict[str, set[tuple[Any, ...]]]:
    """The keys of the rows gone, per table; every row still there is exactly as it was."""
    for name, rows in after.items():
        for key, row in rows.items():
            assert before[name].get(key) == row, (name, key)
    return {
        name: set(rows) - set(after[name])
        for name, rows in before.items()
        if set(rows) - set(after[name])
    }


def keys_where(snap: Snapshot, name: str, pred: Any) -> set[tuple[Any, ...]]:
    return {k for k, r in snap[name].items() if pred(r)}


def kims_account_rows(snap: Snapshot) -> dict[str, set[tuple[Any, ...]]]:
    """Kim's account and what hangs off it alone: her user and meta rows, session, analytics
    row, saved card and its meta."""
    tokens = keys_where(snap, "woocommerce_payment_tokens", lambda r: r["user_id"] == KIM.user_id)
    return {
        "wp_users": {(KIM.user_id,)},
        "wp_usermeta": keys_where(snap, "wp_usermeta", lambda r: r["user_id"] == KIM.user_id),
        "woocommerce_sessions": keys_where(
            snap, "woocommerce_sessions", lambda r: r["session_key"] == "2"
        ),
        "wc_customer_lookup": keys_where(
            snap, "wc_customer_lookup", lambda r: r["user_id"] == KIM.user_id
        ),
        "woocommerce_payment_tokens": tokens,
        "woocommerce_payment_tokenmeta": keys_where(
            snap, "woocommerce_payment_tokenmeta", lambda r: (r["payment_token_id"],) in tokens
        ),
    }


def kims_rows(snap: Snapshot, orders: set[int]) -> dict[str, set[tuple[Any, ...]]]:
    """What kim's withdrawal takes: her account, her orders (her own, the one keyed in for her,
    her guest order) with everything hanging off them, her signed-in and signed-out review,
    session, analytics row, saved card and upload."""
    notes = keys_where(
        snap,
        "wp_comments",
        lambda r: (
            (r["comment_type"] == "order_note" and r["comment_post_ID"] in orders)
            or (r["comment_type"] == "review" and r["comment_author_email"] == KIM.email)
        ),
    )
    items = keys_where(snap, "woocommerce_order_items", lambda r: r["order_id"] in orders)
    perms = keys_where(
        snap, "woocommerce_downloadable_product_permissions", lambda r: r["order_id"] in orders
    )
    upload = 13  # her review photo
    by_order = {
        n: keys_where(snap, n, lambda r: r["order_id"] in orders)
        for n in (
            "wc_order_addresses",
            "wc_order_operational_data",
            "wc_orders_meta",
            "woocommerce_order_items",
            "wc_order_stats",
            "woocommerce_downloadable_product_permissions",
        )
    }
    return {
        **kims_account_rows(snap),
        "wp_posts": {(101,), (upload,)},
        "wp_postmeta": keys_where(snap, "wp_postmeta", lambda r: r["post_id"] in (101, upload)),
        "wp_comments": notes,
        "wp_commentmeta": keys_where(snap, "wp_commentmeta", lambda r: (r["comment_id"],) in notes),
        "wc_orders": {(o,) for o in orders},
        **by_order,
        "woocommerce_order_itemmeta": keys_where(
            snap, "woocommerce_order_itemmeta", lambda r: (r["order_item_id"],) in items
        ),
        "wc_download_log": keys_where(
            snap, "wc_download_log", lambda r: (r["permission_id"],) in perms
        ),
    }


def test_withdrawal_and_sweep_take_kims_data_and_nothing_else(site: Site) -> None:
    o = site.store.orders
    kims_orders = {o["kim_legacy"], o["kim_hpos"], o["kim_guest"]}
    before = snapshot(site)
    assert ("wp_postmeta", "meta_value", "email") in residue(site, [KIM])  # seeded everywhere
    photo = site.store.files[KIM.login]
    others = {p: p.read_bytes() for who, p in site.store.files.items() if who != KIM.login}

    ctx = get_context()
    mid = resolve_member(ctx, KIM.login)
    assert mid == KIM.user_id
    rid = submit_withdrawal(ctx, mid)
    # Kept in the lifecycle's own table: no core table is ALTERed or written for it.
    assert sql_rows(site.primary, "SELECT member_id FROM lifecycle_withdrawals") == [(KIM.user_id,)]
    out = carry_out(ctx, rid, task_id="t-woo")
    assert out["state"] == "completed", out
    assert out["residue"]["found"] == 0 and not out["residue"]["incomplete"], out
    run_every_shred_job(site.primary)
    after = snapshot(site)

    # Exactly her rows went; every other row is as it was (lee's, the guest's, the
    # administrator's notes on other orders, the placeholders of her HPOS orders).
    assert removed(before, after) == {k: v for k, v in kims_rows(before, kims_orders).items() if v}
    assert not photo.exists()
    assert all(p.read_bytes() == content for p, content in others.items())
    assert residue(site, [KIM]) == set()
    assert residue(site, [LEE]) and residue(site, [CHOI])  # the others' data is all there
    # The orders are archived (5 years: 전자상거래법), the rest destroyed, all in the ledger.
    archived = sql_rows(
        site.archive,
        "SELECT DISTINCT source_table, source_pk FROM "
        "archive_records WHERE source_table IN ('wc_orders', 'wp_posts_orders')",
    )
    assert sorted(archived) == sorted(
        [("wc_orders", str(x)) for x in kims_orders] + [("wp_posts_orders", "101")]
    )
    acc = accounting(site.primary, site.archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.ledger_destroy[("woocommerce_sessions", "sessions")] == 1
    assert acc.ledger_destroy[("wp_comments_reviews", "posts")] == 2
    with pytest.raises(UserError):
        submit_withdrawal(ctx, mid)  # already withdrawn and processed

    # The nightly sweep: lee's order past its five years (and its tax period) goes with its
    # lines, notes, stats and wp_posts copy; the guest session expired two days ago goes; lee
    # keeps everything else.
    counts = run_sweep(get_context())
    assert counts["batches"] == counts["batches_done"], counts
    swept = removed(after, snapshot(site))
    old = o["lee_old"]
    assert swept["wc_orders"] == {(old,)}
    assert swept["wp_posts"] == {(old,)}
    assert swept["wc_order_stats"] == {(old,)}
    assert {after["wc_order_addresses"][k]["order_id"] for k in swept["wc_order_addresses"]} == {
        old
    }
    assert {after["wp_comments"][k]["comment_post_ID"] for k in swept["wp_comments"]} == {old}
    assert {after["wp_postmeta"][k]["post_id"] for k in swept["wp_postmeta"]} == {old}
    assert [
        after["woocommerce_sessions"][k]["session_key"] for k in swept["woocommerce_sessions"]
    ] == ["t_0a1b2c3d4e5f60718293a4b5c6d7e"]
    assert set(swept) == {
        "wc_orders",
        "wp_posts",
        "wc_order_stats",
        "wc_order_addresses",
        "wp_comments",
        "wp_commentmeta",
        "wp_postmeta",
        "wc_order_operational_data",
        "wc_orders_meta",
        "woocommerce_order_items",
        "woocommerce_order_itemmeta",
        "woocommerce_sessions",
    }, swept
    assert site.ids("wc_orders", "id") == [o["lee_legacy"], o["lee_hpos"], o["choi_guest"]]


def _package(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n).decode("utf-8-sig") for n in zf.namelist()}


def _csv(files: dict[str, str], name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files[f"{name}.csv"])))


def _holds(files: dict[str, str], p: wc.Person) -> bool:
    text = "\n".join(files.values()).lower()
    return any(v in text for v in (p.email.lower(), p.phone, p.phone_digits))


def test_access_holds_the_members_data_and_no_one_elses(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "kim.zip"
    rid = submit_access(KIM.user_id, str(out), None, Requester(), plain=True)
    assert run_access(rid)["state"] == "completed"
    files = _package(out)
    o = site.store.orders
    assert sorted(int(r["id"]) for r in _csv(files, "wc_orders")) == sorted(
        [o["kim_legacy"], o["kim_hpos"], o["kim_guest"]]
    )
    assert [int(r["ID"]) for r in _csv(files, "wp_posts_orders")] == [o["kim_legacy"]]
    notes = _csv(files, "wp_comments_order_notes")
    assert {int(r["comment_post_ID"]) for r in notes} == {
        o["kim_legacy"],
        o["kim_hpos"],
        o["kim_guest"],
    }
    assert len(_csv(files, "wp_comments_reviews")) == 2  # signed in and signed out
    assert [r["session_key"] for r in _csv(files, "woocommerce_sessions")] == ["2"]
    assert [r["user_id"] for r in _csv(files, "wc_customer_lookup")] == [str(KIM.user_id)]
    assert _holds(files, KIM)
    assert not _holds(files, LEE) and not _holds(files, CHOI)

    # The administrator keyed kim's first order in and wrote the notes: none of it is theirs.
    out = tmp_path / "admin.zip"
    rid = submit_access(ADMIN.user_id, str(out), None, Requester(), plain=True)
    assert run_access(rid)["state"] == "completed"
    files = _package(out)
    assert [r["user_login"] for r in _csv(files, "wp_users")] == [ADMIN.login]
    assert "wc_orders.csv" not in files or not _csv(files, "wc_orders")
    assert "wp_comments_order_notes.csv" not in files or not _csv(files, "wp_comments_order_notes")
    for p in (KIM, LEE, CHOI):
        assert not _holds(files, p), p.login


def test_a_correction_of_the_email_rewrites_the_members_current_addresses(site: Site) -> None:
    new = "minji.new@mail.example"
    rid = submit_correction(KIM.user_id, {"user_email": new})
    out = run_correction(rid)
    assert out["state"] in ("notifying", "completed"), out
    assert site.rows("wp_users", "ID", "user_email", order="ID") == [
        (ADMIN.user_id, ADMIN.email),
        (KIM.user_id, new),
        (LEE.user_id, LEE.email),
    ]
    billing = {
        (u, v)
        for u, k, v in site.rows("wp_usermeta", "user_id", "meta_key", "meta_value")
        if k == "billing_email"
    }
    assert billing == {(ADMIN.user_id, ADMIN.email), (KIM.user_id, new), (LEE.user_id, LEE.email)}
    lookup = {(u, e) for u, e in site.rows("wc_customer_lookup", "user_id", "email")}
    assert lookup == {(KIM.user_id, new), (LEE.user_id, LEE.email), (None, CHOI.email)}
    # An order keeps the address it was placed with: it is the record 전자상거래법 keeps.
    orders = dict(site.rows("wc_orders", "id", "billing_email"))
    assert orders[site.store.orders["kim_hpos"]] == KIM.email
    with pytest.raises(UserError, match="not an email address"):
        submit_correction(KIM.user_id, {"user_email": "not-an-address"})


def test_the_shipped_map_loads_and_names_what_the_engine_needs() -> None:
    dm = load_datamap(MAP)
    s = dm.subject
    assert (s.table, s.key, s.login_column, s.keep_row) == ("wp_users", "ID", "user_login", False)
    assert dm.tables["wp_posts_orders"].owner is not None
    assert dm.tables["woocommerce_order_itemmeta"].inherits_from is not None
    assert dm.tables["wp_comments_order_notes"].inherits_from is not None
    assert dm.rule("contract").period.years == 5


def test_a_guest_order_from_before_hpos_goes_with_the_member_whose_address_it_holds(
    site: Site,
) -> None:
    """The wp_posts copy of a guest order placed before the move to HPOS holds the address only
    in its _billing_email meta row (owner.identities): it goes with its HPOS twin, with all its
    meta rows, and nothing of hers is left. Another guest's copy stays."""
    md = MetaData()
    wp, tables = wc.wordpress_tables(md), wc.woocommerce_tables(md)
    with site.engine.begin() as c:
        wc.add_order(c, wp, tables, 105, KIM, wc.NOW, customer=0, legacy=True,
                     email=f"  {KIM.email.upper()} ")  # fmt: skip
        wc.add_order(c, wp, tables, 106, CHOI, wc.NOW, customer=0, legacy=True)
    ctx = get_context()
    out = carry_out(ctx, submit_withdrawal(ctx, KIM.user_id), task_id="t-woo-legacy-guest")
    assert out["state"] == "completed", out
    assert out["residue"]["found"] == 0 and not out["residue"]["incomplete"], out
    assert residue(site, [KIM]) == set()
    posts = site.ids("wp_posts", "ID")
    assert 105 not in posts and 106 in posts
    meta = {int(r[0]) for r in site.rows("wp_postmeta", "post_id")}
    assert 105 not in meta and 106 in meta
    archived = sql_rows(
        site.archive,
        "SELECT DISTINCT source_pk FROM archive_records WHERE source_table = 'wp_posts_orders'",
    )
    assert sorted(r[0] for r in archived) == ["101", "105"]
