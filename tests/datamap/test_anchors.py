"""Retention anchors (the tax filing deadline, the record's own date) and checked legal bases.

Pure: the deadline arithmetic, the map language for anchors, statutes and consent, and the
sweep's fast planner agreeing with the map's own decision. No database except one SQLite
schema check."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from lifecycle.datamap.anchors import (
    TAX_TZ,
    TaxProfile,
    filing_deadline,
    income_deadline,
    tax_cutoff,
    tax_retain_until,
    vat_deadline,
)
from lifecycle.datamap.loader import parse_datamap
from lifecycle.datamap.model import DataMapError
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from lifecycle.datamap.periods import Period
from lifecycle.datamap.statutes import cited
from lifecycle.engine.selection import RowPlanner, selected_columns
from models import demo_site

DEMO = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
Y5 = Period(years=5)
INDIVIDUAL = TaxProfile("individual")
CORP = TaxProfile("corporation")


def kst(y: int, m: int, d: int, hh: int = 12) -> datetime:
    return datetime(y, m, d, hh, tzinfo=TAX_TZ).astimezone(UTC)


def last_day(until: datetime) -> date:
    """The Korean day a retain_until falls on (the archive's retain_until)."""
    return until.astimezone(TAX_TZ).date()


def edit(old: str, new: str, base: str = DEMO) -> str:
    assert base.count(old) == 1, old
    return base.replace(old, new)


def refused(text: str) -> DataMapError:
    with pytest.raises(DataMapError) as info:
        parse_datamap(text, "site.yaml")
    assert "\n" not in str(info.value)
    return info.value


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


# -- filing deadlines --------------------------------------------------------------------------


def test_vat_both_halves_of_the_year() -> None:
    assert vat_deadline(date(2026, 1, 1)) == date(2026, 7, 25)
    assert vat_deadline(date(2026, 6, 30)) == date(2026, 7, 25)
    assert vat_deadline(date(2026, 7, 1)) == date(2027, 1, 25)
    assert vat_deadline(date(2026, 12, 31)) == date(2027, 1, 25)


def test_individual_and_corporation_switch() -> None:
    day = date(2026, 1, 5)
    assert income_deadline(day, INDIVIDUAL) == date(2027, 5, 31)
    assert income_deadline(day, TaxProfile("individual", faithful_filing=True)) == date(2027, 6, 30)
    assert income_deadline(day, CORP) == date(2027, 3, 31)
    # A record serving VAT and income tax keeps the later deadline.
    assert filing_deadline(day, INDIVIDUAL) == date(2027, 5, 31)
    assert filing_deadline(day, TaxProfile("individual", vat=False)) == date(2027, 5, 31)


def test_non_december_fiscal_year_end() -> None:
    june = TaxProfile("corporation", (6, 30))
    assert income_deadline(date(2026, 1, 5), june) == date(2026, 9, 30)
    assert income_deadline(date(2026, 6, 30), june) == date(2026, 9, 30)
    assert income_deadline(date(2026, 7, 1), june) == date(2027, 9, 30)
    march = TaxProfile("corporation", (3, 31))
    # Business year ending 31 March: 법인세 due 30 June, before the VAT deadline of 25 July.
    assert income_deadline(date(2026, 3, 15), march) == date(2026, 6, 30)
    assert filing_deadline(date(2026, 3, 15), march) == date(2026, 7, 25)
    assert filing_deadline(date(2026, 3, 15), TaxProfile("corporation", (3, 31), vat=False)) == (
        date(2026, 6, 30)
    )


def test_leap_years() -> None:
    november = TaxProfile("corporation", (11, 30))
    # Year ending 30 Nov 2027: due the last day of February 2028, a leap year.
    assert income_deadline(date(2027, 5, 1), november) == date(2028, 2, 29)
    assert income_deadline(date(2026, 5, 1), november) == date(2027, 2, 28)
    # Five years on from 29 Feb 2028 is 28 Feb 2033, kept through that whole day.
    until = tax_retain_until(kst(2027, 5, 1), Y5, TaxProfile("corporation", (11, 30), vat=False))
    assert last_day(until) == date(2033, 2, 28)
    # A business year ending 29 February ends on 28 February in other years.
    feb = TaxProfile("corporation", (2, 29))
    assert income_deadline(date(2027, 1, 10), feb) == date(2027, 5, 31)
    assert income_deadline(date(2028, 2, 29), feb) == date(2028, 5, 31)
    assert income_deadline(date(2028, 3, 1), feb) == date(2029, 5, 31)


def test_acceptance_invoice_of_5_january_2026() -> None:
    inv = kst(2026, 1, 5, 10)
    corp = tax_retain_until(inv, Y5, CORP)
    ind = tax_retain_until(inv, Y5, INDIVIDUAL)
    assert last_day(corp) >= date(2031, 7, 25) and last_day(corp) == date(2032, 3, 31)
    assert last_day(ind) == date(2032, 5, 31)
    # Kept through the whole deadline day in Asia/Seoul.
    assert ind.astimezone(TAX_TZ).time().hour == 23
    assert ind > datetime(2032, 5, 31, 23, 59, 59, tzinfo=TAX_TZ)


def test_korean_day_decides_the_period() -> None:
    # 23:30 UTC on 30 June is 08:30 on 1 July in Seoul: the second VAT period (later).
    late = datetime(2026, 6, 30, 23, 30, tzinfo=UTC)
    only_vat = TaxProfile("corporation", (6, 30), vat=True)
    assert filing_deadline(date(2026, 7, 1), only_vat) == date(2027, 9, 30)
    assert last_day(tax_retain_until(late, Y5, only_vat)) == date(2032, 9, 30)
    # A naive timestamp is read as UTC.
    assert tax_retain_until(late.replace(tzinfo=None), Y5, only_vat) == tax_retain_until(
        late, Y5, only_vat
    )


@pytest.mark.parametrize(
    "profile",
    [INDIVIDUAL, CORP, TaxProfile("corporation", (6, 30)), TaxProfile("individual", vat=False)],
)
def test_cutoff_splits_expired_from_kept_records(profile: TaxProfile) -> None:
    for now in (datetime(2031, 7, 25, 15, 30, tzinfo=UTC), datetime(2032, 3, 1, tzinfo=UTC),
                datetime(2033, 1, 26, 2, tzinfo=UTC)):  # fmt: skip
        cut = tax_cutoff(now, Y5, profile)
        for delta in (timedelta(seconds=-1), timedelta(0), timedelta(days=1), timedelta(days=-40)):
            record = cut + delta
            expired = tax_retain_until(record, Y5, profile) <= now
            assert expired == (record < cut), (profile, now, record)


# -- the map: anchors --------------------------------------------------------------------------


def test_shipped_map_anchors() -> None:
    dm = parse_datamap(DEMO, "site.yaml")
    inv = dm.table("tax_invoices")
    assert inv.anchor_of("tax") == "tax_filing_deadline"
    assert dm.table("payments").anchor_of("payment") == "record"
    assert dm.table("payments").tax_evidence
    assert dm.business == INDIVIDUAL
    for name, col in [("payments", "paid_at"), ("tax_invoices", "issued_at"),
                      ("contracts", "ended_at"), ("complaints", "resolved_at"),
                      ("ad_displays", "shown_at")]:  # fmt: skip
        assert dm.table(name).age_column == col, name
    assert dm.table("counselling_records").age_column is None
    now = datetime(2026, 11, 26, tzinfo=UTC)
    plan = inv.plan_row(now, now, retain_from_value=kst(2026, 1, 5, 10))
    assert last_day(plan.retain_until) == date(2032, 5, 31)
    corp = parse_datamap(edit("  type: individual ", "  type: corporation "), "site.yaml")
    plan = corp.table("tax_invoices").plan_row(now, now, retain_from_value=kst(2026, 1, 5, 10))
    assert last_day(plan.retain_until) == date(2032, 3, 31)
    # Payments are tax evidence: 5 years from the payment, or from its filing deadline if later.
    pay = dm.table("payments").plan_row(now, now, retain_from_value=kst(2026, 1, 5, 10))
    assert last_day(pay.retain_until) == date(2032, 5, 31)


def test_tax_rule_must_count_from_the_filing_deadline() -> None:
    bad = edit("    from: tax_filing_deadline\n", "    from: record\n")
    err = refused(bad)
    assert "국세기본법 제85조의3 counts the period from tax_filing_deadline" in err.message
    assert err.line == line_of(bad, 'legal_basis: "국세기본법') - 1


def test_record_anchor_needs_the_records_date() -> None:
    bad = edit(
        "    # 3 years from the resolution; an open complaint stays.\n"
        "    retain_from: resolved_at\n",
        "",
    )
    err = refused(bad)
    assert "category 'complaint' counts from record" in err.message
    assert "retain_from" in err.message
    assert err.line == line_of(bad, "      complaint: [filed_at")


def test_unknown_anchor_and_business_type() -> None:
    err = refused(edit("    from: tax_filing_deadline\n", "    from: invoice_day\n"))
    assert "from: 'invoice_day' is not one of" in err.message
    err = refused(edit("  type: individual ", "  type: partnership "))
    assert "business.type" in err.message
    err = refused(edit("  vat: true\n", "  vat: true\n  fiscal_year_end: 13-01\n"))
    assert "business.fiscal_year_end" in err.message


# -- the map: legal bases ----------------------------------------------------------------------


COUNSELLING = """  counselling:
    period: 10y
    consent: counselling_retention
    legal_basis: "정보주체의 별도 보존 동의 (개인정보 보호법 제21조제1항, 제23조제1항제1호)"
"""


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ('    period: 10y\n    legal_basis: "내부 방침: 상담기록 보존"\n', "cites no statute"),
        ('    period: 10y\n    legal_basis: "internal policy"\n', "internal policy is no legal"),
        ('    period: 10y\n    legal_basis: "근로기준법 제42조"\n', "cites no statute"),
        ('    period: 3y\n    legal_basis: "전자상거래법 제99조"\n', "no article the list has"),
        # A law is checked for the kind of record it covers, not only its article and period.
        ('    period: 5y\n    legal_basis: "전자상거래법 제6조, 시행령 제6조"\n',
         "전자상거래법 제6조 does not cover 'counselling'; it keeps contract, payment"),
        ('    period: 10y\n    legal_basis: "상법 제33조"\n',
         "상법 제33조 does not cover 'counselling'; it keeps contract, payment, tax records"),
        ('    period: 10y\n    legal_basis: "의료법 제22조 (진료기록부)"\n',
         "binds only a medical institution"),
        ('    period: 1y\n    legal_basis: "개인정보 보호법 제21조"\n', "allows for it (0d)"),
    ],
)  # fmt: skip
def test_rule_without_a_listed_statute_is_refused(rule: str, says: str) -> None:
    bad = edit(COUNSELLING, "  counselling:\n" + rule)
    err = refused(bad)
    assert says in err.message, err.message
    assert err.message.startswith("retention rule 'counselling'")
    assert err.line == line_of(bad, "    legal_basis:" + rule.split("legal_basis:")[1].rstrip())


