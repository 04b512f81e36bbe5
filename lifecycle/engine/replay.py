"""`lifecycle ledger replay --since DATE`: re-apply destructions after a primary-DB restore.

A backup of the website's database still holds what was destroyed after it was taken. The
ledger (in the archive DB, not restored) says what was done since, but names people only by
keyed pseudonyms: ``subject_ref`` (HMAC of the member id) and ``file_ref`` (HMAC of host and
path). So the replay computes the pseudonym of every member in the restored primary DB and of
every file under this host's storage roots, and re-applies exactly what each entry says was
done, to what the restore brought back:

- a **withdrawal** (``archive``/``destroy`` entries of a withdrawal request, or of an earlier
  replay's withdrawal): the member, found again and not yet processed, is marked withdrawn and
  moved like a withdrawal (retained parts already in the archive are skipped by their natural
  key; the rest is deleted, files go to the shredder). A member the ledger says was deleted
  cannot be back without a restore.
- an **item erasure** (제36조; the ``destroy`` entry of an erasure request, or of an earlier
  replay's erasure): the columns it names are cleared again, the member stays.
- a **consent withdrawal** (제37조): the purpose's consent column is cleared again (its column
  from the caller's purpose → column map), its grant closed again in ``lifecycle_consents``,
  and what depended on it destroyed again (:mod:`lifecycle.engine.consent_destroy`): the
  categories a processing or guardian consent carries, in the member's restored rows; and the
  archived records a retention consent kept, when the archive holds them again (a restored
  archive DB; a former member needs no row in the primary DB for that). Only records
  archived before the withdrawal: one archived since (the consent given again) stays.
- a ``file_shred`` entry of this host: the file is shredded again.

A cleared column holding a value again may be a restored value or one the member entered
since, so an act is re-applied only with a sign that the restore predates it: its request row
(``lifecycle_requests`` lives in the primary DB and is never pruned) or the replay run that
wrote it (``lifecycle_job_runs``) is missing from the restored DB. A request row still open
is left to the request itself (the relay sends it again). A request row that is there and
finished says the DB was not restored to before it: nothing is done unless the operator says
the restore brought back the site's tables without the lifecycle ones (``assume_restored``,
``--assume-restored``). A withdrawal needs no such sign beyond the member being back.

Idempotent: what is re-applied no longer matches on the next run. Members under a legal hold
are left alone (and counted). What cannot be re-applied is counted and reported
(:class:`ReplayReport`): corrections (values are never in the ledger), entries naming no
member (sweep batches, age rules, purges: the next sweep and purge redo them), identifier
destructions (re-run ``lifecycle identifiers destroy``); see the README and docs/engine.md.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, insert, select, update
from sqlalchemy.orm import Session

from lifecycle.core import dbkind
from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.engine.consent_destroy import (
    archived_counts,
    destroy_archived,
    destroy_dependants,
    withdrawn_value,
)
from lifecycle.engine.context import EngineContext
from lifecycle.engine.guests import with_guests
from lifecycle.engine.ledger_outbox import flush_ledger_outbox
from lifecycle.engine.mover import Scope, move, send_shred_jobs
from lifecycle.engine.selection import subject_selections, unprocessed_clause
from lifecycle.requests import holds
from lifecycle.shred.jobs import enqueue_shred
from lifecycle.vault import crypto, keystore, ledger
from models.archive import LedgerEntry
from models.consents import Consent
from models.engine import LedgerOutbox
from models.requests import JobRun, LifecycleRequest, RequestState

REASON = "백업 복원 후 파기 재적용 (destruction re-applied after a restore)"
LEGAL_BASIS = "개인정보 보호법 제21조 (복원된 백업에 남은 파기 대상 정보)"
ERASURE_BASIS = "개인정보 보호법 제36조, 제21조 (복원된 백업에 남은 삭제 항목)"
CONSENT_BASIS = "개인정보 보호법 제37조 (복원된 백업에 남은 철회된 동의)"
MEMBER_ACTIONS = ("archive", "destroy")
JOB = "ledger_replay"
# A request in one of these states has yet to do its act and will do it itself when the relay
# sends it again; in any later state the act is recorded done in this DB.
BEFORE_THE_ACT = frozenset(
    s.value
    for s in (
        RequestState.RECEIVED,
        RequestState.DISPATCHED,
        RequestState.RESTRICTED,
        RequestState.ARCHIVED,
    )
)
KINDS = ("withdrawal", "erasure", "consent")


@dataclass
class Act:
    """One thing the ledger says was done to one member, as far as a replay can redo it."""

    kind: str  # withdrawal | erasure | consent
    ref: str
    at: datetime
    request_id: int | None = None
    replay_run: int | None = None  # an earlier replay's run that wrote the entry
    columns: tuple[str, ...] = ()  # erasure: the member table's columns cleared
    purpose: str | None = None  # consent: the purpose withdrawn
    # consent: the categories whose archived records it destroyed (a retention consent)
    archive_categories: tuple[str, ...] = ()


@dataclass
class ReplayReport:
    since: date
    assume_restored: bool = False
    entries: int = 0
    named: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    file_refs: int = 0
    found: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    reapplied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    # Found, but their request row is there and finished: the DB was not restored to before
    # them (re-applied only with assume_restored).
    not_restored: int = 0
    # Found, but their request has yet to do its act in the restored DB: it does it again.
    left_to_requests: int = 0
    members_held: list[int] = field(default_factory=list)  # hold ids, not member ids
    files_matched: int = 0
    rows_deleted: int = 0
    columns_cleared: int = 0
    # Entries that name no member or file (sweep batches, age rules, purge buckets): their
    # rows come back to the next sweep or purge by themselves, or cannot be told apart.
    unnamed_destructions: int = 0
    identifier_destructions: int = 0  # re-run `lifecycle identifiers destroy`
    corrections: int = 0  # values are never in the ledger: cannot be re-applied
    consent_unmapped: int = 0  # consent withdrawals of a purpose the data map lacks
    archive_rows_deleted: int = 0  # archived records a retention consent's withdrawal left
    shred_jobs: list[int] = field(default_factory=list)
    run_id: int | None = None

    @property
    def members_matched(self) -> int:
        return sum(self.found.values())

    @property
    def members_reapplied(self) -> int:
        return sum(self.reapplied.values())

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["since"] = self.since.isoformat()
        d["members_matched"] = self.members_matched
        d["members_reapplied"] = self.members_reapplied
        return d


def parse_since(raw: str, ctx: EngineContext) -> date:
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        raise UserError(
            f"--since must be a date YYYY-MM-DD (the backup's date), not {raw!r}"
        ) from None
    if day > ctx.today():
        raise UserError(f"--since {day.isoformat()} is in the future (today is {ctx.today()})")
    return day


def _since_utc(ctx: EngineContext, day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ctx.timezone).astimezone(UTC)


def _replay_run_of(details: Mapping[str, Any]) -> int | None:
    """The replay run an earlier replay's entry names (scope ``replay:<run>:<n>``)."""
    parts = str(details.get("scope", "")).split(":")
    if len(parts) == 3 and parts[0] == "replay" and parts[1].isdigit():
        return int(parts[1])
    return None


