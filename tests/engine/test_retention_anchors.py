"""Retention anchors and consent on a real primary (PostgreSQL, then MariaDB), the real sweep.

An active member's payment past its period goes (independent of withdrawal), a recent one
stays; a withdrawn member's tax invoice of 5 January 2026 is archived until 5 years after its
filing deadline (corporation, then individual business); counselling notes are archived only
under a recorded separate consent; `sweep --dry-run` lists all of it first."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    insert,
    text,
)

from lifecycle.core.settings import reset_settings_cache
from lifecycle.datamap.anchors import TAX_TZ
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.preview import sweep_preview
from lifecycle.engine.sweep import run_sweep
from lifecycle.ops.demo_seed import create_schema
from models import demo_site as T
from models.consents import Consent
from tests.helpers import LifecycleEnv, accounting, site_engine
from tests.helpers import sql_rows as _q

NOW = datetime.now(UTC)
INVOICE_DAY = datetime(2026, 1, 5, 10, tzinfo=TAX_TZ).astimezone(UTC)


def _member(c, mid: int, *, withdrawn: bool = False, consent: bool = False,  # type: ignore[no-untyped-def]
            processing: bool = False) -> None:  # fmt: skip
    c.execute(
        insert(T.members).values(
            id=mid, login_id=f"anchor{mid}", password_hash="x", name="김테스트",
            joined_at=NOW - timedelta(days=3000),
            status="withdrawn" if withdrawn else "active",
            withdrawn_at=NOW - timedelta(days=10) if withdrawn else None,
            counselling_consent_at=NOW - timedelta(days=900) if consent or processing else None,
        )
    )  # fmt: skip
    if consent:
        # Keeping the records after leaving is a consent of its own (the demo keeps it in the
        # lifecycle's table); the processing consent above alone keeps nothing.
        c.execute(insert(Consent.__table__).values(
            member_id=mid, purpose="counselling_retention", text_version="v1",
            given_at=NOW - timedelta(days=900), source="lifecycle", recorded_at=NOW,
        ))  # fmt: skip


def _payment(c, pid: int, mid: int, at: datetime) -> None:  # type: ignore[no-untyped-def]
    c.execute(insert(T.payments).values(id=pid, member_id=mid, amount=50000, method="card",
                                        payer_name="김테스트", paid_at=at))  # fmt: skip


def _counselling(c, bid: int, mid: int) -> None:  # type: ignore[no-untyped-def]
    at = NOW - timedelta(days=400)
    c.execute(insert(T.counselling_bookings).values(id=bid, member_id=mid, counsellor="박상담",
                                                    scheduled_at=at, status="done"))  # fmt: skip
    c.execute(
        insert(T.counselling_records).values(
            id=bid, member_id=mid, booking_id=bid, session_at=at, counsellor="박상담", notes="상담"
        )
    )


def _archived(archive: str, table: str, pk: int) -> list[tuple]:  # type: ignore[type-arg]
    return _q(
        archive,
        "SELECT category, retain_until FROM archive_records WHERE source_table = :t AND "
        "source_pk = :pk ORDER BY category",
        t=table,
        pk=str(pk),
    )


@pytest.fixture
def site(primary_env: LifecycleEnv):  # type: ignore[no-untyped-def]
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    eng = site_engine(primary)
    create_schema(eng)  # the demo site's tables, no members
    eng.dispose()
    clear_context_cache()
    yield primary_env
    clear_context_cache()


def _use_map(env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, business: str) -> None:
    path = env.var_dir / f"map-{business}.yaml"
    text_ = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
    path.write_text(text_.replace("  type: individual ", f"  type: {business} "), "utf-8")
    env.vars["LIFECYCLE_DATA_MAP"] = str(path)
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(path))
    reset_settings_cache()
    clear_context_cache()


def test_anchors_and_consent_in_the_sweep(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = site.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    eng = site_engine(primary)
    with eng.begin() as c:
        _member(c, 1)  # active
        _member(c, 2, withdrawn=True, consent=True)
        # The consent to process counselling records is not a consent to keep them.
        _member(c, 3, withdrawn=True, processing=True)
        # Over six years old: past 5 years from the payment and from its tax deadline (at most
        # 17 months after the payment) alike. Two years old: well inside both.
        _payment(c, 11, 1, NOW - timedelta(days=365 * 6 + 200))
        _payment(c, 12, 1, NOW - timedelta(days=365 * 2))
        _payment(c, 21, 2, INVOICE_DAY)
        c.execute(
            insert(T.tax_invoices).values(
                id=21, payment_id=21, member_id=2, issued_at=INVOICE_DAY, supply_amount=45455,
                vat=4545, buyer_name="김테스트",
            )
        )  # fmt: skip
        _counselling(c, 31, 1)
        _counselling(c, 32, 2)
        _counselling(c, 33, 3)
    _use_map(site, monkeypatch, "corporation")

    dry = site.run("sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()

    def listed(phase: str, table: str, cat: str, action: str, rows: int) -> bool:
        pat = rf"^{phase}\s+{table}\s+{cat}\s+{action}\s+{rows}\b"
        return any(re.match(pat, ln) for ln in lines)

    assert listed("age", "payments", "payment", "destroy", 1), dry.stdout
    assert listed("withdrawal", "tax_invoices", "tax", "archive", 1), dry.stdout
    assert listed("withdrawal", "counselling_records", "counselling", "archive", 1), dry.stdout
    assert listed("withdrawal", "counselling_records", "counselling", "destroy", 1), dry.stdout
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM payments")).scalar_one() == 3

    out = run_sweep(get_context())
    assert out["batches"] == out["batches_done"]
    with eng.connect() as c:
        pays = sorted(r[0] for r in c.execute(text("SELECT id FROM payments")))
        notes = sorted(r[0] for r in c.execute(text("SELECT id FROM counselling_records")))
        members = sorted(r[0] for r in c.execute(text("SELECT id FROM members")))
    # The active member's old payment is gone, the recent one and their notes stay live.
    assert pays == [12] and notes == [31] and members == [1]
    assert _archived(archive, "payments", 11) == []
    # Corporation (business year ending 31 Dec): 법인세 due 31 March 2027, 5 years on.
    [(cat, until)] = _archived(archive, "tax_invoices", 21)
    assert cat == "tax" and until == date(2032, 3, 31) and until >= date(2031, 7, 25)
    # The payment is tax evidence: kept as long as its invoice.
    assert _archived(archive, "payments", 21) == [("payment", date(2032, 3, 31))]
    # Counselling notes: archived under the recorded retention consent (with the processing
    # consent itself); the other member's destroyed although they consented to processing.
    assert [c for c, _u in _archived(archive, "counselling_records", 32)] == ["counselling"]
    assert _archived(archive, "counselling_records", 33) == []
    assert [c for c, _u in _archived(archive, "members", 2)] == ["counselling"]
    assert _archived(archive, "members", 3) == []
    # Ledger: every archive entry cites its rule's basis.
    bases = [
        b for (b,) in _q(archive, "SELECT legal_basis FROM ledger_entries WHERE action = 'archive'")
    ]
    assert any("국세기본법" in b for b in bases)
    assert any("제23조" in b for b in bases)

    # Individual business: 종합소득세 due 31 May 2027, so the invoice is kept to 31 May 2032.
    with eng.begin() as c:
        _member(c, 4, withdrawn=True)
        _payment(c, 41, 4, INVOICE_DAY)
        c.execute(insert(T.tax_invoices).values(id=41, payment_id=41, member_id=4,
                  issued_at=INVOICE_DAY, supply_amount=45455, vat=4545))  # fmt: skip
    _use_map(site, monkeypatch, "individual")
    run_sweep(get_context())
    assert _archived(archive, "tax_invoices", 41) == [("tax", date(2032, 5, 31))]
    eng.dispose()


def test_a_row_freed_during_the_run_waits_for_the_next_one(site: LifecycleEnv) -> None:
    """Old payments 51..53 of an active member, 52 referenced by its old tax invoice: the run
    takes 51, 53 and the invoice (what its dry run lists), not 52, although 52 lies inside a
    planned id range and is free once the invoice has gone; the next run takes 52."""
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    old = NOW - timedelta(days=365 * 7)
    eng = site_engine(primary)
    with eng.begin() as c:
        _member(c, 5)
        for pid in (51, 52, 53):
            _payment(c, pid, 5, old)
        c.execute(insert(T.tax_invoices).values(id=52, payment_id=52, member_id=5,
                  issued_at=old, supply_amount=45455, vat=4545))  # fmt: skip

    def forecast() -> dict[tuple[str, str, str], int]:
        return {(ln.table, ln.category, ln.action): ln.rows for ln in sweep_preview(get_context())}

    assert forecast() == {
        ("payments", "payment", "destroy"): 2,
        ("tax_invoices", "tax", "destroy"): 1,
    }
    run_sweep(get_context())
    with eng.connect() as c:
        assert [r[0] for r in c.execute(text("SELECT id FROM payments"))] == [52]
        assert c.execute(text("SELECT count(*) FROM tax_invoices")).scalar_one() == 0
    assert forecast() == {("payments", "payment", "destroy"): 1}
    run_sweep(get_context())
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM payments")).scalar_one() == 0
    assert forecast() == {}
    eng.dispose()


def _use_inheriting_map(env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo map with tax invoices as a date-less child of their payment (``via``, no
    ``retain_from``): they take the payment's date."""
    shipped = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
    block = (
        "  tax_invoices:\n    subject_column: member_id\n    purpose_end: [withdrawal]\n"
        "    retain_from: issued_at\n"
    )
    assert shipped.count(block) == 1 and shipped.count("non_personal: [payment_id]") == 1
    path = env.var_dir / "map-inherit.yaml"
    path.write_text(
        shipped.replace(
            block,
            "  tax_invoices:\n    via: {table: payments, column: payment_id, parent_key: id}\n"
            "    purpose_end: [withdrawal]\n",
        ).replace("non_personal: [payment_id]", "non_personal: [payment_id, member_id]"),
        "utf-8",
    )
    env.vars["LIFECYCLE_DATA_MAP"] = str(path)
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(path))
    reset_settings_cache()
    clear_context_cache()


