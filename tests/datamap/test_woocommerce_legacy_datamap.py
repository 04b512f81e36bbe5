"""A WooCommerce store that never moved to HPOS, through the shipped map woocommerce-legacy.yaml,
on a real MariaDB and PostgreSQL primary.

The store of tests/fixtures/woocommerce.py seeded on posts storage only: every order a wp_posts
row (post_type shop_order) with its wp_postmeta rows, its customer in `_customer_user`, a guest's
address in `_billing_email`; lines, notes, stats and downloads keyed by the post's ID. Kim has an
order keyed in by the administrator, one of her own and a guest order under her address; lee
stays, with an order past its five years; yuna choi is a guest who never signed up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifecycle.datamap.loader import load_datamap
from lifecycle.engine.context import get_context
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.access import run_access, submit_access
from lifecycle.rights.common import Requester
from lifecycle.rights.correction import run_correction, submit_correction
from lifecycle.rights.withdrawal import carry_out, resolve_member, submit_withdrawal
from tests.datamap.test_woocommerce_datamap import (
    ADMIN,
    CHOI,
    KIM,
    LEE,
    Site,
    Snapshot,
    _csv,
    _holds,
    _package,
    keys_where,
    kims_account_rows,
    removed,
    residue,
    snapshot,
    store_site,
)
from tests.fixtures import woocommerce as wc
from tests.helpers import REPO, LifecycleEnv, accounting, run_every_shred_job, sql_rows

MAP = REPO / "lifecycle" / "datamap" / "maps" / "woocommerce-legacy.yaml"
UPLOAD = 13  # kim's review photo


@pytest.fixture
def site(primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    with store_site(primary_env, monkeypatch, MAP, hpos=False) as s:
        yield s


def test_the_store_has_no_hpos_tables_and_check_and_discover_are_clean(site: Site) -> None:
    tables = set(wc.store_tables(hpos=False))
    assert "wc_orders" not in tables and "wc_order_addresses" not in tables
    r = site.env.run("datamap", "check", "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    found = site.env.run("datamap", "discover", "--strict", "--json")
    assert found.returncode == 0, found.stdout + found.stderr
    doc = json.loads(found.stdout)
    assert doc["complete"], doc
    assert not [f for f in doc["findings"] if not f["covered"]], doc["findings"]


def order_rows(snap: Snapshot, orders: set[int]) -> dict[str, set[tuple[Any, ...]]]:
    """Orders ``orders`` with everything hanging off them: meta rows, notes and their meta,
    lines and their meta, stats, download permissions and their log."""
    notes = keys_where(
        snap,
        "wp_comments",
        lambda r: r["comment_type"] == "order_note" and r["comment_post_ID"] in orders,
    )
    items = keys_where(snap, "woocommerce_order_items", lambda r: r["order_id"] in orders)
    perms = keys_where(
        snap, "woocommerce_downloadable_product_permissions", lambda r: r["order_id"] in orders
    )
    out = {
        "wp_posts": {(o,) for o in orders},
        "wp_postmeta": keys_where(snap, "wp_postmeta", lambda r: r["post_id"] in orders),
        "wp_comments": notes,
        "wp_commentmeta": keys_where(snap, "wp_commentmeta", lambda r: (r["comment_id"],) in notes),
        "woocommerce_order_items": items,
        "woocommerce_order_itemmeta": keys_where(
            snap, "woocommerce_order_itemmeta", lambda r: (r["order_item_id"],) in items
        ),
        "wc_order_stats": keys_where(snap, "wc_order_stats", lambda r: r["order_id"] in orders),
        "woocommerce_downloadable_product_permissions": perms,
        "wc_download_log": keys_where(
            snap, "wc_download_log", lambda r: (r["permission_id"],) in perms
        ),
    }
    return {k: v for k, v in out.items() if v}


def test_withdrawal_and_sweep_take_kims_data_and_nothing_else(site: Site) -> None:
    o = site.store.orders
    kims_orders = {o["kim_legacy"], o["kim_hpos"], o["kim_guest"]}
    before = snapshot(site)
    photo = site.store.files[KIM.login]

    ctx = get_context()
    mid = resolve_member(ctx, KIM.login)
    out = carry_out(ctx, submit_withdrawal(ctx, mid), task_id="t-woo-legacy")
    assert out["state"] == "completed", out
    assert out["residue"]["found"] == 0 and not out["residue"]["incomplete"], out
    run_every_shred_job(site.primary)
    after = snapshot(site)

    # Exactly her rows went (her three orders, the guest one found by its _billing_email meta
    # row, with everything hanging off them; her account, review, upload, session, card).
    expected = order_rows(before, kims_orders)
    reviews = keys_where(
        before,
        "wp_comments",
        lambda r: r["comment_type"] == "review" and r["comment_author_email"] == KIM.email,
    )
    expected["wp_posts"] |= {(UPLOAD,)}
    expected["wp_postmeta"] |= keys_where(before, "wp_postmeta", lambda r: r["post_id"] == UPLOAD)
    expected["wp_comments"] |= reviews
    expected["wp_commentmeta"] |= keys_where(
        before, "wp_commentmeta", lambda r: (r["comment_id"],) in reviews
    )
    expected |= kims_account_rows(before)
    assert removed(before, after) == expected
    assert not photo.exists()
    assert residue(site, [KIM]) == set()
    assert residue(site, [LEE]) and residue(site, [CHOI])
    archived = sql_rows(
        site.archive,
        "SELECT DISTINCT source_pk FROM archive_records WHERE source_table = 'wp_posts_orders'",
    )
    assert sorted(int(r[0]) for r in archived) == sorted(kims_orders)
    acc = accounting(site.primary, site.archive)
    assert acc.ledger_ok, acc.ledger_message

    # The nightly sweep: lee's order past its five years goes with its meta rows, lines, notes
    # and stats (each taking the order's date); the guest session expired two days ago goes.
    counts = run_sweep(get_context())
    assert counts["batches"] == counts["batches_done"], counts
    swept = removed(after, snapshot(site))
    expired = order_rows(after, {o["lee_old"]})
    expired["woocommerce_sessions"] = keys_where(
        after,
        "woocommerce_sessions",
        lambda r: r["session_key"] == "t_0a1b2c3d4e5f60718293a4b5c6d7e",
    )
    assert swept == expired, swept
    assert {"wp_postmeta", "wp_comments", "woocommerce_order_items", "wc_order_stats"} <= set(swept)
    orders = {r for r in site.rows("wp_posts", "ID", "post_type") if r[1] == "shop_order"}
    assert sorted(r[0] for r in orders) == sorted([o["lee_legacy"], o["lee_hpos"], o["choi_guest"]])


def test_access_holds_the_members_data_and_no_one_elses(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "kim.zip"
    rid = submit_access(KIM.user_id, str(out), None, Requester(), plain=True)
    assert run_access(rid)["state"] == "completed"
    files = _package(out)
    o = site.store.orders
    kims = sorted([o["kim_legacy"], o["kim_hpos"], o["kim_guest"]])
    assert sorted(int(r["ID"]) for r in _csv(files, "wp_posts_orders")) == kims
    assert {int(r["comment_post_ID"]) for r in _csv(files, "wp_comments_order_notes")} == set(kims)
    assert {int(r["order_id"]) for r in _csv(files, "woocommerce_order_items")} == set(kims)
    assert {int(r["post_id"]) for r in _csv(files, "wp_postmeta_order_contract")} == set(kims)
    assert _holds(files, KIM)
    assert not _holds(files, LEE) and not _holds(files, CHOI)

    # The administrator keyed kim's first order in and wrote the notes: none of it is theirs.
    out = tmp_path / "admin.zip"
    rid = submit_access(ADMIN.user_id, str(out), None, Requester(), plain=True)
    assert run_access(rid)["state"] == "completed"
    files = _package(out)
    assert "wp_posts_orders.csv" not in files or not _csv(files, "wp_posts_orders")
    assert "wp_comments_order_notes.csv" not in files or not _csv(files, "wp_comments_order_notes")
    for p in (KIM, LEE, CHOI):
        assert not _holds(files, p), p.login


def test_a_correction_of_the_email_rewrites_the_current_address_not_the_orders(
    site: Site,
) -> None:
    new = "minji.new@mail.example"
    out = run_correction(submit_correction(KIM.user_id, {"user_email": new}))
    assert out["state"] in ("notifying", "completed"), out
    assert dict(site.rows("wp_users", "ID", "user_email"))[KIM.user_id] == new
    billing = {
        u: v
        for u, k, v in site.rows("wp_usermeta", "user_id", "meta_key", "meta_value")
        if k == "billing_email"
    }
    assert billing[KIM.user_id] == new and billing[LEE.user_id] == LEE.email
    lookup = {(u, e) for u, e in site.rows("wc_customer_lookup", "user_id", "email")}
    assert lookup == {(KIM.user_id, new), (LEE.user_id, LEE.email), (None, CHOI.email)}
    # An order keeps the address it was placed with (its _billing_email meta row).
    kept = {
        int(p)
        for p, k, v in site.rows("wp_postmeta", "post_id", "meta_key", "meta_value")
        if k == "_billing_email" and v == KIM.email
    }
    assert kept == {site.store.orders["kim_legacy"], site.store.orders["kim_hpos"]}


def test_the_shipped_legacy_map_loads_and_hangs_everything_off_the_order_post() -> None:
    dm = load_datamap(MAP)
    orders = dm.tables["wp_posts_orders"]
    assert orders.owner is not None and orders.owner.identities == (("email", "_billing_email"),)
    assert orders.match_identities == ("email",)
    for name in ("woocommerce_order_items", "wp_comments_order_notes", "wc_order_stats",
                 "woocommerce_downloadable_product_permissions"):  # fmt: skip
        via = dm.tables[name].via
        assert via is not None and via.table == "wp_posts_orders", name
        assert dm.tables[name].inherits_from is not None, name
    assert not any(t.table.startswith("wc_order") and t.table != "wc_order_stats"
                   for t in dm.tables.values())  # fmt: skip