def classify(
    action: str,
    ref: str | None,
    request_id: int | None,
    details: Mapping[str, Any] | None,
    dedup_key: str | None,
    at: datetime,
) -> Act | str | None:
    """What one ledger entry says was done: an :class:`Act` on a named member, or a label for
    what cannot be redone (``unnamed``, ``identifiers``, ``correction``), or None."""
    d = details or {}
    if action == "correction":
        return "correction"
    if action == "consent_withdrawal":
        if not ref:
            return None
        cats = d.get("archive_categories") if d.get("archive_destroyed") else None
        return Act("consent", ref, at, request_id=request_id, purpose=d.get("purpose"),
                   replay_run=_replay_run_of(d),
                   archive_categories=tuple(str(c) for c in cats or ()))  # fmt: skip
    if action not in MEMBER_ACTIONS:
        return None
    run = _replay_run_of(d)
    erasure = (dedup_key or "").startswith("erasure:request") or d.get("reapplies") == "erasure"
    if erasure and ref:
        return Act("erasure", ref, at, request_id=request_id, replay_run=run,
                   columns=tuple(str(c) for c in d.get("fields") or ()))  # fmt: skip
    if ref and (request_id is not None or run is not None or "replay:" in str(d.get("scope"))):
        return Act("withdrawal", ref, at, request_id=request_id, replay_run=run)
    if action == "destroy":
        if ref and "columns" in d and "run" in d:
            return "identifiers"  # a `lifecycle identifiers destroy` run, member by member
        return "unnamed"
    return None


