"""A former member withdraws the retention consent that keeps their archived records (개인정보
보호법 제37조, 제21조), on both primaries: through the CLI and through the website's request
outbox, the one request runner destroys the archived records the consent kept (a crash between
its steps resumes once), keeps what a statute keeps and says so, closes the history, writes the
ledger and the access log; `lifecycle ledger replay` deletes them again after the archive is
restored. Website-submitted erasure and suspension requests write their access-log entry too."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select

from models.demo_site import counselling_bookings, counselling_records, payments
from tests.helpers import LifecycleEnv, add_members, create_demo_schema, wait_error_line

GIVEN = datetime(2025, 3, 1, tzinfo=UTC)
RETENTION = "counselling_retention"


def _former_with_records(eng: Engine, mid: int) -> None:
    """Member ``mid`` gave the processing and the retention consent, holds counselling
    records and a payment, and withdraws: the records and the payment are archived."""
    from lifecycle.engine.context import clear_context_cache, get_context
    from lifecycle.rights.consent import give_consent
    from lifecycle.rights.withdrawal import carry_out, submit_withdrawal

    add_members(eng, 1, start=mid, counselling_consent_at=GIVEN, hobbies="등산")
    with eng.begin() as c:
        bid = c.execute(
            counselling_bookings.insert().values(
                member_id=mid, counsellor="박상담", scheduled_at=GIVEN, status="done"
            )
        ).inserted_primary_key[0]
        for n in range(2):
            c.execute(
                counselling_records.insert().values(
                    member_id=mid, booking_id=bid, session_at=GIVEN, counsellor="박상담",
                    notes=f"상담 기록 {n}", diagnosis="불안",
                )
            )  # fmt: skip
        c.execute(
            payments.insert().values(
                member_id=mid, amount=50000, method="card", card_last4="1234",
                payer_name="회원", paid_at=datetime.now(UTC),
            )
        )  # fmt: skip
    give_consent(mid, RETENTION, "v1", given_at=GIVEN)
    clear_context_cache()
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)
    assert carry_out(ctx, rid)["state"] == "completed"


def _archived(mid: int) -> dict[str, int]:
    """category -> the member's archived records."""
    from lifecycle.core.db import session
    from lifecycle.vault import keystore
    from models.archive import ArchivedRecord as R

    with session("archive") as a:
        ref = keystore.subject_ref(a, mid)
        rows = a.execute(
            select(R.category, func.count()).where(R.subject_ref == ref).group_by(R.category)
        ).all()
    return {str(c): int(n) for c, n in rows}


def _archived_rows(mid: int, category: str) -> list[dict[str, Any]]:
    from lifecycle.core.db import session
    from lifecycle.vault import keystore
    from models.archive import ArchivedRecord as R

    with session("archive") as a:
        ref = keystore.subject_ref(a, mid)
        t = R.__table__
        q = select(t).where(t.c.subject_ref == ref, t.c.category == category)
        return [dict(r) for r in a.execute(q).mappings()]


def _entries(action: str, request_id: int | None = None) -> list[dict[str, Any]]:
    import json

    from lifecycle.core.db import session
    from models.archive import LedgerEntry as E

    with session("archive") as a:
        q = select(E.details, E.request_id).where(E.action == action).order_by(E.seq)
        rows = a.execute(q).all()
    out = [(json.loads(d) if isinstance(d, str) else d, r) for d, r in rows]
    return [d for d, r in out if request_id is None or r == request_id]


