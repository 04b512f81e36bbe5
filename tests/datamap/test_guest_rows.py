"""`match_identities:`: the map language for rows with no member link that belong to the member
whose identity they hold (guest orders, newsletter rows). No server needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.core.errors import UserError
from lifecycle.datamap.guest_rows import stored_digits
from lifecycle.datamap.loader import describe, load_datamap
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP

REPO = Path(__file__).resolve().parents[2]

ORDERS = """
  shop_orders:
    subject_column: member_id
    purpose_end: [withdrawal]
    retain_from: ordered_at
    identities: {email: email, mobile: mobile}
    match_identities: [email, mobile]
    columns:
      contract: [email, mobile, item, ordered_at]

  newsletter:
    purpose_end: [withdrawal]
    identities: {email: email}
    match_identities: [email]
    columns:
      service_usage: [email, subscribed_at]
"""


def site_map(tmp_path: Path, tables: str = ORDERS) -> Path:
    """The demo map with the members' contact columns and ``tables`` added."""
    src = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
    src = src.replace("subject:\n", "subject:\n  contact: {email: email, mobile: mobile}\n", 1)
    path = tmp_path / "site.yaml"
    path.write_text(src.rstrip("\n") + "\n" + tables, encoding="utf-8")
    return path


def test_a_guest_table_and_an_identity_only_table_load(tmp_path: Path) -> None:
    dm = load_datamap(site_map(tmp_path))
    assert dm.tables["shop_orders"].match_identities == ("email", "mobile")
    news = dm.tables["newsletter"]
    assert news.match_identities == ("email",) and not news.links and news.via is None


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (ORDERS.replace("match_identities: [email]", "match_identities: [mobile]"),
         "match_identities names 'mobile', which the table's identities: does not declare"),
        (ORDERS.replace("match_identities: [email, mobile]", "match_identities: [email, email]"),
         "match_identities lists a kind twice"),
        # Without match_identities, a table with no relation is refused as before.
        (ORDERS.replace("    match_identities: [email]\n", ""), "has no subject relation"),
        ("""
  guardian_mail:
    via: {table: guardians, column: guardian_id}
    purpose_end: [withdrawal]
    identities: {email: email}
    match_identities: [email]
    columns:
      service_usage: [email]
""", "match_identities goes with subject_column or with no relation"),
    ],
)  # fmt: skip
def test_bad_matching_rules_are_refused_in_one_line(
    tmp_path: Path, tables: str, message: str
) -> None:
    with pytest.raises(UserError) as err:
        load_datamap(site_map(tmp_path, tables))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_explain_states_which_rows_match_and_how(tmp_path: Path) -> None:
    lines = list(describe(load_datamap(site_map(tmp_path))))
    assert (
        "shop_orders: rows whose member_id is empty (NULL, '' or 0) belong to the member whose "
        "email they hold: email = members.email, both spaces trimmed, lower-cased; not taken "
        "when a member still with the site holds it too"
    ) in lines
    mobile = next(ln for ln in lines if ln.startswith("shop_orders: rows") and "mobile" in ln)
    assert "+82/82 -> 0" in mobile
    assert any(
        ln.startswith("newsletter: every row (the table has no member link) belong") for ln in lines
    )


def test_the_shipped_gnuboard_map_matches_guest_orders_and_inquiries() -> None:
    dm = load_datamap(REPO / "lifecycle" / "datamap" / "maps" / "gnuboard5.yaml")
    for table in ("g5_shop_order", "g5_qa_content", "g5_shop_item_qa"):
        assert dm.tables[table].match_identities == ("email", "mobile"), table
    assert dict(dm.tables["g5_shop_order"].identities) == {"email": "od_email", "mobile": "od_hp"}
    legacy = load_datamap(REPO / "lifecycle" / "datamap" / "maps" / "gnuboard5-5.6.14.yaml")
    assert legacy.tables["g5_shop_order"].match_identities == ("email", "mobile")


def test_a_mobile_number_is_looked_up_by_both_digit_forms() -> None:
    assert stored_digits(["01012345678"]) == ["01012345678", "821012345678"]


# A legacy WooCommerce order: the customer named in a meta row, a guest's identity held in
# other meta rows of the same table.
META_ORDERS = """
  meta_orders:
    key: id
    owner: {table: meta_order_meta, column: order_id, key_column: meta_key, key: _customer,
            value: meta_value, identities: {email: _email, mobile: _phone}}
    match_identities: [email, mobile]
    retain_from: created_at
    columns:
      contract: [title, created_at]

  meta_order_meta:
    key: meta_id
    via: {table: meta_orders, column: order_id, parent_key: id}
    columns:
      contract: [meta_value]
    non_personal: [meta_key]
"""


def test_an_owner_table_matches_guest_rows_by_identities_its_meta_rows_hold(
    tmp_path: Path,
) -> None:
    dm = load_datamap(site_map(tmp_path, META_ORDERS))
    tm = dm.tables["meta_orders"]
    assert tm.match_identities == ("email", "mobile")
    assert tm.owner is not None and tm.owner.identities == (
        ("email", "_email"),
        ("mobile", "_phone"),
    )
    lines = list(describe(dm))
    assert (
        "meta_orders: rows whose owner meta_order_meta row (meta_key = '_customer') names no "
        "member belong to the member whose email they hold: meta_order_meta.meta_value where "
        "meta_key = '_email' = members.email, both spaces trimmed, lower-cased; not taken when a "
        "member still with the site holds it too"
    ) in lines
    assert (
        "meta_orders: holds its mobile in meta_order_meta.meta_value where meta_key = '_phone' "
        "and order_id = meta_orders.id"
    ) in lines


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (META_ORDERS.replace("identities: {email: _email, mobile: _phone}",
                             "identities: {email: _email}"),
         "match_identities names 'mobile', which the owner's meta rows do not hold"),
        (META_ORDERS.replace("identities: {email: _email, mobile: _phone}",
                             "identities: {email: _email, fax: _fax}"),
         "unknown identity 'fax' (known: email, mobile)"),
        (META_ORDERS.replace("identities: {email: _email, mobile: _phone}",
                             "identities: {email: _customer, mobile: _phone}"),
         "owner.identities.email must name a meta key other than the owner's own"),
        (META_ORDERS.replace("value: meta_value,", "value: meta_value, row_key: title,"),
         "owner.identities needs the owner's row_key to be the table's key"),
    ],
)  # fmt: skip
def test_bad_meta_matching_rules_are_refused_in_one_line(
    tmp_path: Path, tables: str, message: str
) -> None:
    with pytest.raises(UserError) as err:
        load_datamap(site_map(tmp_path, tables))
    assert message in str(err.value) and "\n" not in str(err.value)