def _read_ledger(a: Session, start: datetime, host: str, rep: ReplayReport) -> tuple[
    list[Act], set[str]
]:  # fmt: skip
    acts: list[Act] = []
    files: set[str] = set()
    e = LedgerEntry
    rows = a.execute(
        select(e.action, e.subject_ref, e.request_id, e.details, e.dedup_key, e.occurred_at)
        .where(e.occurred_at >= start)
        .order_by(e.seq)
    )
    withdrawn: set[str] = set()
    for action, ref, request_id, details, dedup_key, at in rows:
        rep.entries += 1
        if action == "file_shred":
            if ref and (details or {}).get("host") == host:
                files.add(ref)
            continue
        got = classify(action, ref, request_id, details, dedup_key, as_utc(at))
        if got == "correction":
            rep.corrections += 1
        elif got == "unnamed":
            rep.unnamed_destructions += 1
        elif got == "identifiers":
            rep.identifier_destructions += 1
        elif isinstance(got, Act):
            if got.kind == "withdrawal":
                # One act per member: a withdrawal writes an entry per table and category.
                if got.ref in withdrawn:
                    continue
                withdrawn.add(got.ref)
            acts.append(got)
    for act in acts:
        rep.named[act.kind] += 1
    rep.file_refs = len(files)
    return acts, files


def _walk(roots: list[Path]) -> Iterator[str]:
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                yield os.path.join(dirpath, n)


def _members_by_ref(ctx: EngineContext, key: bytes, refs: set[str]) -> dict[str, tuple[int, bool]]:
    """{ref: (member id, still unprocessed)} for the members of the restored DB named."""
    sub = ctx.datamap.subject
    t = ctx.subject_table
    cols: list[ColumnElement[Any]] = [t.c[sub.key]]
    if sub.keep_row:
        # A kept member row already blanked is what the withdrawal left: nothing to redo.
        cols.append(unprocessed_clause(ctx).label("unprocessed"))
    out: dict[str, tuple[int, bool]] = {}
    with ctx.primary.connect() as c:
        for row in c.execute(select(*cols)):
            ref = crypto.subject_ref(key, row[0])
            if ref in refs:
                out[ref] = (int(row[0]), bool(row[1]) if sub.keep_row else True)
    return out


def _bookkeeping(ctx: EngineContext, acts: list[Act]) -> tuple[dict[int, str], set[int]]:
    """Request states and replay runs the restored primary DB still holds for these acts."""
    rids = sorted({a.request_id for a in acts if a.request_id is not None})
    runs = sorted({a.replay_run for a in acts if a.replay_run is not None})
    r, jr = LifecycleRequest.__table__, JobRun.__table__
    states: dict[int, str] = {}
    present: set[int] = set()
    with ctx.primary.connect() as c:
        for i in range(0, len(rids), 500):
            states.update(
                (int(k), str(s))
                for k, s in c.execute(
                    select(r.c.id, r.c.state).where(r.c.id.in_(rids[i : i + 500]))
                )
            )
        if runs:
            present = {
                int(k)
                for (k,) in c.execute(select(jr.c.id).where(jr.c.id.in_(runs), jr.c.job == JOB))
            }
    return states, present


def _verdict(act: Act, states: dict[int, str], runs: set[int], assume: bool) -> str:
    """``redo``, ``request`` (left to its open request) or ``not_restored``."""
    if act.request_id is not None:
        state = states.get(act.request_id)
        if state is None:
            return "redo"  # the restore predates the request: its work went with it
        if state in BEFORE_THE_ACT:
            return "request"
        return "redo" if assume or act.kind == "withdrawal" else "not_restored"
    if act.replay_run is not None and act.replay_run not in runs:
        return "redo"
    # A withdrawal's member is back (nothing else brings a deleted member back); an erasure or
    # consent withdrawal with its run still recorded was not undone by a restore.
    return "redo" if assume or act.kind == "withdrawal" else "not_restored"