def test_per_category_maximum_and_medical_institutions() -> None:
    bad = edit("    period: 6mo\n    from: record\n", "    period: 1y\n    from: record\n")
    assert "1y is longer than 전자상거래법 제6조 allows for it (6mo)" in refused(bad).message
    medical = edit(
        COUNSELLING,
        '  counselling:\n    period: 10y\n    legal_basis: "의료법 제22조, 시행규칙 제15조"\n',
        edit("  vat: true\n", "  vat: true\n  medical_institution: true\n"),
    )
    dm = parse_datamap(medical, "site.yaml")
    assert dm.rule("counselling").statutes == ("medical-22",)


def test_a_law_keeps_only_the_kinds_of_record_it_covers() -> None:
    line = next(ln for ln in DEMO.splitlines() if ln.startswith("  profile: {period: 0d"))
    profile = edit(line, '  profile: {period: 5y, legal_basis: "전자상거래법 제6조, 시행령 제6조"}')
    err = refused(profile)
    assert err.message == (
        "retention rule 'profile': 전자상거래법 제6조 does not cover 'profile'; it keeps "
        "contract, payment, complaint, advertising records"
    )
    assert err.line == line_of(profile, "  profile: {period: 5y")
    # A category of the site's own says which kind of record it is; the law must cover that.
    own = edit("\nretention:\n", "\ncategories: [{orders: contract}, notes]\nretention:\n"
               '  orders: {period: 5y, legal_basis: "전자상거래법 제6조"}\n'
               '  notes: {period: 5y, legal_basis: "전자상거래법 제6조"}\n')  # fmt: skip
    own = edit("      hobbies: [hobbies]\n", "      hobbies: [hobbies]\n      orders: [job]\n"
               "      notes: [company]\n", own).replace("        - job\n", "").replace(
        "        - company\n", "")  # fmt: skip
    err = refused(own)
    assert "retention rule 'notes': 전자상거래법 제6조 does not cover 'notes'" in err.message
    ok = parse_datamap(own.replace('  notes: {period: 5y, legal_basis: "전자상거래법 제6조"}',
                                   '  notes: {period: 0d, legal_basis: "개인정보 보호법 제21조"}'),
                       "site.yaml")  # fmt: skip
    assert ok.rule("orders").statutes == ("ecommerce-6",)


