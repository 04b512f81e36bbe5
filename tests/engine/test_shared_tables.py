"""Several map entries on one table: a WordPress + WooCommerce shop on PostgreSQL and MariaDB.

``wp_posts`` holds orders, attachments, posts and pages, ``wp_postmeta`` and ``wp_usermeta`` one
row per meta key; each kind of row is its own entry (``table:`` + ``where:``) with its own link,
categories and retention. A withdrawal takes the leaver's orders (archived, with their meta rows
by category), attachment and its file (only the file the ``_wp_attached_file`` row names, never
the serialized metadata next to it), posts and meta rows, and leaves pages and every other
member's rows alone; an order past its legal period goes by age; `datamap check` counts rows no
entry takes; a correction of the email rewrites the billing_email meta row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import MetaData, select
from sqlalchemy.orm import Session

from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.access import collect
from lifecycle.rights.correction import run_correction, submit_correction
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from lifecycle.shred.jobs import run_job
from models.shred import ShredItem, ShredJob
from tests.fixtures import woocommerce as wc
from tests.helpers import LifecycleEnv, accounting, set_env, site_engine


class Shop:
    def __init__(self, env: LifecycleEnv, shop: wc.Shop) -> None:
        self.env = env
        self.shop = shop
        self.primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
        self.archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
        self.t = wc.tables(MetaData())

    def rows(self, name: str, *where: Any) -> list[dict[str, Any]]:
        t = self.t[name]
        eng = site_engine(self.primary)
        try:
            with eng.connect() as c:
                return [dict(r._mapping) for r in c.execute(select(t).where(*where))]
        finally:
            eng.dispose()

    def exec(self, stmt: Any) -> None:
        eng = site_engine(self.primary)
        try:
            with eng.begin() as c:
                c.execute(stmt)
        finally:
            eng.dispose()


@pytest.fixture
def shop(primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    root = primary_env.file_root / "www"
    eng = site_engine(primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"])
    built = wc.build(eng, root)
    eng.dispose()
    path = primary_env.var_dir / "shop.yaml"
    path.write_text(wc.site_map(root), encoding="utf-8")
    set_env(primary_env, monkeypatch, LIFECYCLE_DATA_MAP=str(path))
    clear_context_cache()
    yield Shop(primary_env, built)
    clear_context_cache()


def _snapshot(s: Shop) -> dict[str, dict[int, dict[str, Any]]]:
    keys = {"posts": "ID", "postmeta": "meta_id", "usermeta": "umeta_id", "users": "ID"}
    return {n: {r[k]: r for r in s.rows(n)} for n, k in keys.items()}


def _shred_all(s: Shop) -> list[str]:
    eng = site_engine(s.primary)
    with eng.connect() as c:
        jobs = [r[0] for r in c.execute(select(ShredJob.id).order_by(ShredJob.id))]
        paths = [r[0] for r in c.execute(select(ShredItem.path))]
    eng.dispose()
    for j in jobs:
        run_job(j)
    return paths


@pytest.mark.integration
def test_withdrawal_and_age_take_each_kind_of_row_by_its_own_entry(shop: Shop) -> None:
    ids = shop.shop.ids
    before = _snapshot(shop)
    ctx = get_context()
    rid = submit_withdrawal(ctx, wc.ALICE)
    out = carry_out(ctx, rid, task_id="t-wc")
    assert out["state"] == "completed", out
    handed = _shred_all(shop)

    # Only the attachment's file went to the shredder: not the serialized sizes, not the
    # billing values of the other meta keys.
    assert handed == [str(shop.shop.files["alice"])]
    assert not shop.shop.files["alice"].exists()
    assert shop.shop.files["bob"].exists() and shop.shop.files["carol"].exists()

    after = _snapshot(shop)
    gone_posts = {ids[k] for k in ("order_alice", "refund_alice", "attachment_alice",
                                   "post_alice")}  # fmt: skip
    assert set(before["posts"]) - set(after["posts"]) == gone_posts
    # Alice's page is site content (ignore_rows): it stays, with its meta row.
    assert after["posts"][ids["page_alice"]] == before["posts"][ids["page_alice"]]
    for key, row in before["posts"].items():
        if key not in gone_posts:
            assert after["posts"][key] == row
    gone_meta = {k for k, r in before["postmeta"].items() if r["post_id"] in gone_posts}
    assert len(gone_meta) == 4 + 2  # the order's four keys, the attachment's two
    assert set(before["postmeta"]) - set(after["postmeta"]) == gone_meta
    assert [r["user_id"] for r in before["usermeta"].values()].count(wc.ALICE) == 7
    assert {r["user_id"] for r in after["usermeta"].values()} == {wc.BOB, wc.CAROL}
    for key, row in before["usermeta"].items():
        if row["user_id"] != wc.ALICE:
            assert after["usermeta"][key] == row
    assert set(after["users"]) == {wc.BOB, wc.CAROL}

    # The order and its refund are archived as contracts; their meta rows by category.
    acc = accounting(shop.primary, shop.archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.archived == acc.ledger_archive
    assert acc.archived == {
        ("wp_posts_orders", "contract"): 2,
        ("wp_postmeta_order_contact", "contract"): 2,
        ("wp_postmeta_order_payment", "payment"): 2,
    }
    assert acc.ledger_destroy[("wp_usermeta_billing_email", "contact")] == 1
    assert acc.ledger_destroy[("wp_usermeta_billing", "contact")] == 2
    assert acc.ledger_destroy[("wp_usermeta_profile", "profile")] == 2
    assert acc.ledger_destroy[("wp_usermeta_account", "credentials")] == 2
    assert acc.ledger_destroy[("wp_posts_attachments", "uploads")] == 1
    assert acc.ledger_destroy[("wp_postmeta_files", "uploads")] == 1
    assert acc.ledger_destroy[("wp_postmeta_attachment_sizes", "uploads")] == 1
    assert acc.ledger_destroy[("wp_posts_posts", "service_usage")] == 1

    # The sweep: Carol's six-year-old order is past its legal period and goes by age, with its
    # meta rows; her recent order and everything else stays.
    dry = shop.env.run("sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "wp_posts_orders" in dry.stdout and "wp_postmeta_order_payment" in dry.stdout, dry.stdout
    counts = run_sweep(get_context())
    assert not counts.get("withdrawal_subjects"), counts
    swept = _snapshot(shop)
    old = ids["order_carol_old"]
    assert set(after["posts"]) - set(swept["posts"]) == {old}
    assert {k for k, r in after["postmeta"].items() if r["post_id"] == old} == (
        set(after["postmeta"]) - set(swept["postmeta"])
    )
    assert swept["usermeta"] == after["usermeta"]
    assert ids["order_carol"] in swept["posts"]


@pytest.mark.integration
def test_check_counts_rows_no_entry_takes_and_a_correction_rewrites_the_billing_row(
    shop: Shop,
) -> None:
    posts, usermeta = shop.t["posts"], shop.t["usermeta"]
    ok = shop.env.run("datamap", "check", "--strict")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "wp_posts_attachments  [purpose end: withdrawal]  (rows of wp_posts where " \
        "post_type = 'attachment')" in ok.stdout  # fmt: skip
    # A block pattern (a post type the map names nowhere) and a plugin's user meta key.
    shop.exec(posts.insert().values(
        post_author=wc.BOB, post_date=wc.NOW, post_date_gmt=wc.NOW, post_content="",
        post_title="Block", post_excerpt="", to_ping="", pinged="", post_modified=wc.NOW,
        post_modified_gmt=wc.NOW, post_content_filtered="", post_type="wp_block",
    ))  # fmt: skip
    shop.exec(usermeta.insert().values(user_id=wc.BOB, meta_key="dismissed_notice",
                                       meta_value="1"))  # fmt: skip
    shop.exec(usermeta.insert().values(user_id=wc.CAROL, meta_key="dismissed_notice",
                                       meta_value="1"))  # fmt: skip
    r = shop.env.run("datamap", "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "table wp_posts: 1 row(s) are matched by no entry of the data map (post_type="
        "'wp_block': 1)" in r.stderr
    ), r.stderr
    assert "table wp_usermeta: 2 row(s) are matched by no entry of the data map (meta_key=" \
        "'dismissed_notice': 2)" in r.stderr  # fmt: skip
    strict = shop.env.run("datamap", "check", "--strict")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "strict: 2 table(s) hold rows no entry of the map takes" in strict.stdout

    # Every entry lists every column of its table: each kind of row carries all of them.
    partial = shop.env.var_dir / "partial.yaml"
    text_ = wc.site_map(shop.shop.root)
    cut = "      uploads: [post_title, post_content, post_excerpt, post_name, post_password, guid]"
    assert cut in text_
    partial.write_text(text_.replace(cut, cut.replace(", guid", "")), encoding="utf-8")
    r = shop.env.run("datamap", "check", "--file", str(partial))
    assert r.returncode == 2, r.stdout + r.stderr
    line = text_[: text_.index("  wp_posts_attachments:")].count("\n") + 1
    assert (
        f"partial.yaml:{line}: column wp_posts.guid is not in the data map entry "
        "wp_posts_attachments: list it under a category" in r.stderr
    ), r.stderr

    # An access package holds each entry's rows of the member, one file per entry.
    ctx = get_context()
    with Session(ctx.primary) as s:
        package = collect(ctx, s, wc.BOB)
    assert {n: len(rows) for n, (_c, rows) in package.items() if rows} == {
        "wp_users": 1, "wp_usermeta_billing_email": 1, "wp_usermeta_billing": 2,
        "wp_usermeta_profile": 2, "wp_usermeta_account": 2, "wp_posts_orders": 1,
        "wp_posts_attachments": 1, "wp_posts_posts": 1, "wp_postmeta_order_contact": 2,
        "wp_postmeta_order_payment": 2, "wp_postmeta_files": 1,
        "wp_postmeta_attachment_sizes": 1,
    }  # fmt: skip

    # A correction of the member's email rewrites the meta row holding it, and nothing else.
    before = {r["umeta_id"]: r for r in shop.rows("usermeta")}
    rid = submit_correction(wc.BOB, {"user_email": "new.bob@mail.example"})
    out = run_correction(rid)
    assert out["state"] in ("notifying", "completed"), out
    assert [r["user_email"] for r in shop.rows("users", shop.t["users"].c.ID == wc.BOB)] == [
        "new.bob@mail.example"
    ]
    after = {r["umeta_id"]: r for r in shop.rows("usermeta")}
    changed = {k for k in before if before[k] != after[k]}
    assert [(after[k]["user_id"], after[k]["meta_key"], after[k]["meta_value"])
            for k in changed] == [(wc.BOB, "billing_email", "new.bob@mail.example")]  # fmt: skip
    # The order's own billing email is the record of the order: not rewritten.
    order_meta = shop.rows("postmeta", shop.t["postmeta"].c.post_id == shop.shop.ids["order_bob"])
    assert {r["meta_value"] for r in order_meta if r["meta_key"] == "_billing_email"} == {
        "billing.bob@mail.example"
    }