def _held(ctx: EngineContext, mid: int, rep: ReplayReport) -> bool:
    with Session(ctx.primary) as p:
        on_hold = holds.holds_on_member(p, mid, ctx.today())
    if on_hold:
        rep.members_held.extend(h.id for h in on_hold)
    return bool(on_hold)


def _clearable(ctx: EngineContext, act: Act, consent_columns: Mapping[str, str]) -> list[str]:
    """The member table's columns this act cleared (and that can be cleared now)."""
    t = ctx.subject_table
    if act.kind == "consent":
        col = consent_columns.get(act.purpose or "")
        return [col] if col and col in t.c else []
    return [c for c in act.columns if c in t.c and t.c[c].nullable]


def _holding(
    conn: Connection, ctx: EngineContext, mid: int, cols: list[str], *, lock: bool = True
) -> list[str]:
    """Which of ``cols`` hold a value (consent: a true flag) in the member's row."""
    if not cols:
        return []
    sub = ctx.datamap.subject
    t = ctx.subject_table
    q = select(*(t.c[c] for c in cols)).where(t.c[sub.key] == mid)
    row = conn.execute(dbkind.for_update(q, conn, of=t) if lock else q).first()
    if row is None:
        return []
    return [c for c, v in zip(cols, row, strict=True) if v not in (None, "", 0, False)]


def _redo_withdrawal(
    ctx: EngineContext, mid: int, ended: datetime, scope: Scope, rep: ReplayReport
) -> bool:
    sub = ctx.datamap.subject
    t = ctx.subject_table
    with ctx.primary.begin() as conn:
        q = dbkind.for_update(select(t.c[sub.key]).where(t.c[sub.key] == mid), conn, of=t)
        if conn.execute(q).first() is None:
            return False  # gone meanwhile
        sub.record_withdrawal(conn, t, mid, ended)
        now = datetime.now(UTC)
        sels, _shared = with_guests(
            ctx,
            conn,
            "withdrawal",
            {mid: ended},
            now,
            subject_selections(ctx, "withdrawal", {mid: ended}, now, read=conn),
        )
        res = move(ctx, conn, sels, scope, now=now)
    send_shred_jobs(res.shred_jobs)
    rep.shred_jobs.extend(res.shred_jobs)
    rep.rows_deleted += res.summary()["deleted_rows"]
    return True


def _redo_clear(
    ctx: EngineContext, act: Act, mid: int, cols: list[str], scope: Scope, ref: str,
    rep: ReplayReport,
) -> bool:  # fmt: skip
    """Clear the columns again, verify, and record it; False if nothing held a value."""
    sub = ctx.datamap.subject
    t = ctx.subject_table
    consent = act.kind == "consent"
    with ctx.primary.begin() as conn:
        held = _holding(conn, ctx, mid, cols)
        if not held:
            return False
        blank: Any = False if consent else None
        conn.execute(update(t).where(t.c[sub.key] == mid).values(dict.fromkeys(held, blank)))
        if _holding(conn, ctx, mid, held):
            raise RuntimeError(
                f"replay: member columns still hold values after clearing ({scope.key})"
            )
        cats = ctx.datamap.subject_table.columns
        by_col = {c: cat for cat, cs in cats.items() for c in cs}
        entry = {
            "action": "consent_withdrawal" if consent else "destroy",
            "categories": sorted({by_col.get(c, "profile") for c in held}),
            "tables": [t.name],
            "subjects": 1,
            "rows": 1,
            "reason": REASON,
            "legal_basis": CONSENT_BASIS if consent else ERASURE_BASIS,
            "method": "복원된 항목을 다시 삭제 (해당 칼럼을 다시 비움, 단일 트랜잭션)",
            "actor": scope.actor,
            "subject_ref": ref,
            "details": {
                "scope": scope.key,
                "reapplies": act.kind,
                "fields": held,
                "request": act.request_id,
                **({"purpose": act.purpose} if consent else {}),
            },
        }
        # Owed in the same transaction as the clearing (as the mover does): the columns are
        # cleared and the entry owed together or not at all; flush_ledger_outbox appends it.
        conn.execute(
            insert(LedgerOutbox.__table__),
            [{"token": uuid.uuid4().hex, "entry": entry, "created_at": datetime.now(UTC)}],
        )
    rep.columns_cleared += len(held)
    return True