def test_citations_are_read_law_by_law() -> None:
    assert [s.id for s in cited("전자상거래법 제6조, 시행령 제6조 (기록)")] == ["ecommerce-6"]
    # "상법" inside "전자상거래법" is not the 상법, and an article belongs to the law before it.
    assert cited("전자상거래법 제33조") == []
    assert [s.id for s in cited("전자상거래법 제6조; 상법 제33조")] == [
        "ecommerce-6",
        "commercial-33",
    ]
    assert [s.id for s in cited("국세기본법 제 85 조의 3")] == ["framework-tax-85-3"]
    assert cited("국세기본법 제85조") == []


def test_consent_rule_names_its_purpose_and_is_checked_against_the_schema(
    tmp_path: Path,
) -> None:
    dm = parse_datamap(DEMO, "site.yaml")
    assert dm.rule("counselling").basis_ref == "consent:counselling_retention"
    bare = parse_datamap(
        edit(COUNSELLING, "  counselling:\n    period: 10y\n    consent: counselling_retention\n"),
        "site.yaml",
    )
    assert "counselling_retention" in bare.rule("counselling").legal_basis
    # The consent to process counselling records is not a consent to keep them after leaving.
    column = edit(
        COUNSELLING, "  counselling:\n    period: 10y\n    consent: counselling_consent_at\n"
    )
    err = refused(column)
    assert "sensitive data (민감정보, 개인정보 보호법 제23조)" in err.message
    assert err.line == line_of(column, "consent: counselling_consent_at")
    wrong = edit(COUNSELLING, "  counselling:\n    period: 10y\n    consent: marketing\n")
    assert "consent: marketing is not a retention consent" in refused(wrong).message
    # A category that is not sensitive may still name the site's consent column.
    plain = edit("sensitive: [counselling]\n", "", edit(
        "    kind: processing\n", "    kind: marketing\n", column))  # fmt: skip
    dm_plain = parse_datamap(plain, "site.yaml")
    assert dm_plain.rule("counselling").basis_ref == "consent:counselling_consent_at"
    eng = create_engine(f"sqlite:///{tmp_path / 'site.sqlite3'}")
    demo_site.metadata.create_all(eng)
    from models.consents import Consent

    Consent.__table__.create(eng)
    dm.validate_against(eng)
    bad = edit("    column: marketing_consent\n", "    column: marketing_consnt\n")
    with pytest.raises(DataMapError) as info:
        parse_datamap(bad, "site.yaml").validate_against(eng)
    assert "column members.marketing_consnt does not exist" in info.value.message
    assert info.value.line == line_of(bad, "column: marketing_consnt")