def _invoice(c, iid: int, pid: int, mid: int, at: datetime) -> None:  # type: ignore[no-untyped-def]
    c.execute(insert(T.tax_invoices).values(id=iid, payment_id=pid, member_id=mid, issued_at=at,
                                            supply_amount=45455, vat=4545))  # fmt: skip


def test_a_date_less_child_ends_by_age_with_its_parent(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An active member's 7-year-old payment and its invoice (no date of its own) go in the
    age phase together, as the dry run lists; a 2-year-old payment and its invoice stay."""
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = site.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    eng = site_engine(primary)
    old, recent = NOW - timedelta(days=365 * 7), NOW - timedelta(days=365 * 2)
    with eng.begin() as c:
        _member(c, 6)
        _payment(c, 61, 6, old)
        _payment(c, 62, 6, recent)
        # The invoices' own issue days are ignored: the map gives them no date.
        _invoice(c, 61, 61, 6, recent)
        _invoice(c, 62, 62, 6, old)
    _use_inheriting_map(site, monkeypatch)

    def forecast() -> dict[tuple[str, str, str, str], int]:
        return {
            (ln.phase, ln.table, ln.category, ln.action): ln.rows
            for ln in sweep_preview(get_context())
        }

    assert forecast() == {
        ("age", "payments", "payment", "destroy"): 1,
        ("age", "tax_invoices", "tax", "destroy"): 1,
    }
    dry = site.run("sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert any(re.match(r"^age\s+tax_invoices\s+tax\s+destroy\s+1\b", ln)
               for ln in dry.stdout.splitlines()), dry.stdout  # fmt: skip
    out = run_sweep(get_context())
    assert out["batches"] == out["batches_done"]
    with eng.connect() as c:
        assert [r[0] for r in c.execute(text("SELECT id FROM payments"))] == [62]
        assert [r[0] for r in c.execute(text("SELECT id FROM tax_invoices"))] == [62]
    eng.dispose()
    acc = accounting(primary, archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.ledger_destroy[("tax_invoices", "tax")] == 1
    assert acc.ledger_destroy[("payments", "payment")] == 1
    assert forecast() == {}


def test_a_date_less_child_keeps_its_parents_date_at_withdrawal(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A withdrawn member's invoice of a March 2023 payment is archived until the payment's
    own retain_until (its tax deadline, 5 years on), not 5 years from the withdrawal's."""
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = site.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    paid = datetime(2023, 3, 10, 10, tzinfo=TAX_TZ).astimezone(UTC)
    eng = site_engine(primary)
    with eng.begin() as c:
        _member(c, 7, withdrawn=True)
        _payment(c, 71, 7, paid)
        _invoice(c, 71, 71, 7, NOW - timedelta(days=20))
    _use_inheriting_map(site, monkeypatch)
    run_sweep(get_context())
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM tax_invoices")).scalar_one() == 0
    eng.dispose()
    # Individual business: 2023's 종합소득세 due 31 May 2024, kept 5 years on.
    assert _archived(archive, "payments", 71) == [("payment", date(2029, 5, 31))]
    assert _archived(archive, "tax_invoices", 71) == [("tax", date(2029, 5, 31))]


def test_a_dated_grandchild_keeps_the_parent_of_its_date_less_parent(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A note with a date of its own on an old payment's invoice keeps the invoice, and so
    the payment, in place; the other old payment goes with its invoice."""
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    eng = site_engine(primary)
    notes = Table(
        "invoice_notes",
        MetaData(),
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("invoice_id", BigInteger, nullable=False),
        Column("noted_at", DateTime(timezone=True), nullable=False),
        Column("body", String(100)),
    )
    notes.create(eng)
    old = NOW - timedelta(days=365 * 7)
    with eng.begin() as c:
        _member(c, 8)
        for pid in (81, 82):
            _payment(c, pid, 8, old)
            _invoice(c, pid, pid, 8, old)
        c.execute(insert(notes).values(id=1, invoice_id=81, noted_at=NOW, body="메모"))
    _use_inheriting_map(site, monkeypatch)
    path = Path(site.vars["LIFECYCLE_DATA_MAP"])
    path.write_text(
        path.read_text("utf-8").replace(
            "\n  complaints:\n",
            "\n  invoice_notes:\n    via: {table: tax_invoices, column: invoice_id, "
            "parent_key: id}\n    purpose_end: [withdrawal]\n    retain_from: noted_at\n"
            "    columns:\n      payment: [body, noted_at]\n\n  complaints:\n",
        ),
        "utf-8",
    )
    clear_context_cache()
    assert {
        (ln.phase, ln.table, ln.category, ln.action): ln.rows for ln in sweep_preview(get_context())
    } == {
        ("age", "payments", "payment", "destroy"): 1,
        ("age", "tax_invoices", "tax", "destroy"): 1,
    }
    run_sweep(get_context())
    with eng.connect() as c:
        assert [r[0] for r in c.execute(text("SELECT id FROM payments"))] == [81]
        assert [r[0] for r in c.execute(text("SELECT id FROM tax_invoices"))] == [81]
        assert c.execute(text("SELECT count(*) FROM invoice_notes")).scalar_one() == 1
    eng.dispose()