def _redo_consent(
    ctx: EngineContext, act: Act, mid: int, cols: list[str], scope: Scope, rep: ReplayReport
) -> bool:
    """A consent withdrawal on the member's restored rows: the consent column cleared, the grant
    closed, the categories it carried destroyed, in one transaction with its ledger entry
    (owed); False if nothing was back."""
    p = ctx.datamap.consents[act.purpose or ""]
    sub = ctx.datamap.subject
    t = ctx.subject_table
    c = Consent.__table__
    with ctx.primary.begin() as conn:
        held = _holding(conn, ctx, mid, cols)
        if held:
            blank = {col: withdrawn_value(t.c[col]) for col in held}
            conn.execute(update(t).where(t.c[sub.key] == mid).values(blank))
            if _holding(conn, ctx, mid, held):
                raise RuntimeError(f"replay: consent column still set after clearing ({scope.key})")
        grants = conn.execute(
            update(c)
            .where(c.c.member_id == mid, c.c.purpose == p.name, c.c.withdrawn_at.is_(None),
                   c.c.given_at < act.at)
            .values(withdrawn_at=act.at, request_id=act.request_id)
        ).rowcount  # fmt: skip
        destroyed = destroy_dependants(ctx, conn, p, mid) if p.destroys else {}
        if not held and not grants and not destroyed:
            return False
        entry = {
            "action": "consent_withdrawal",
            "categories": sorted(p.destroys) if destroyed else [],
            "tables": sorted({t.name, *destroyed}),
            "subjects": 1,
            "rows": sum(destroyed.values()) or 1,
            "reason": REASON,
            "legal_basis": CONSENT_BASIS,
            "method": "복원된 동의 기록을 다시 해제하고 동의에 근거한 항목을 다시 파기 "
            "(단일 트랜잭션, 재조회로 확인)",
            "actor": scope.actor,
            "subject_ref": act.ref,
            "details": {"scope": scope.key, "reapplies": "consent", "purpose": p.name,
                        "fields": held, "grants_closed": int(grants), "destroyed": destroyed,
                        "request": act.request_id},
        }  # fmt: skip
        conn.execute(
            insert(LedgerOutbox.__table__),
            [{"token": uuid.uuid4().hex, "entry": entry, "created_at": datetime.now(UTC)}],
        )
    rep.columns_cleared += len(held)
    rep.rows_deleted += sum(destroyed.values())
    return True


def _archived_left(
    ctx: EngineContext, acts: list[Act], rewithdrawn: frozenset[str] = frozenset()
) -> list[Act]:
    """Retention-consent withdrawals whose archived records are there again (restored).
    Records archived since the withdrawal stay (the consent was given again), except for a
    member whose withdrawal this run re-applied: it archived them again from the restored
    rows, under the restored grant the consent withdrawal had ended."""
    out = []
    with Session(ctx.archive) as a:
        for act in acts:
            if act.kind == "consent" and act.archive_categories:
                before = None if act.ref in rewithdrawn else act.at
                if archived_counts(a, act.ref, list(act.archive_categories), before):
                    out.append(act)
    return out