def test_consent_decides_what_counselling_keeps() -> None:
    dm = parse_datamap(DEMO, "site.yaml")
    rec = dm.table("counselling_records")
    now = datetime(2026, 11, 26, tzinfo=UTC)
    ended = now - timedelta(days=6)
    given = rec.plan_row(ended, now, consent={"counselling_retention": now - timedelta(days=900)})
    assert [p.category for p in given.parts] == ["counselling"]
    assert given.retain_until == Period(years=10).add_to(ended)
    for none in (None, {"counselling_retention": None}, {}):
        plan = rec.plan_row(ended, now, consent=none)
        assert not plan.archive and plan.destroyed_categories == ("counselling",)


def test_fast_planner_agrees_with_the_map() -> None:
    dm = parse_datamap(DEMO, "site.yaml")
    now = datetime(2026, 11, 26, 3, tzinfo=UTC)
    ended = now - timedelta(days=3)
    for name in ("payments", "tax_invoices", "counselling_records", "members", "complaints"):
        tm = dm.table(name)
        cols = selected_columns(tm)
        planner = RowPlanner(dm, tm, cols)
        for days in (1, 200, 365 * 5, 365 * 5 + 200, 365 * 6 + 180, 365 * 7):
            rec = now - timedelta(days=days, hours=7)
            row = tuple(rec if c == tm.retain_from else None for c in cols)
            for consent in ({"counselling_retention": now}, None):
                want = tm.plan_row(ended, now, rec if tm.retain_from else None, consent)
                parts, destroyed = planner.plan(row, ended, now, consent)
                assert [(p.category, p.retain_until) for p in parts] == [
                    (p.category, p.retain_until) for p in want.parts
                ], (name, days)
                assert destroyed == want.destroyed_categories
