"""Map entries sharing one table (``table:``, ``where:``, ``ignore_rows:``): what the loader
accepts and refuses (one line with file:line), and what ``explain`` says about them.

The engine's side, on PostgreSQL and MariaDB, is tests/engine/test_shared_tables.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.datamap.entries import disjoint
from lifecycle.datamap.loader import describe, parse_datamap
from lifecycle.datamap.model import DataMapError
from tests.fixtures import woocommerce as wc

ROOT = Path("/srv/shop")


def _load(text: str) -> object:
    return parse_datamap(text, "shop.yaml")


def _line(text: str, needle: str, after: str = "") -> int:
    start = text.index(after) if after else 0
    return text[: text.index(needle, start)].count("\n") + 1


def test_the_shop_map_loads_with_an_entry_per_kind_of_row() -> None:
    dm = parse_datamap(wc.site_map(ROOT), "shop.yaml")
    orders = dm.tables["wp_posts_orders"]
    assert orders.table == "wp_posts"
    assert orders.where == (("post_type", ("shop_order", "shop_order_refund")),)
    # The discriminator identifies the kind of row: carried with every archived part.
    assert "post_type" in orders.carried_columns
    assert dm.tables["wp_users"].table == "wp_users" and dm.tables["wp_users"].where == ()
    assert dm.physical("wp_postmeta_files") == "wp_postmeta"
    assert dm.physical_tables == ["wp_users", "wp_usermeta", "wp_posts", "wp_postmeta"]
    assert [t.name for t in dm.entries_on("wp_posts")] == [
        "wp_posts_orders", "wp_posts_attachments", "wp_posts_posts",
    ]  # fmt: skip
    # A meta row hangs off its entry's parent rows; it takes the order's date.
    meta = dm.tables["wp_postmeta_order_payment"]
    assert meta.inherits_from is orders
    order = [t.name for t in dm.tables_in_dependency_order()]
    assert order.index("wp_postmeta_files") < order.index("wp_posts_attachments")
    assert order[-1] == "wp_users"
    assert dm.tables["wp_usermeta_billing_email"].contact == (("email", "meta_value"),)
    assert dm.ignore_rows["wp_posts"] == ((("post_type", ("page", "revision", "nav_menu_item")),),)


def test_explain_names_the_rows_of_each_entry() -> None:
    lines = list(describe(parse_datamap(wc.site_map(ROOT), "shop.yaml")))
    assert "wp_posts_attachments: rows of table wp_posts where post_type = 'attachment'" in lines
    assert (
        "wp_posts_orders: rows of table wp_posts where post_type in ('shop_order', "
        "'shop_order_refund')" in lines
    )
    assert (
        "wp_posts: rows where post_type in ('page', 'revision', 'nav_menu_item') are ignored "
        "(ignore_rows)" in lines
    )
    assert (
        "wp_usermeta_billing_email: the member's email in meta_value, corrected with "
        "wp_users.user_email" in lines
    )


def test_overlapping_entries_are_refused_at_load() -> None:
    extra = """
  wp_posts_media:
    table: wp_posts
    where: {post_type: [attachment, oembed_cache]}
    key: ID
    subject_column: post_author
    columns:
      uploads: [post_title]
"""
    text = wc.site_map(ROOT, extra=extra)
    with pytest.raises(DataMapError) as exc:
        _load(text)
    line = _line(text, "where:", after="wp_posts_media:")
    assert str(exc.value) == (
        f"data map shop.yaml:{line}: entries 'wp_posts_attachments' and 'wp_posts_media' may "
        "both take rows of table wp_posts: give them where: conditions on a common column with "
        "no value in common"
    )


def test_a_whole_table_entry_overlaps_any_other_on_its_table() -> None:
    extra = """
  wp_posts_everything:
    table: wp_posts
    key: ID
    subject_column: post_author
    columns:
      uploads: [post_title]
"""
    text = wc.site_map(ROOT, extra=extra)
    with pytest.raises(DataMapError, match=r"shop.yaml:\d+: entries 'wp_posts_orders' and "
                       r"'wp_posts_everything' may both take rows of table wp_posts"):  # fmt: skip
        _load(text)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("  wp_users:\n    key: ID\n", "  wp_users:\n    where: {user_status: 0}\n    key: ID\n"),
         "subject table 'wp_users' is the whole members' table: no table: or where:"),
        (("    meta_key: _wp_page_template\n",
          "    meta_key: [_wp_page_template, _wp_attached_file]\n"),
         "ignore_rows: the rows of wp_postmeta it names may be rows of entry 'wp_postmeta_files'"),
        (("ignore_rows:\n", "ignore_rows:\n  wp_comments:\n    comment_type: pingback\n"),
         "ignore_rows: table wp_comments is not mapped by any entry"),
        (("where: {meta_key: billing_email}", "where: {meta_key: {a: 1}}"),
         "where: meta_key must be a text or integer value or a non-empty list of them"),
        (("where: {meta_key: billing_email}", "where: {}"),
         "where: names no column"),
        (("    contact:\n      email: meta_value\n", "    contact:\n      mobile: meta_value\n"),
         "contact.mobile needs subject.contact.mobile"),
    ],
)  # fmt: skip
def test_bad_entries_are_refused_in_one_line(edit: tuple[str, str], message: str) -> None:
    text = wc.site_map(ROOT)
    assert edit[0] in text
    with pytest.raises(DataMapError) as exc:
        _load(text.replace(edit[0], edit[1], 1))
    assert message in str(exc.value)
    assert str(exc.value).startswith("data map shop.yaml:")
    assert "\n" not in str(exc.value)


def test_a_second_entry_on_the_members_table_is_refused() -> None:
    extra = """
  wp_users_admins:
    table: wp_users
    where: {user_status: 1}
    key: ID
    subject_column: ID
    columns:
      profile: [display_name]
"""
    with pytest.raises(DataMapError, match="table wp_users is the members' table, which is one "
                       "entry"):  # fmt: skip
        _load(wc.site_map(ROOT, extra=extra))


def test_disjoint_needs_a_common_column_with_no_common_value() -> None:
    a = (("post_type", ("shop_order",)),)
    assert disjoint(a, (("post_type", ("attachment",)),))
    assert not disjoint(a, (("post_type", ("shop_order", "x")),))
    assert not disjoint(a, (("post_status", ("draft",)),))  # other columns: cannot tell
    assert not disjoint(a, ())
    both = (("post_type", ("shop_order",)), ("post_status", ("draft",)))
    assert disjoint(both, (("post_type", ("shop_order",)), ("post_status", ("publish",))))
