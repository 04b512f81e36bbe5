"""Gnuboard5's guest orders and guest inquiries (mb_id empty) through the shipped map's
`match_identities:`, on a real MariaDB primary (Gnuboard5 runs on MySQL/MariaDB only; the
engine's guest-row logic runs on both primaries in tests/engine/test_guest_rows.py)."""

from __future__ import annotations

from lifecycle.engine.context import get_context
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.withdrawal import carry_out, resolve_member, submit_withdrawal
from tests.datamap.test_gnuboard5_datamap import Site, site  # noqa: F401  (the fixture)
from tests.helpers import sql_rows

GUEST_ORDERS = {
    # lee_mh7's address as typed at the checkout: other case, a trailing space.
    2000000000000001: ("LEE.MH7@Mail.Example ", ""),
    # lee_mh7's mobile number (010-2345-6789), written with the country code.
    2000000000000002: ("", "+82 10 2345 6789"),
    # Someone who is not a member.
    2000000000000003: ("stranger@mail.example", "010-9999-0000"),
    # jung_hs left on the site (mb_leave_date): the sweep takes it.
    2000000000000004: ("hs.jung@mail.example", ""),
    # kim_yr stays.
    2000000000000005: ("yr.kim@mail.example", "010-4567-8901"),
}


def _orders(g5: Site) -> set[int]:
    return {int(r[0]) for r in g5.sql("SELECT od_id FROM g5_shop_order WHERE mb_id = ''")}


def test_guest_orders_and_inquiries_leave_with_the_member_whose_identity_they_hold(
    site: Site,  # noqa: F811
) -> None:
    site.innodb()
    for od_id, (email, hp) in GUEST_ORDERS.items():
        site.sql(
            "INSERT INTO g5_shop_order (od_id, mb_id, od_name, od_email, od_hp, od_memo, "
            "od_shop_memo, od_mod_history, od_cash_info, od_status, od_time) "
            "VALUES (%s, '', '비회원', %s, %s, '', '', '', '', '주문', NOW())",
            od_id,
            email,
            hp,
        )
    for email in ("  lee.mh7@MAIL.example", "yr.kim@mail.example"):
        site.sql(
            "INSERT INTO g5_qa_content (qa_num, qa_parent, qa_related, mb_id, qa_name, "
            "qa_email, qa_hp, qa_type, qa_category, qa_subject, qa_content, qa_file1, "
            "qa_source1, qa_file2, qa_source2, qa_ip, qa_datetime, qa_1, qa_2, qa_3, qa_4, "
            "qa_5) VALUES (0, 0, 0, '', '비회원', %s, '', 0, '배송', '문의', '언제 오나요', '', "
            "'', '', '', '10.0.5.1', NOW(), '', '', '', '', '')",
            email,
        )
    ctx = get_context()
    lee = resolve_member(ctx, "lee_mh7")
    out = carry_out(ctx, submit_withdrawal(ctx, lee), task_id="t-guests")
    assert out["state"] == "completed", out
    assert _orders(site) == {2000000000000003, 2000000000000004, 2000000000000005}
    left = site.sql("SELECT qa_email FROM g5_qa_content WHERE mb_id = ''")
    assert left == [("yr.kim@mail.example",)]
    # Both guest orders were archived (contract and payment records), under lee's pseudonym
    # like lee's own order.
    refs = sql_rows(
        site.archive,
        "SELECT source_pk, subject_ref FROM archive_records WHERE source_table = "
        "'g5_shop_order' AND request_id IS NOT NULL",
    )
    assert {"2000000000000001", "2000000000000002"} <= {pk for pk, _r in refs}, refs
    assert len({ref for _pk, ref in refs}) == 1, refs

    counts = run_sweep(get_context())
    assert counts["withdrawal_subjects"] == 1  # jung_hs, by the site's own marker
    assert "guest_rows_shared" not in counts, counts
    assert _orders(site) == {2000000000000003, 2000000000000005}