def _redo_archived(
    ctx: EngineContext, act: Act, scope: Scope, rep: ReplayReport, *, since_too: bool = False
) -> bool:
    """Delete again, and record, the archived records a retention consent's withdrawal
    destroyed; skipped while a legal hold covers the member or one of the categories."""
    cats = list(act.archive_categories)
    with Session(ctx.archive) as a, a.begin():
        with Session(ctx.primary) as p:
            held = holds.held_set(p, a, ctx.today())
        hold = held.refs.get(act.ref) or next(
            (held.categories[c] for c in cats if c in held.categories), None
        )
        if hold is not None:
            rep.members_held.append(hold.id)
            return False
        gone = destroy_archived(a, act.ref, cats, None if since_too else act.at)
        if not gone:
            return False
        ledger.append(
            a, action="consent_withdrawal", categories=sorted(cats), tables=sorted(gone),
            subjects=1, rows=sum(gone.values()), reason=REASON, legal_basis=CONSENT_BASIS,
            method="복원된 분리보관 기록을 다시 삭제 (분리보관 DB 행 삭제, 재조회로 확인)",
            actor=scope.actor, subject_ref=act.ref,
            details={"scope": scope.key, "reapplies": "consent_archive", "purpose": act.purpose,
                     "archive_destroyed": gone, "request": act.request_id},
            dedup_key=f"{scope.key}:archive",
        )  # fmt: skip
    rep.archive_rows_deleted += sum(gone.values())
    return True


def _open_run(ctx: EngineContext) -> int:
    jr = JobRun.__table__
    with ctx.primary.begin() as conn:
        # One row: SQLAlchemy types the key Optional for executemany.
        run_id = conn.execute(  # type: ignore[index]
            insert(jr).values(job=JOB, started_at=datetime.now(UTC), outcome="running", counts={})
        ).inserted_primary_key[0]
    return int(run_id)


def _close_run(ctx: EngineContext, run_id: int, rep: ReplayReport, outcome: str = "ok") -> None:
    jr = JobRun.__table__
    counts = {f"{k}_reapplied": v for k, v in rep.reapplied.items()}
    counts.update(files=rep.files_matched, rows_deleted=rep.rows_deleted,
                  archive_rows_deleted=rep.archive_rows_deleted)  # fmt: skip
    with ctx.primary.begin() as conn:
        conn.execute(
            update(jr)
            .where(jr.c.id == run_id)
            .values(outcome=outcome, finished_at=datetime.now(UTC), counts=counts)
        )


def _apply(
    ctx: EngineContext, rep: ReplayReport, todo: list[tuple[Act, int]], paths: list[str],
    consent_columns: Mapping[str, str], actor: str, run_id: int, consents: list[Act],
) -> None:  # fmt: skip
    n = 0
    for n, (act, mid) in enumerate(todo, 1):
        if _held(ctx, mid, rep):
            continue
        scope = Scope(key=f"replay:{run_id}:{n}", purpose="withdrawal", reason=REASON,
                      actor=actor, subject_ref=act.ref)  # fmt: skip
        if act.kind == "withdrawal":
            done = _redo_withdrawal(ctx, mid, act.at, scope, rep)
        elif act.kind == "consent":
            cols = _clearable(ctx, act, consent_columns)
            done = _redo_consent(ctx, act, mid, cols, scope, rep)
        else:
            cols = _clearable(ctx, act, consent_columns)
            done = bool(cols) and _redo_clear(ctx, act, mid, cols, scope, act.ref, rep)
        if done:
            rep.reapplied[act.kind] += 1
    # After the withdrawals: one re-applied here archives a member's records again.
    live = {id(act) for act, _ in todo}
    again = frozenset(act.ref for act, _ in todo if act.kind == "withdrawal")
    for m, act in enumerate(_archived_left(ctx, consents, again), n + 1):
        scope = Scope(key=f"replay:{run_id}:{m}", purpose="consent_withdrawal", reason=REASON,
                      actor=actor, subject_ref=act.ref)  # fmt: skip
        done = _redo_archived(ctx, act, scope, rep, since_too=act.ref in again)
        if done and id(act) not in live:
            rep.reapplied[act.kind] += 1
    flush_ledger_outbox(ctx)
    if paths:
        rep.shred_jobs.append(
            enqueue_shred(paths, reason=REASON, legal_basis=LEGAL_BASIS, origin="replay")
        )
    with Session(ctx.archive) as a, a.begin():
        ledger.append(
            a, action="ledger_replay", categories=[], tables=[],
            subjects=rep.members_reapplied,
            rows=rep.rows_deleted + rep.archive_rows_deleted + len(paths), reason=REASON,
            legal_basis=LEGAL_BASIS,
            method="원장 가명 대조로 복원 DB·파일의 파기 재적용 (matched by keyed pseudonyms)",
            actor=actor,
            details={"since": rep.since.isoformat(), "run": run_id,
                     "members": rep.members_reapplied,
                     **{f"{k}s": v for k, v in rep.reapplied.items()},
                     "files": len(paths), "held_members": len(rep.members_held),
                     "not_restored": rep.not_restored, "left_to_requests": rep.left_to_requests,
                     "assume_restored": rep.assume_restored,
                     "unnamed_destructions": rep.unnamed_destructions,
                     "identifier_destructions": rep.identifier_destructions,
                     "corrections_not_reapplied": rep.corrections,
                     "archive_rows_deleted": rep.archive_rows_deleted},
            dedup_key=f"ledger_replay:run{run_id}",
        )  # fmt: skip


