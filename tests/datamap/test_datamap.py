"""The data map: loading, every validation error (naming its line), reflection, planning."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text

from lifecycle.datamap.loader import describe, load_datamap, parse_datamap
from lifecycle.datamap.model import DataMap, DataMapError, Orphans
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from lifecycle.datamap.periods import Period
from models import demo_site
from models.consents import Consent
from tests.helpers import assert_map_fits_with_demo_rrns

DEMO = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")


def line_of(text_: str, needle: str, nth: int = 1, *, exact: bool = False) -> int:
    """1-based line of the nth line containing ``needle`` (so tests survive map edits)."""
    hits = [
        i + 1
        for i, line in enumerate(text_.splitlines())
        if (line == needle if exact else needle in line)
    ]
    assert len(hits) >= nth, f"{needle!r} not in the map"
    return hits[nth - 1]


def refused(text_: str) -> DataMapError:
    with pytest.raises(DataMapError) as info:
        parse_datamap(text_, "site.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("data map site.yaml:")
    return info.value


def edit(old: str, new: str, base: str = DEMO) -> str:
    assert base.count(old) == 1, f"{old!r} must occur once"
    return base.replace(old, new)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    eng = create_engine(f"sqlite:///{tmp_path / 'site.sqlite3'}")
    demo_site.metadata.create_all(eng)
    # The demo keeps its retention consent in the lifecycle's own table (lifecycle db upgrade).
    Consent.__table__.create(eng)
    return eng


@pytest.fixture
def pg_engine(pg_databases) -> Engine:  # type: ignore[no-untyped-def]
    eng = create_engine(pg_databases.primary_url)
    demo_site.metadata.create_all(eng)
    Consent.__table__.create(eng, checkfirst=True)
    yield eng
    eng.dispose()


# -- the shipped map ---------------------------------------------------------------------------


def test_shipped_demo_map_loads_with_design_defaults() -> None:
    dm = load_datamap(SHIPPED_DEMO_MAP)
    assert dm.subject.table == "members"
    assert dm.subject.withdrawn_value == "withdrawn"
    assert not dm.subject.dormancy.enabled
    assert dm.subject.dormancy.advance_notice_days == 30
    assert {t.name for t in demo_site.ALL_TABLES} == set(dm.tables)
    expected = {
        "contract": "5y",
        "payment": "5y",
        "complaint": "3y",
        "advertising": "6mo",
        "tax": "5y",
        "access_log": "3mo",
        "profile": "0d",
        "rrn": "0d",
        "counselling": "10y",
    }
    for cat, period in expected.items():
        assert str(dm.rule(cat).period) == period
    assert "전자상거래법" in dm.rule("contract").legal_basis
    assert "국세기본법" in dm.rule("tax").legal_basis
    assert "통신비밀보호법" in dm.rule("access_log").legal_basis
    assert dm.file_columns() == [("uploaded_files", "path")]
    payments = dm.table("payments")
    assert payments.categories == ["payment"]
    assert payments.retention_for("payment").period == Period(years=5)
    assert payments.retain_from == "paid_at"
    assert dm.table("access_logs").age == ("accessed_at", Period(months=3))
    assert dm.table("members").category_of("rrn") == "rrn"
    # The member row keeps only the separate consent, and only where it was given.
    assert [r.category for r in dm.table("members").rules if not r.period.is_zero] == [
        "counselling"
    ]
    assert dm.rule("counselling").consent == "counselling_retention"
    assert dm.sensitive == {"counselling"}
    assert dm.consents["counselling"].destroys == ("counselling",)
    assert dm.consents["counselling"].column == "counselling_consent_at"


def test_defaults_apply_when_the_map_omits_a_rule() -> None:
    start = DEMO.index("  contract:\n")
    end = DEMO.index("  complaint:\n")
    dm = parse_datamap(DEMO[:start] + DEMO[end:], "site.yaml")
    assert dm.rule("contract").default and str(dm.rule("contract").period) == "5y"
    assert not dm.rule("complaint").default


def test_load_datamap_uses_the_setting_then_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.core.settings import reset_settings_cache

    custom = tmp_path / "mine.yaml"
    custom.write_text(edit("period: 10y", "period: 7y"), encoding="utf-8")
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(custom))
    reset_settings_cache()
    try:
        assert str(load_datamap().rule("counselling").period) == "7y"
        monkeypatch.delenv("LIFECYCLE_DATA_MAP")
        reset_settings_cache()
        assert load_datamap().source == str(SHIPPED_DEMO_MAP)
    finally:
        reset_settings_cache()


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataMapError) as info:
        load_datamap(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value) and "not found" in str(info.value)


# -- every validation error names its line ------------------------------------------------------


def test_rule_without_period() -> None:
    bad = edit("    period: 10y\n", "")
    err = refused(bad)
    assert err.line == line_of(bad, "  counselling:", 2)
    assert "'counselling' has no period" in err.message


def test_rule_given_as_empty_value() -> None:
    bad = edit("  tax:\n    period: 5y\n", "  tax:\n  taxx_unused:\n    period: 5y\n")
    err = refused(bad)
    assert err.line == line_of(bad, "  tax:")
    assert "'tax' has no period" in err.message


@pytest.mark.parametrize("value", ["forever", "unlimited", "null", "-1y", "200y", "영구"])
def test_unbounded_period(value: str) -> None:
    bad = edit("period: 10y", f"period: {value}")
    err = refused(bad)
    assert err.line == line_of(bad, f"period: {value}")
    assert "unbounded" in err.message or "no period" in err.message


@pytest.mark.parametrize("value", ["5", "5 yrs", "yes", "5y3x", "P"])
def test_malformed_period(value: str) -> None:
    bad = edit("period: 3y", f"period: {value}")
    err = refused(bad)
    assert err.line == line_of(bad, "  complaint:") + 1
    assert "'complaint'" in err.message


def test_rule_without_legal_basis() -> None:
    bad = edit('    legal_basis: "국세기본법 제85조의3 (장부 및 증거서류의 보존)"\n', "")
    err = refused(bad)
    assert err.line == line_of(bad, "  tax:")
    assert "legal_basis" in err.message


def test_unknown_category_on_a_table() -> None:
    bad = edit("hobbies: [hobbies]", "hobbys: [hobbies]")
    err = refused(bad)
    assert err.line == line_of(bad, "hobbys: [hobbies]")
    assert "unknown category 'hobbys'" in err.message


def test_unknown_category_in_retention() -> None:
    bad = edit("  advertising:\n", "  adverts:\n")
    err = refused(bad)
    assert err.line == line_of(bad, "  adverts:")
    assert "unknown category 'adverts'" in err.message


def test_custom_category_needs_a_rule_and_then_works() -> None:
    declared = edit("\nretention:\n", "\ncategories: [{vehicle: contract}]\n\nretention:\n")
    uses = edit(
        "      hobbies: [hobbies]\n",
        "      hobbies: [hobbies]\n      vehicle: [marital_status]\n",
        declared,
    ).replace("        - marital_status\n", "")
    err = refused(uses)
    assert err.line == line_of(uses, "vehicle: [marital_status]")
    assert "category 'vehicle' has no retention rule" in err.message
    ok = edit(
        "\nretention:\n",
        "\nretention:\n  vehicle: {period: 1y, legal_basis: 상법 제33조}\n",
        uses,
    )
    dm = parse_datamap(ok, "site.yaml")
    assert dm.table("members").category_of("marital_status") == "vehicle"


def test_counselling_has_no_default_rule() -> None:
    start = DEMO.index("  # Health data")
    end = DEMO.index("  profile: {")
    bad = DEMO[:start] + DEMO[end:]
    err = refused(bad)
    assert err.line == line_of(bad, "counselling: [counselling_consent_at]")
    assert "'counselling' has no retention rule" in err.message


def test_missing_subject_relation() -> None:
    bad = edit("  complaints:\n    subject_column: member_id\n", "  complaints:\n")
    err = refused(bad)
    assert err.line == line_of(bad, "  complaints:")
    assert "'complaints' has no subject relation" in err.message


def test_both_subject_column_and_via() -> None:
    bad = edit(
        "  tax_invoices:\n    subject_column: member_id\n",
        "  tax_invoices:\n    subject_column: member_id\n"
        "    via: {table: payments, column: payment_id}\n",
    )
    err = refused(bad)
    assert err.line == line_of(bad, "via: {table: payments")
    assert "both subject_column and via" in err.message


def test_via_to_an_unmapped_table() -> None:
    bad = edit(
        "  tax_invoices:\n    subject_column: member_id\n",
        "  tax_invoices:\n    via: {table: paymentz, column: payment_id}\n",
    )
    err = refused(bad)
    assert err.line == line_of(bad, "via: {table: paymentz")
    assert "'paymentz'" in err.message


def test_via_cycle() -> None:
    bad = edit(
        "  tax_invoices:\n    subject_column: member_id\n",
        "  tax_invoices:\n    via: {table: payments, column: payment_id}\n",
    )
    bad = edit(
        "  payments:\n    subject_column: member_id\n",
        "  payments:\n    via: {table: tax_invoices, column: member_id}\n",
        bad,
    )
    err = refused(bad)
    assert "cycle" in err.message
    assert err.line == line_of(bad, "tables:", exact=True)


def test_unknown_purpose_end_kind() -> None:
    bad = edit(
        "  complaints:\n    subject_column: member_id\n    purpose_end: [withdrawal]",
        "  complaints:\n    subject_column: member_id\n    purpose_end: [withdrawal, expiry]",
    )
    err = refused(bad)
    assert err.line == line_of(bad, "purpose_end: [withdrawal, expiry]")
    assert "unknown purpose end 'expiry'" in err.message


def test_unknown_purpose_end_mapping() -> None:
    bad = edit("{age: accessed_at}", "{older_than: accessed_at}")
    err = refused(bad)
    assert err.line == line_of(bad, "older_than")
    assert "unknown purpose end 'older_than'" in err.message


def test_age_on_a_table_with_no_period() -> None:
    bad = edit(
        "  service_usage:\n    subject_column: member_id\n    purpose_end: [withdrawal, dormancy]",
        "  service_usage:\n    subject_column: member_id\n    purpose_end: [{age: used_at}]",
    )
    err = refused(bad)
    assert err.line == line_of(bad, "purpose_end: [{age: used_at}]")
    assert "has no period" in err.message
    ok = bad.replace("{age: used_at}", "{age: {column: used_at, after: 1y}}")
    assert parse_datamap(ok, "x").table("service_usage").age == ("used_at", Period(years=1))


def test_unknown_key_names_its_line() -> None:
    bad = edit("    retain_from: paid_at", "    retain_frm: paid_at")
    err = refused(bad)
    assert err.line == line_of(bad, "retain_frm")
    assert "unknown key 'retain_frm'" in err.message


def test_missing_required_key() -> None:
    bad = edit("  status_column: status\n", "")
    err = refused(bad)
    assert err.line == line_of(bad, "subject:")
    assert "missing required key 'status_column'" in err.message


def test_duplicate_key() -> None:
    bad = edit("  complaints:\n", "  complaints:\n    key: id\n    key: idx\n")
    err = refused(bad)
    assert err.line == line_of(bad, "    key: idx")
    assert "duplicate key 'key'" in err.message


def test_yaml_syntax_error() -> None:
    bad = edit("      complaint: [filed_at, body, resolution, resolved_at]", "      complaint: [x")
    err = refused(bad)
    assert "not valid YAML" in err.message
    assert err.line is not None and err.line >= line_of(bad, "complaint: [x")


def test_column_in_two_categories() -> None:
    bad = edit("contact: [home_phone,", "contact: [name, home_phone,")
    err = refused(bad)
    assert err.line == line_of(bad, "contact: [name, home_phone")
    assert "members.name is listed under both 'profile' and 'contact'" in err.message


def test_file_column_needs_a_category() -> None:
    bad = edit("    files: [path]", "    files: [path, thumbnail]")
    err = refused(bad)
    assert err.line == line_of(bad, "files: [path, thumbnail]")
    assert "uploaded_files.thumbnail" in err.message


def test_subject_table_must_be_mapped() -> None:
    bad = edit("  table: members\n", "  table: users\n")
    err = refused(bad)
    assert err.line == line_of(bad, "  table: users")
    assert "'users'" in err.message


def test_key_column_cannot_hold_a_category() -> None:
    bad = edit("      tax: [issued_at,", "      tax: [member_id, issued_at,")
    err = refused(bad)
    assert "tax_invoices.member_id is a key/relation column" in err.message


def test_empty_file() -> None:
    err = refused("# nothing\n")
    assert "empty" in err.message


# -- reflection against the real schema ---------------------------------------------------------


def _engines(request: pytest.FixtureRequest, which: str) -> Engine:
    return request.getfixturevalue(which)


# pg_engine is reached through getfixturevalue, which the integration hook cannot see.
@pytest.fixture(params=["sqlite_engine", pytest.param("pg_engine", marks=pytest.mark.integration)])
def site_engine(request: pytest.FixtureRequest) -> Engine:
    return _engines(request, request.param)


def test_demo_map_matches_the_real_schema(site_engine: Engine) -> None:
    dm = parse_datamap(DEMO, "site.yaml")
    before = [t.name for t in dm.tables_in_dependency_order()]
    dm.validate_against(site_engine)
    order = [t.name for t in dm.tables_in_dependency_order()]
    assert order[-1] == "members"
    assert sorted(order) == sorted(before)
    # Real foreign keys between mapped tables order the deletions.
    assert order.index("counselling_records") < order.index("counselling_bookings")
    assert order.index("tax_invoices") < order.index("payments")


def test_unknown_table(site_engine: Engine) -> None:
    bad = edit("  complaints:\n", "  grievances:\n")
    dm = parse_datamap(bad, "site.yaml")
    with pytest.raises(DataMapError) as info:
        dm.validate_against(site_engine)
    assert info.value.line == line_of(bad, "  grievances:")
    assert "table 'grievances' does not exist" in info.value.message


def test_unknown_column(site_engine: Engine) -> None:
    bad = edit("card_last4, payer_name", "card_last4, payer_nam")
    dm = parse_datamap(bad, "site.yaml")
    with pytest.raises(DataMapError) as info:
        dm.validate_against(site_engine)
    assert info.value.line == line_of(bad, "payer_nam,")
    assert "column payments.payer_nam does not exist" in info.value.message


def test_unknown_subject_column(site_engine: Engine) -> None:
    bad = edit("withdrawn_at_column: withdrawn_at", "withdrawn_at_column: left_at")
    dm = parse_datamap(bad, "site.yaml")
    with pytest.raises(DataMapError) as info:
        dm.validate_against(site_engine)
    assert info.value.line == line_of(bad, "withdrawn_at_column: left_at")


def test_time_column_must_be_a_date(site_engine: Engine) -> None:
    bad = edit("    retain_from: paid_at", "    retain_from: method")
    dm = parse_datamap(bad, "site.yaml")
    with pytest.raises(DataMapError) as info:
        dm.validate_against(site_engine)
    assert info.value.line == line_of(bad, "retain_from: method")
    assert "not a date/time column" in info.value.message


def test_unlisted_column_is_refused(site_engine: Engine) -> None:
    bad = edit(
        "      contact: [home_phone, home_address, mobile, email]", "      contact: [mobile]"
    )
    dm = parse_datamap(bad, "site.yaml")
    with pytest.raises(DataMapError) as info:
        dm.validate_against(site_engine)
    assert "members.home_phone is not in the data map" in info.value.message
    assert info.value.line == line_of(bad, "  members:")


def test_unmapped_table_referencing_a_member(site_engine: Engine) -> None:
    start = DEMO.index("  complaints:\n")
    end = DEMO.index("  ad_displays:\n")
    bad = DEMO[:start] + DEMO[end:]
    dm = parse_datamap(bad, "site.yaml")
    with pytest.raises(DataMapError) as info:
        dm.validate_against(site_engine)
    assert "table 'complaints' references mapped table 'members'" in info.value.message
    ignored = edit("\nretention:\n", "\nignore_tables: [complaints]\n\nretention:\n", bad)
    parse_datamap(ignored, "site.yaml").validate_against(site_engine)
    elsewhere = edit(
        "\nretention:\n",
        '\nhandled_elsewhere: {complaints: "고객센터, 상담 기록 지침에 따라"}\n\nretention:\n',
        bad,
    )
    parse_datamap(elsewhere, "site.yaml").validate_against(site_engine)


def test_handled_elsewhere_is_listed_with_its_reason() -> None:
    text_ = edit(
        "\nretention:\n",
        '\nhandled_elsewhere:\n  staff: "  인사팀, 내부 관리계획에 따라  "\n  "staff_*": 인사팀\n'
        "\nretention:\n",
    )
    dm = parse_datamap(text_, "site.yaml")
    assert dm.handled_elsewhere == {"staff": "인사팀, 내부 관리계획에 따라", "staff_*": "인사팀"}
    assert dm.handled_elsewhere_reason("staff") == "인사팀, 내부 관리계획에 따라"
    assert dm.handled_elsewhere_reason("staff_login") == "인사팀"
    assert dm.handled_elsewhere_reason("members") is None
    assert dm.expand(["members", "staff"]).handled_elsewhere == dm.handled_elsewhere
    assert "staff: handled elsewhere: 인사팀, 내부 관리계획에 따라 (handled_elsewhere, not by " \
           "the lifecycle)" in list(describe(dm))  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('staff: ""', "handled_elsewhere: table 'staff' needs a reason (who handles it"),
        ('staff: "   "', "handled_elsewhere: table 'staff' needs a reason"),
        ("complaints: 고객센터", "table 'complaints' is also mapped under tables: (complaints)"),
        ('"compl*": 고객센터', "table 'compl*' is also mapped under tables: (complaints)"),
        ("ad_log: 광고팀", "table 'ad_log' is also under ignore_tables: (ad_log)"),
    ],
)
def test_handled_elsewhere_refuses_a_missing_reason_and_a_table_accounted_for_twice(
    entry: str, message: str
) -> None:
    bad = edit(
        "\nretention:\n",
        f"\nignore_tables: [ad_log]\nhandled_elsewhere:\n  {entry}\n\nretention:\n",
    )
    err = refused(bad)
    assert err.line == line_of(bad, f"  {entry}", exact=True)
    assert message in err.message


def test_handled_elsewhere_reason_must_be_text() -> None:
    bad = edit("\nretention:\n", "\nhandled_elsewhere:\n  staff: [인사팀]\n\nretention:\n")
    err = refused(bad)
    assert err.line == line_of(bad, "  staff: [인사팀]", exact=True)


# -- planning ----------------------------------------------------------------------------------


def test_periods() -> None:
    assert Period.parse("5y") == Period(years=5)
    assert Period.parse("6m") == Period.parse("6mo") == Period.parse("P6M") == Period(months=6)
    assert Period.parse("1y6mo") == Period(years=1, months=6)
    assert Period.parse("2w") == Period(days=14)
    assert Period.parse(0).is_zero and Period.parse("0d").is_zero
    jan31 = datetime(2024, 1, 31, tzinfo=UTC)
    assert Period(months=1).add_to(jan31) == datetime(2024, 2, 29, tzinfo=UTC)
    assert Period(years=5).add_to(datetime(2020, 2, 29)) == datetime(2025, 2, 28)
    assert Period(months=3).subtract_from(datetime(2024, 5, 31)) == datetime(2024, 2, 29)
    assert str(Period.parse("P1Y2M3D")) == "1y2mo3d"


MULTI = edit(
    "      payment: [amount, method, card_last4, payer_name, paid_at]",
    "      payment: [amount, method, card_last4, paid_at]\n      contact: [payer_name]",
    # Counted from the payment alone here (tax evidence has tests of its own).
    edit("    tax_evidence: true\n", ""),
)


def test_row_with_several_categories_archives_only_the_retained_ones() -> None:
    dm = parse_datamap(MULTI, "site.yaml")
    t = dm.table("payments")
    now = datetime(2025, 1, 1, tzinfo=UTC)
    plan = t.plan_row(now, now, retain_from_value=datetime(2023, 6, 1, tzinfo=UTC))
    assert plan.archive
    assert [p.category for p in plan.parts] == ["payment"]
    assert plan.destroyed_categories == ("contact",)
    assert "payer_name" not in plan.parts[0].columns
    assert plan.parts[0].columns[:2] == ("id", "member_id")
    assert plan.retain_until == datetime(2028, 6, 1, tzinfo=UTC)
    # Older than its own 5 years: nothing left to keep, the row is simply destroyed.
    old = t.plan_row(now, now, retain_from_value=datetime(2019, 6, 1))
    assert not old.archive and old.parts == () and old.retain_until is None
    # No retain_from value: counted from the purpose end.
    fresh = t.plan_row(datetime(2024, 12, 30), now)
    assert fresh.retain_until == datetime(2029, 12, 30, tzinfo=UTC)


def test_via_relation_reaches_the_member(sqlite_engine: Engine) -> None:
    via = edit(
        "  tax_invoices:\n    subject_column: member_id\n",
        "  tax_invoices:\n    via: {table: payments, column: payment_id}\n",
    )
    via = edit("    non_personal: [payment_id]\n", "    non_personal: [member_id]\n", via)
    dm: DataMap = parse_datamap(via, "site.yaml")
    dm.validate_against(sqlite_engine)
    assert [t.name for t in dm.subject_path("tax_invoices")] == ["tax_invoices", "payments"]
    now = datetime(2025, 1, 1)
    with sqlite_engine.begin() as conn:
        for mid in (1, 2):
            conn.execute(
                demo_site.members.insert().values(
                    id=mid, login_id=f"u{mid}", password_hash="x", name="n", joined_at=now
                )
            )
        conn.execute(
            demo_site.payments.insert(),
            [
                {"id": 10, "member_id": 1, "amount": 1, "method": "card", "paid_at": now},
                {"id": 20, "member_id": 2, "amount": 1, "method": "card", "paid_at": now},
            ],
        )
        conn.execute(
            demo_site.tax_invoices.insert(),
            [
                # member_id here deliberately disagrees: the via path must be what counts.
                {"id": 1, "payment_id": 10, "member_id": 2, "issued_at": now, "supply_amount": 1,
                 "vat": 0},
                {"id": 2, "payment_id": 20, "member_id": 2, "issued_at": now, "supply_amount": 1,
                 "vat": 0},
            ],
        )  # fmt: skip
    md = dm.reflect(sqlite_engine)
    inv = md.tables["tax_invoices"]
    expr = dm.member_expr("tax_invoices", md)
    with sqlite_engine.connect() as conn:
        ids = conn.execute(select(inv.c.id).where(expr.in_([1]))).scalars().all()
        pairs = conn.execute(select(inv.c.id, expr.label("m")).order_by(inv.c.id)).all()
        direct = dm.member_expr("payments", md)
        assert str(direct) == "payments.member_id"
        assert conn.execute(text("SELECT count(*) FROM tax_invoices")).scalar() == 2
    assert ids == [1]
    assert [tuple(p) for p in pairs] == [(1, 1), (2, 2)]


# -- `lifecycle datamap check`, as an operator runs it ------------------------------------------


def test_cli_check_ok_and_bad(embedded_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    offline = embedded_env.run("datamap", "check", "--offline")
    assert offline.returncode == 0, offline.stderr
    assert re.search(r"^  payment +5y  전자상거래법", offline.stdout, re.M)
    # Against a database without the site's tables: refused, naming the table and line.
    missing = embedded_env.run("datamap", "check")
    assert missing.returncode == 2
    assert "table 'members' does not exist" in missing.stderr
    assert f"{SHIPPED_DEMO_MAP}:{line_of(DEMO, '  members:')}" in missing.stderr
    # The demo keeps a consent in the lifecycle's own table, which `db upgrade` creates.
    assert "table lifecycle_consents does not exist" in missing.stderr
    assert embedded_env.run("demo", "seed", "--members", "5").returncode == 0
    assert embedded_env.run("db", "upgrade").returncode == 0
    ok = embedded_env.run("datamap", "check")
    assert_map_fits_with_demo_rrns(ok)
    assert "checked against the primary database" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit("period: 6mo", "period: forever"), encoding="utf-8")
    for res in (
        embedded_env.run("datamap", "check", "--file", str(bad)),
        embedded_env.run("datamap", "check", LIFECYCLE_DATA_MAP=str(bad)),
    ):
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert f"bad.yaml:{line_of(DEMO, 'period: 6mo')}:" in lines[0]
        assert "unbounded" in lines[0]


INHERITING = (
    "  tax_invoices:\n    subject_column: member_id\n    purpose_end: [withdrawal]\n"
    "    retain_from: issued_at\n",
    "  tax_invoices:\n    via: {table: payments, column: payment_id, parent_key: id}\n"
    "    purpose_end: [withdrawal]\n",
)


def test_a_date_less_child_inherits_its_parents_record_date() -> None:
    dm = parse_datamap(edit(*INHERITING), "site.yaml")
    inv, pay = dm.table("tax_invoices"), dm.table("payments")
    assert inv.inherits_from is pay and inv.record_source == ("payments", "paid_at")
    # It goes with its payment, never by age batches of its own.
    assert not inv.expires_by_age and inv.age_root is pay
    assert inv.record_anchored == ["tax"]
    paid = datetime(2023, 3, 10, 1, tzinfo=UTC)
    later = datetime(2026, 11, 27, tzinfo=UTC)
    assert inv.until_of("tax", later, paid) == pay.until_of("payment", later, paid)
    assert any(
        ln.startswith(
            "tax_invoices: tax -> 5y from tax_filing_deadline (inherits payments.paid_at)"
        )
        for ln in describe(dm)
    )
    # A child with a date of its own keeps it; one under an undated parent has none to take.
    assert dm.table("complaints").inherits_from is None
    bad = edit(
        "  complaints:\n    subject_column: member_id\n",
        "  complaints:\n    via: {table: guardians, column: member_id, parent_key: member_id}\n",
        edit("    retain_from: resolved_at\n", ""),
    )
    err = refused(bad)
    assert "needs the record's date" in err.message


def test_cli_shows_an_inherited_date(embedded_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "inherit.yaml"
    path.write_text(edit(*INHERITING), encoding="utf-8")
    check = embedded_env.run("datamap", "check", "--offline", "--file", str(path))
    assert check.returncode == 0, check.stderr
    assert re.search(
        r"^tax_invoices  \[purpose end: withdrawal, age\(inherits payments\.paid_at\)\]$",
        check.stdout,
        re.M,
    ), check.stdout
    assert "from tax_filing_deadline (inherited, payments.paid_at)" in check.stdout
    explain = embedded_env.run("datamap", "explain", "--file", str(path))
    assert explain.returncode == 0, explain.stderr
    assert "tax_invoices: tax -> 5y from tax_filing_deadline (inherits payments.paid_at)" in (
        explain.stdout
    )


# -- hostile YAML ------------------------------------------------------------------------------

ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["subject: *i"]
)


def _limited_memory() -> None:
    import resource

    # A regression (the tree expanded: 9**9 nodes) dies of MemoryError instead of eating the
    # shared machine's memory; the check itself needs a few tens of MB.
    resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))


def test_alias_bomb_is_refused_before_it_expands(embedded_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    err = refused(ALIAS_BOMB)
    assert "anchors (&a) are not allowed" in err.message and err.line == 1
    # Aliases alone (of a node that carries no anchor they could name) are refused as well.
    assert "aliases (*a) are not allowed" in refused("subject: *a").message
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    r = subprocess.run(
        [sys.executable, "-m", "lifecycle.cli.main", "datamap", "check", "--offline"],
        env=embedded_env.environ(LIFECYCLE_DATA_MAP=str(bomb)),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited_memory,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        f"lifecycle: error: data map {bomb}:1: not valid YAML: YAML anchors (&a) are not allowed"
    ]


def test_anchors_are_refused_too() -> None:
    bad = edit("  complaints:\n", "  complaints: &c\n")
    err = refused(bad)
    assert "anchors (&c) are not allowed" in err.message
    assert err.line == line_of(bad, "  complaints: &c")


def test_oversized_map_is_refused_without_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(DEMO + "#" * (1024 * 1024) + "\n")
    with pytest.raises(DataMapError) as info:
        load_datamap(big)
    assert str(info.value) == (
        f"data map {big}: the file is {big.stat().st_size} bytes; "
        "a data map over 1048576 bytes is refused"
    )
    err = refused(DEMO + "#" * (1024 * 1024))
    assert "a data map over 1048576 bytes is refused" in err.message


def test_orphans_option_declares_guest_values_or_opts_a_table_out() -> None:
    dm = parse_datamap(DEMO, "site.yaml")
    assert dm.table("uploaded_files").orphans == Orphans()
    block = "  uploaded_files:\n    subject_column: member_id\n"
    guests = edit(block, block + "    orphans: {guests: [0, -1], guests_below: -10}\n")
    o = parse_datamap(guests, "site.yaml").table("uploaded_files").orphans
    assert o == Orphans(True, (0, -1), -10)
    off = edit(block, block + "    orphans: false\n")
    assert not parse_datamap(off, "site.yaml").table("uploaded_files").orphans.enabled
    bad = edit(block, block + "    orphans: {guest: [0]}\n")
    err = refused(bad)
    assert err.line == line_of(bad, "orphans:") and "unknown key 'guest'" in err.message
