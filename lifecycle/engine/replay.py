"""`lifecycle ledger replay --since DATE`: re-apply destructions after a primary-DB restore.

A backup of the website's database still holds the rows that were destroyed after it was
taken. The ledger (in the archive DB, not restored) says what was destroyed since, but names
people only by keyed pseudonyms: ``subject_ref`` (HMAC of the member id) for a withdrawal's
entries and ``file_ref`` (HMAC of host and path) for each shredded file. So the replay computes
the pseudonym of every member in the restored primary DB and of every file under this host's
storage roots, and matches:

- a member named by a withdrawal's ledger entry (``archive``/``destroy`` with a request id)
  after ``--since`` is withdrawn again: marked withdrawn in the site's own columns, every table
  moved like a withdrawal (retained parts already in the archive are skipped by their natural
  key; the rest is deleted, files go to the shredder), each step in the ledger under this
  replay's scope;
- a file named by a ``file_shred`` entry of this host is shredded again.

Idempotent: a member or file already gone does not match on the next run. Members under a
legal hold are left alone (and counted). What it cannot re-apply is counted and reported
(:class:`ReplayReport`); see the README and docs/engine.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lifecycle.core import dbkind
from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.engine.context import EngineContext
from lifecycle.engine.ledger_outbox import flush_ledger_outbox
from lifecycle.engine.mover import Scope, move, send_shred_jobs
from lifecycle.engine.selection import subject_selections, unprocessed_clause
from lifecycle.requests import holds
from lifecycle.shred.jobs import enqueue_shred
from lifecycle.vault import crypto, keystore, ledger
from models.archive import LedgerEntry

REASON = "백업 복원 후 파기 재적용 (destruction re-applied after a restore)"
LEGAL_BASIS = "개인정보 보호법 제21조 (복원된 백업에 남은 파기 대상 정보)"
MEMBER_ACTIONS = ("archive", "destroy")


@dataclass
class ReplayReport:
    since: date
    entries: int = 0
    member_refs: int = 0
    file_refs: int = 0
    members_matched: int = 0
    members_reapplied: int = 0
    members_held: list[int] = field(default_factory=list)  # hold ids, not member ids
    files_matched: int = 0
    rows_deleted: int = 0
    # Entries that name no member or file (sweep batches, age rules, purge buckets): their
    # rows come back to the next sweep or purge by themselves, or cannot be told apart.
    unnamed_destructions: int = 0
    corrections: int = 0  # values are never in the ledger: cannot be re-applied
    shred_jobs: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["since"] = self.since.isoformat()
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


def _read_ledger(
    a: Session, start: datetime, host: str, rep: ReplayReport
) -> tuple[dict[str, datetime], set[str]]:
    members: dict[str, datetime] = {}
    files: set[str] = set()
    e = LedgerEntry
    rows = a.execute(
        select(e.action, e.subject_ref, e.request_id, e.details, e.occurred_at)
        .where(e.occurred_at >= start)
        .order_by(e.seq)
    )
    for action, ref, request_id, details, at in rows:
        rep.entries += 1
        if action == "file_shred":
            if ref and (details or {}).get("host") == host:
                files.add(ref)
        elif action in MEMBER_ACTIONS:
            if ref and request_id is not None:
                members.setdefault(ref, as_utc(at))
            elif action == "destroy":
                rep.unnamed_destructions += 1
        elif action == "correction":
            rep.corrections += 1
    rep.member_refs, rep.file_refs = len(members), len(files)
    return members, files


def _walk(roots: list[Path]) -> Iterator[str]:
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                yield os.path.join(dirpath, n)


def replay(
    ctx: EngineContext, since: date, *, dry_run: bool = False, actor: str = "ledger-replay"
) -> ReplayReport:
    rep = ReplayReport(since)
    settings = get_settings()
    host = settings.host_name
    start = _since_utc(ctx, since)
    with Session(ctx.archive) as a, a.begin():
        members, files = _read_ledger(a, start, host, rep)
        key = keystore.ref_key(a)
    sub = ctx.datamap.subject
    t = ctx.subject_table
    matched: dict[int, datetime] = {}
    if members:
        q = select(t.c[sub.key])
        if sub.keep_row:
            # A kept member row already blanked is what the withdrawal left: nothing to redo.
            q = q.where(unprocessed_clause(ctx))
        with ctx.primary.connect() as c:
            for (mid,) in c.execute(q):
                ref = crypto.subject_ref(key, mid)
                if ref in members:
                    matched[int(mid)] = members[ref]
    rep.members_matched = len(matched)
    paths = [p for p in _walk(settings.file_roots) if crypto.file_ref(key, p, host) in files]
    rep.files_matched = len(paths)
    if dry_run:
        return rep
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    today = ctx.today()
    for n, (mid, ended) in enumerate(sorted(matched.items()), 1):
        with Session(ctx.primary) as p:
            on_hold = holds.holds_on_member(p, mid, today)
        if on_hold:
            rep.members_held.extend(h.id for h in on_hold)
            continue
        with Session(ctx.archive) as a, a.begin():
            ref = keystore.subject_ref(a, mid)
        scope = Scope(
            key=f"replay:{stamp}:{n}", purpose="withdrawal", reason=REASON, actor=actor,
            subject_ref=ref,
        )  # fmt: skip
        with ctx.primary.begin() as conn:
            q = dbkind.for_update(select(t.c[sub.key]).where(t.c[sub.key] == mid), conn, of=t)
            if conn.execute(q).first() is None:
                continue  # gone meanwhile
            conn.execute(update(t).where(t.c[sub.key] == mid).values(sub.withdraw_values(ended)))
            now = datetime.now(UTC)
            res = move(ctx, conn, subject_selections(ctx, "withdrawal", {mid: ended}, now), scope,
                       now=now)  # fmt: skip
        send_shred_jobs(res.shred_jobs)
        rep.shred_jobs.extend(res.shred_jobs)
        rep.members_reapplied += 1
        rep.rows_deleted += res.summary()["deleted_rows"]
    flush_ledger_outbox(ctx)
    if paths:
        rep.shred_jobs.append(
            enqueue_shred(paths, reason=REASON, legal_basis=LEGAL_BASIS, origin="replay")
        )
    with Session(ctx.archive) as a, a.begin():
        ledger.append(
            a, action="ledger_replay", categories=[], tables=[],
            subjects=rep.members_reapplied, rows=rep.rows_deleted + len(paths), reason=REASON,
            legal_basis=LEGAL_BASIS,
            method="원장 가명 대조로 복원 DB·파일의 파기 재적용 (matched by keyed pseudonyms)",
            actor=actor,
            details={"since": since.isoformat(), "members": rep.members_reapplied,
                     "files": len(paths), "held_members": len(rep.members_held),
                     "unnamed_destructions": rep.unnamed_destructions,
                     "corrections_not_reapplied": rep.corrections},
        )  # fmt: skip
    return rep
