"""The map's consent purposes and sensitive categories (lifecycle.datamap.consents): what the
loader accepts and refuses (one line, the map's line), and the shipped maps' declarations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifecycle.datamap.loader import parse_datamap
from lifecycle.datamap.model import DataMapError
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from lifecycle.datamap.periods import Period

DEMO = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
MAPS = Path(SHIPPED_DEMO_MAP).parent
G5 = (MAPS / "gnuboard5.yaml").read_text(encoding="utf-8")
G5_OLD = (MAPS / "gnuboard5-5.6.14.yaml").read_text(encoding="utf-8")


def edit(old: str, new: str, base: str = DEMO) -> str:
    assert base.count(old) == 1, old
    return base.replace(old, new)


def refused(text: str) -> DataMapError:
    with pytest.raises(DataMapError) as info:
        parse_datamap(text, "site.yaml")
    return info.value


def line_of(text: str, needle: str) -> int:
    return next(i + 1 for i, ln in enumerate(text.splitlines()) if needle in ln)


def test_demo_declares_every_purpose() -> None:
    dm = parse_datamap(DEMO, "demo.yaml")
    kinds = {n: (p.kind, p.column, p.categories) for n, p in dm.consents.items()}
    assert kinds == {
        "marketing": ("marketing", "marketing_consent", ()),
        "counselling": ("processing", "counselling_consent_at", ("counselling",)),
        "counselling_retention": ("retention", None, ("counselling",)),
        "provision_partner": ("provision", None, ("profile", "contact")),
        "guardian": ("guardian", None, ("guardian",)),
    }
    assert dm.consents["counselling_retention"].destroys == ()
    assert dm.consents["guardian"].destroys == ("guardian",)


@pytest.mark.parametrize(
    ("old", "new", "says", "at"),
    [
        ("    kind: retention\n", "    kind: forever\n", "kind must be one of", "kind: forever"),
        ("    categories: [profile, contact]\n", "    categories: [profile, shoes]\n",
         "category 'shoes' is held by no table", "categories: [profile, shoes]"),
        ("    categories: [profile, contact]\n", "    categories: [profile, counselling]\n",
         "covers sensitive 'counselling' together with 'profile'",
         "categories: [profile, counselling]"),
        ("    kind: guardian\n", "    kind: guardian\n    recipient: partner\n",
         "recipient goes with kind: provision", "recipient: partner"),
        ('    label: "마케팅 정보 수신 및 활용 동의"\n', "", "needs label", "  marketing:"),
        ("sensitive: [counselling]\n", "sensitive: [counseling]\n",
         "sensitive: category 'counseling' is held by no table", "sensitive: [counseling]"),
    ],
)  # fmt: skip
def test_bad_consents_are_refused_in_one_line(old: str, new: str, says: str, at: str) -> None:
    bad = edit(old, new)
    err = refused(bad)
    assert says in err.message, err.message
    assert "\n" not in str(err)
    assert err.line == line_of(bad, at), (err.line, err.message)


def test_sensitive_data_is_destroyed_unless_a_retention_consent_or_statute_keeps_it() -> None:
    # Kept 10 years on the processing consent's column: refused.
    bad = edit("    consent: counselling_retention\n", "    consent: counselling_consent_at\n")
    err = refused(bad)
    assert (
        "sensitive data (민감정보, 개인정보 보호법 제23조) is destroyed at withdrawal"
        in err.message
    )
    # A processing purpose is not a retention consent.
    wrong = edit("    consent: counselling_retention\n", "    consent: counselling\n")
    assert "consent: counselling is not a retention consent" in refused(wrong).message
    # 의료법 covers a medical institution's counselling (진료) records: kept without consent.
    rule = DEMO[DEMO.index("    consent: counselling_retention\n") :].split("\n", 2)
    medical = edit(
        f"{rule[0]}\n{rule[1]}\n",
        '    legal_basis: "의료법 제22조, 시행규칙 제15조"\n',
        edit("  vat: true\n", "  vat: true\n  medical_institution: true\n"),
    )
    assert parse_datamap(medical, "site.yaml").rule("counselling").statutes == ("medical-22",)


def test_dependent_categories_with_files_are_refused() -> None:
    bad = edit("    categories: [guardian]\n", "    categories: [guardian, uploads]\n")
    err = refused(bad)
    assert "category 'uploads' names files on uploaded_files" in err.message


def test_gnuboard5_consents_complaint_anchor_and_free_fields() -> None:
    dm = parse_datamap(G5, "gnuboard5.yaml")
    assert {n: (p.kind, p.column, p.date_column) for n, p in dm.consents.items()} == {
        "mailing": ("marketing", "mb_mailling", "mb_mailling_date"),
        "sms": ("marketing", "mb_sms", "mb_sms_date"),
        "marketing": ("marketing", "mb_marketing_agree", "mb_marketing_date"),
        "thirdparty": ("provision", "mb_thirdparty_agree", "mb_thirdparty_date"),
    }
    members = dm.table("g5_member")
    assert members.columns["free_fields"] == tuple(f"mb_{i}" for i in range(1, 11))
    assert "mb_1" not in members.columns["profile"]
    assert dm.sensitive == {"free_fields"}
    # 3 years from the inquiry's own date, not from the withdrawal.
    now = datetime(2026, 12, 7, tzinfo=UTC)
    for name, col in (("g5_qa_content", "qa_datetime"), ("g5_shop_item_qa", "iq_time")):
        tm = dm.table(name)
        assert tm.anchor_of("complaint") == "record" and tm.record_source == (name, col)
        old = tm.plan_row(now - timedelta(days=2), now, now - timedelta(days=365 * 3 + 30))
        assert "complaint" in old.destroyed_categories
        recent = tm.plan_row(now - timedelta(days=2), now, now - timedelta(days=365))
        (part,) = recent.parts
        assert part.retain_until == Period(years=3).add_to(now - timedelta(days=365))
    old_map = parse_datamap(G5_OLD, "gnuboard5-5.6.14.yaml")
    assert sorted(old_map.consents) == ["mailing", "sms"]
    assert old_map.table("g5_qa_content").anchor_of("complaint") == "record"