def _access(request_id: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    import json

    from lifecycle.core.db import session
    from models.guards import AccessLogEntry as L

    with session("archive") as a:
        rows = a.execute(
            select(L.operator, L.kind, L.action, L.details)
            .where(L.request_id == request_id)
            .order_by(L.seq)
        ).all()
    return [(o, k, act, json.loads(d) if isinstance(d, str) else d) for o, k, act, d in rows]


def test_a_former_member_withdraws_the_retention_consent(primary_env: LifecycleEnv) -> None:
    from lifecycle.core.db import session
    from lifecycle.rights import consent
    from lifecycle.rights.pipeline import run_one
    from models.archive import ArchivedRecord
    from models.consents import Consent
    from models.requests import LifecycleRequest

    env = primary_env
    eng = create_demo_schema()
    _former_with_records(eng, 2)
    kept = _archived(2)
    assert kept.get("counselling", 0) >= 3 and kept.get("payment") == 1, kept
    restored = _archived_rows(2, "counselling")
    # A former member has no address on the site: the answer needs one.
    bad = env.run("consent", "withdraw", "2", "--purpose", RETENTION)
    assert bad.returncode == 2 and "--requester-contact" in wait_error_line(bad)
    # Not a retention consent: nothing of the former member rests on it.
    bad = env.run("consent", "withdraw", "2", "--purpose", "counselling",
                  "--requester-contact", "m2@example.test")  # fmt: skip
    assert bad.returncode == 2, bad.stdout
    r = env.run("consent", "withdraw", "2", "--purpose", RETENTION,
                "--requester-contact", "m2@example.test")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rid = int(r.stdout.split()[3])
    # A worker died after the first step: nothing destroyed yet, the re-run finishes it once.
    assert run_one(consent.CONSENT_WITHDRAWAL, rid) == "consent_withdrawn"
    assert _archived(2) == kept
    assert consent.run_consent_withdrawal(rid)["state"] == "completed"
    assert consent.run_consent_withdrawal(rid)["state"] == "completed"
    # The counselling records went; the payment a statute keeps stays.
    assert _archived(2) == {k: v for k, v in kept.items() if k != "counselling"}
    by_table: dict[str, int] = {}
    for row in restored:
        by_table[row["source_table"]] = by_table.get(row["source_table"], 0) + 1
    (entry,) = _entries("consent_withdrawal", rid)
    assert entry["archive_destroyed"] == by_table and entry["purpose"] == RETENTION
    assert entry["kept_by_law"] == {"payment": 1} and entry["files_handed"] == 0
    with session("primary") as s:
        (h,) = s.scalars(select(Consent).where(Consent.member_id == 2)).all()
        assert (h.purpose, h.request_id) == (RETENTION, rid) and h.withdrawn_at is not None
        req = s.get(LifecycleRequest, rid)
        assert req.payload["archive_destroyed"] == by_table and req.payload["former_member"]
        assert req.payload["kept_by_law"] == {"payment": 1}
        assert req.answered_at is not None
    # The command's entry at submission, and the worker's, both naming the operator.
    (cli, (who, kind, action, details)) = _access(rid)
    assert cli[2] == "withdraw (request)" and who == cli[0] != "website"
    assert action == "consent withdrawal (carried out by worker)" and kind == "destroy"
    assert details["archived_records"] == len(restored) and details["submitted_by"] == "operator"
    # Nothing more to withdraw: refused in one line.
    again = env.run("consent", "withdraw", "2", "--purpose", RETENTION,
                    "--requester-contact", "m2@example.test")  # fmt: skip
    assert again.returncode == 2, again.stdout

    # The archive DB is restored from a backup taken before: the replay deletes them again.
    with session("archive") as a:
        a.execute(insert(ArchivedRecord.__table__), restored)
    assert _archived(2) == kept
    since = date.today().isoformat()
    rr = env.run("ledger", "replay", "--since", since, "--dry-run")
    assert rr.returncode == 0, rr.stderr
    assert _archived(2) == kept
    rr = env.run("ledger", "replay", "--since", since)
    assert rr.returncode == 0, rr.stderr
    assert f"archive: {len(restored)} archived record(s)" in rr.stdout, rr.stdout
    assert _archived(2) == {k: v for k, v in kept.items() if k != "counselling"}
    redo = [e for e in _entries("consent_withdrawal") if e.get("reapplies") == "consent_archive"]
    assert len(redo) == 1 and redo[0]["archive_destroyed"] == by_table
    rr = env.run("ledger", "replay", "--since", since)
    assert rr.returncode == 0, rr.stderr
    redo = [e for e in _entries("consent_withdrawal") if e.get("reapplies") == "consent_archive"]
    assert len(redo) == 1


def test_website_requests_write_the_access_log(primary_env: LifecycleEnv) -> None:
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit
    from lifecycle.rights import consent, erase, suspension
    from models.requests import LifecycleRequest

    eng = create_demo_schema()
    _former_with_records(eng, 2)
    add_members(eng, 1, start=5, hobbies="독서")
    kept = _archived(2)

    def website(kind: str, mid: int, payload: dict[str, Any], contact: str | None = None) -> int:
        # What the website inserts in its own transaction: no actor, the member logged in.
        with session("primary") as s:
            rid = submit(s, kind, mid, payload)
            req = s.get(LifecycleRequest, rid)
            req.requester_contact = contact
        return rid

    rid = website("consent_withdrawal", 2, {"purpose": RETENTION}, "m2@example.test")
    assert consent.run_consent_withdrawal(rid)["state"] == "completed"
    assert "counselling" not in _archived(2) and _archived(2)["payment"] == kept["payment"]
    [(who, kind, action, details)] = _access(rid)
    assert (who, kind, details["submitted_by"]) == ("website", "destroy", "website")
    assert action == "consent withdrawal (carried out by worker)"
    assert details["verified_by"] == "login" and details["origin"]
    assert details["archived_records"] == kept["counselling"]

    rid = website("erasure", 5, {"fields": ["hobbies"]})
    assert erase.run_erasure(rid)["state"] in ("notifying", "completed")
    assert erase.run_erasure(rid)["state"] in ("notifying", "completed")
    [(who, kind, action, details)] = _access(rid)
    assert (who, kind, details["erased"]) == ("website", "destroy", ["hobbies"])
    assert action == "erase (carried out by worker)"

    rid = website("suspension", 5, {"reason": "이용 중지를 원합니다"})
    assert suspension.run_suspension(rid)["state"] == "completed"
    assert suspension.run_suspension(rid)["state"] == "completed"
    [(who, kind, action, details)] = _access(rid)
    assert (who, kind, details["lifted"]) == ("website", "change", False)
    assert action == "suspension (carried out by worker)"
    rid = website("suspension_lift", 5, {})
    assert suspension.run_lift(rid)["state"] == "completed"
    [(who, _kind, action, details)] = _access(rid)
    assert (who, action, details["lifted"]) == (
        "website",
        "suspension lift (carried out by worker)",
        True,
    )


def test_replay_destroys_a_processing_consents_records_again(primary_env: LifecycleEnv) -> None:
    from lifecycle.rights import consent
    from models.demo_site import members

    env = primary_env
    eng = create_demo_schema()
    add_members(eng, 1, start=7, counselling_consent_at=GIVEN)
    add_members(eng, 1, start=8, counselling_consent_at=GIVEN)
    with eng.begin() as c:
        for mid in (7, 8):
            c.execute(
                counselling_records.insert().values(
                    member_id=mid, session_at=GIVEN, counsellor="박상담", notes="기록",
                    diagnosis="불안",
                )
            )  # fmt: skip
    with eng.connect() as c:
        backup = [dict(r) for r in c.execute(select(counselling_records)).mappings()]
    r = env.run("consent", "withdraw", "7", "--purpose", "counselling")
    assert r.returncode == 0, r.stderr
    rid = int(r.stdout.split()[3])
    assert consent.run_consent_withdrawal(rid)["state"] == "completed"

    def records(mid: int) -> int:
        with eng.connect() as c:
            q = select(func.count()).where(counselling_records.c.member_id == mid)
            return int(c.execute(q.select_from(counselling_records)).scalar_one())

    assert records(7) == 0 and records(8) == 1
    # The site's tables come back from a backup taken before (the lifecycle's did not).
    with eng.begin() as c:
        c.execute(insert(counselling_records), [b for b in backup if b["member_id"] == 7])
        c.execute(members.update().where(members.c.id == 7).values(counselling_consent_at=GIVEN))
    since = date.today().isoformat()
    rr = env.run("ledger", "replay", "--since", since)
    assert rr.returncode == 0, rr.stderr
    assert records(7) == 1  # the request row is there and finished: not restored
    rr = env.run("ledger", "replay", "--since", since, "--assume-restored")
    assert rr.returncode == 0, rr.stderr
    assert records(7) == 0 and records(8) == 1
    with eng.connect() as c:
        at = c.execute(select(members.c.counselling_consent_at).where(members.c.id == 7))
        assert at.scalar() is None
    redo = [e for e in _entries("consent_withdrawal") if e.get("reapplies") == "consent"]
    assert len(redo) == 1 and redo[0]["destroyed"] == {"counselling_records": 1}
    rr = env.run("ledger", "replay", "--since", since, "--assume-restored")
    assert rr.returncode == 0, rr.stderr
    assert len([e for e in _entries("consent_withdrawal") if e.get("reapplies") == "consent"]) == 1


def test_the_archived_records_files_are_shredded(
    primary_env: LifecycleEnv, tmp_path: Any, monkeypatch: Any
) -> None:
    """A map keeping uploads after withdrawal under a retention consent of their own: the
    withdrawal keeps the file (its record archived), the consent's withdrawal hands it to the
    shredder before the record goes, and the shredder destroys it."""
    from lifecycle.datamap.member_table import clear_cache
    from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
    from lifecycle.engine.context import clear_context_cache
    from lifecycle.rights import consent
    from lifecycle.rights.common import Requester
    from lifecycle.shred.jobs import run_job
    from models.demo_site import uploaded_files
    from tests.helpers import set_env, sql_rows

    lines = SHIPPED_DEMO_MAP.read_text(encoding="utf-8").splitlines(keepends=True)
    rule = [i for i, ln in enumerate(lines) if ln.startswith("  uploads: {period: 0d")]
    purpose = [i for i, ln in enumerate(lines) if ln.startswith("  provision_partner:")]
    assert len(rule) == 1 and len(purpose) == 1
    lines[rule[0]] = (
        '  uploads: {period: 1y, consent: uploads_retention, legal_basis: "보존 동의"}\n'
    )
    lines[purpose[0]] = (
        '  uploads_retention:\n    kind: retention\n    label: "탈퇴 후 첨부 파일 보관 동의"\n'
        "    categories: [uploads]\n" + lines[purpose[0]]
    )
    text_ = "".join(lines)
    site_map = tmp_path / "site.yaml"
    site_map.write_text(text_, encoding="utf-8")
    set_env(primary_env, monkeypatch, LIFECYCLE_DATA_MAP=str(site_map))
    clear_context_cache()
    clear_cache()

    eng = create_demo_schema()
    add_members(eng, 1, start=3)
    primary_env.file_root.mkdir(parents=True, exist_ok=True)
    path = primary_env.file_root / "intake-3.pdf"
    path.write_bytes(b"%PDF intake form" * 64)
    with eng.begin() as c:
        c.execute(
            uploaded_files.insert().values(
                member_id=3, path=str(path), original_name="intake.pdf", kind="intake_form",
                uploaded_at=GIVEN,
            )
        )  # fmt: skip
    from lifecycle.engine.context import get_context
    from lifecycle.rights.consent import give_consent
    from lifecycle.rights.withdrawal import carry_out, submit_withdrawal

    give_consent(3, "uploads_retention", "v1", given_at=GIVEN)
    ctx = get_context()
    assert carry_out(ctx, submit_withdrawal(ctx, 3))["state"] == "completed"
    assert _archived(3).get("uploads") == 1 and path.exists()
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    jobs_before = {j for (j,) in sql_rows(primary, "SELECT id FROM lifecycle_shred_jobs")}

    rid = consent.submit_consent_withdrawal(
        3, "uploads_retention", Requester(contact="m3@example.test"), dispatch=False
    )
    assert consent.run_consent_withdrawal(rid)["state"] == "completed"
    assert "uploads" not in _archived(3)
    (entry,) = _entries("consent_withdrawal", rid)
    assert entry["files_handed"] == 1 and entry["archive_destroyed"] == {"uploaded_files": 1}
    jobs = [j for (j,) in sql_rows(primary, "SELECT id FROM lifecycle_shred_jobs ORDER BY id")
            if j not in jobs_before]  # fmt: skip
    assert len(jobs) == 1 and path.exists()
    run_job(jobs[0])
    assert not path.exists()
    assert _entries("file_shred")