def replay(
    ctx: EngineContext,
    since: date,
    *,
    dry_run: bool = False,
    actor: str = "ledger-replay",
    assume_restored: bool = False,
    consent_columns: Mapping[str, str] | None = None,
) -> ReplayReport:
    """Re-apply what the ledger records since ``since`` to what a restore brought back.

    ``assume_restored``: re-apply erasures and consent withdrawals even where their request
    row says they were done in this DB (the site's tables were restored without the lifecycle
    tables). ``consent_columns``: purpose name → the member table's consent column.
    """
    rep = ReplayReport(since, assume_restored=assume_restored)
    consent_columns = consent_columns or {}
    settings = get_settings()
    host = settings.host_name
    start = _since_utc(ctx, since)
    with Session(ctx.archive) as a, a.begin():
        acts, files = _read_ledger(a, start, host, rep)
        key = keystore.ref_key(a)
    members = _members_by_ref(ctx, key, {x.ref for x in acts}) if acts else {}
    states, runs = _bookkeeping(ctx, acts)
    withdrawn = {x.ref for x in acts if x.kind == "withdrawal"}
    todo: list[tuple[Act, int]] = []
    for act in acts:
        got = members.get(act.ref)
        if got is None:
            continue
        mid, unprocessed = got
        if act.kind == "withdrawal" and not unprocessed:
            continue
        if act.kind != "withdrawal" and act.ref in withdrawn:
            continue  # the withdrawal takes the whole member
        if act.kind == "consent" and act.purpose not in ctx.datamap.consents:
            rep.consent_unmapped += 1
            continue
        rep.found[act.kind] += 1
        verdict = _verdict(act, states, runs, assume_restored)
        if verdict == "request":
            rep.left_to_requests += 1
        elif verdict == "not_restored":
            rep.not_restored += 1
        else:
            todo.append((act, mid))
    paths = [p for p in _walk(settings.file_roots) if crypto.file_ref(key, p, host) in files]
    rep.files_matched = len(paths)
    # Archived records are back only if the archive was restored: no request row to consult.
    consents = [x for x in acts if x.kind == "consent" and x.purpose in ctx.datamap.consents]
    archived = _archived_left(ctx, consents)
    for act in archived:
        if act.ref not in members:
            rep.found["consent"] += 1
    if dry_run:
        # What a real run would do: found, restored, and something to clear.
        for act, mid in todo:
            if act.kind == "erasure" or (
                act.kind == "consent" and not ctx.datamap.consents[act.purpose or ""].destroys
            ):
                with ctx.primary.connect() as conn:
                    cols = _clearable(ctx, act, consent_columns)
                    if not _holding(conn, ctx, mid, cols, lock=False):
                        continue
            rep.reapplied[act.kind] += 1
        live = {id(act) for act, _ in todo}
        rep.reapplied["consent"] += sum(1 for act in archived if id(act) not in live)
        return rep
    run_id = rep.run_id = _open_run(ctx)
    try:
        _apply(ctx, rep, todo, paths, consent_columns, actor, run_id, consents)
    except BaseException:
        # The run row must not say "running" for ever; what was re-applied is in the ledger.
        _close_run(ctx, run_id, rep, "failed")
        raise
    _close_run(ctx, run_id, rep)
    return rep
