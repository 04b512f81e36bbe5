"""Handler access log (개인정보처리시스템 접속기록, 안전성 확보조치 기준 제8조).

One entry per action that reads or changes personal data: who (the operator, or the website's
actor of a request), when, which member (the ledger's keyed pseudonym, never the id), what
kind of action, and counts or field names, never values. Kept 2 years (``RETENTION_DAYS``).

Every entry also says where the action came from (접속지, ``details["origin"]``: the SSH
client's address, else the terminal, else the host; a worker says so; a web console passes
the client's address) and the OS account that ran it (``details["os_user"]``), which the
operating system authenticated whatever ``--operator`` said.

Tamper evidence: entries are hash-chained exactly like the ledger (``chain.entry_hash`` over
``HASHED``), and the single head row is locked by every writer. Pruning deletes the oldest
entries only from the start of the chain and moves the head's *base* (``base_seq``,
``base_hash``: the last entry deleted) in the same transaction, then appends a ``prune`` entry
naming that base, so the kept part still verifies from the base, the base is itself covered by
the chain, and deleting entries anywhere else (or moving the base without a prune entry) is
reported by ``verify``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import IO, Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, RowMapping, delete, insert, select, update
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.timeutil import as_utc
from lifecycle.vault import keystore
from lifecycle.vault.access_entry import (
    GENESIS,
    HASHED,
    HEAD_ID,
    check_entry,
    entry_fields,
)
from lifecycle.vault.access_entry import origin as origin
from lifecycle.vault.access_entry import os_user as os_user
from lifecycle.vault.access_entry import set_process_role as set_process_role
from lifecycle.vault.chain import VerifyResult, entry_hash, verify_chain
from models.base import utcnow
from models.guards import AccessLogEntry, AccessLogHead

RETENTION_DAYS = 2 * 366

CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "일련번호"),
    ("occurred_at", "접속일시"),
    ("operator", "처리자"),
    ("kind", "처리유형"),
    ("action", "수행업무"),
    ("subject_ref", "정보주체 가명"),
    ("request_id", "요청번호"),
    ("details", "상세"),
    ("hash", "해시"),
    ("prev_hash", "이전 해시"),
)


def _lock_head(s: Session) -> AccessLogHead:
    stmt = select(AccessLogHead).where(AccessLogHead.id == HEAD_ID)
    if s.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    else:  # SQLite: a write first takes the database's write lock
        s.execute(update(AccessLogHead).where(AccessLogHead.id == HEAD_ID).values(
            updated_at=utcnow()))  # fmt: skip
    head = s.execute(stmt.execution_options(populate_existing=True)).scalar_one_or_none()
    if head is None:
        head = AccessLogHead(id=HEAD_ID, seq=0, hash=GENESIS, base_seq=0, base_hash=GENESIS)
        s.add(head)
        s.flush()
    return head


def record(
    s: Session,
    *,
    operator: str,
    kind: str,
    action: str,
    member_id: int | None = None,
    subject_ref: str | None = None,
    request_id: int | None = None,
    details: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> int:
    """Append one entry in the caller's archive transaction; returns its seq. ``where``: the
    접속지 when the caller knows it better than this process (a web console's client address);
    default :func:`origin`."""
    check_entry(kind, operator)
    if member_id is not None and subject_ref is None:
        subject_ref = keystore.subject_ref(s, member_id)
    head = _lock_head(s)
    fields = entry_fields(
        head.seq, operator, kind, action, subject_ref=subject_ref, request_id=request_id,
        details=details, occurred_at=utcnow(), where=where,
    )  # fmt: skip
    digest = entry_hash(head.hash, fields, HASHED)
    s.execute(insert(AccessLogEntry).values(**fields, prev_hash=head.hash, hash=digest))
    head.seq, head.hash, head.updated_at = fields["seq"], digest, fields["occurred_at"]
    s.flush()
    return int(fields["seq"])


def record_now(
    operator: str,
    kind: str,
    action: str,
    *,
    member_id: int | None = None,
    request_id: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """One entry in a short archive transaction of its own (a command's or a console page's,
    after its work). Without the master key the member's keyed ref cannot be made: the entry
    still names the request, which names the member. Database errors propagate: the CLI warns,
    the console refuses to show what it could not log."""
    try:
        with db.session("archive") as a:
            record(a, operator=operator, kind=kind, action=action, member_id=member_id,
                   request_id=request_id, details=details)  # fmt: skip
    except keystore.KeyUnavailable:
        with db.session("archive") as a:
            more = {**(details or {}), "member_ref": "unavailable: master key"}
            record(a, operator=operator, kind=kind, action=action, request_id=request_id,
                   details=more)  # fmt: skip


def iter_entries(s: Session, batch: int = 2000) -> Iterator[RowMapping]:
    t = AccessLogEntry.__table__
    last = -1
    while True:
        page = s.execute(select(t).where(t.c.seq > last).order_by(t.c.seq).limit(batch)).all()
        if not page:
            return
        for row in page:
            yield row._mapping
        last = page[-1].seq


def iter_month(s: Session, start: datetime, end: datetime) -> Iterator[RowMapping]:
    """Entries with ``start <= occurred_at < end`` in seq order (the monthly review's input)."""
    t = AccessLogEntry.__table__
    stmt = (
        select(t)
        .where(t.c.occurred_at >= start, t.c.occurred_at < end)
        .order_by(t.c.seq)
        .execution_options(yield_per=2000)
    )
    for row in s.execute(stmt):
        yield row._mapping


def verify(s: Session, anchors: Mapping[int, str] | None = None) -> VerifyResult:
    """The chain from its base, against the head row and ``anchors`` (checkpoints kept outside
    the archive DB, `lifecycle.vault.checkpoints`): without them, deleting the newest entries
    and moving the head back together would pass."""
    head = s.get(AccessLogHead, HEAD_ID)
    if head is None:
        return VerifyResult(False, 0, 0, "access log head row missing")
    base_seq = int(head.base_seq)
    anchors = dict(anchors or {})
    if anchors.get(base_seq, head.base_hash) != head.base_hash:
        return VerifyResult(False, 0, base_seq, "hash differs from the checkpoint of this entry")
    # Entries up to the base were pruned (2 years), and a prune entry vouches for the base.
    kept = {seq: h for seq, h in anchors.items() if seq > base_seq}
    res = verify_chain(
        iter_entries(s), (int(head.seq), head.hash), kept, names=HASHED,
        base=(base_seq, head.base_hash),
    )  # fmt: skip
    if not res.ok:
        reason = (res.reason or "").replace("ledger", "access log")
        return VerifyResult(False, res.checked, res.first_bad_seq, reason)
    if head.base_seq:
        # The base may only move through a prune, which names it inside the chain.
        named = [
            e for e in iter_entries(s)
            if e["kind"] == "prune" and e["details"].get("base_seq") == head.base_seq
            and e["details"].get("base_hash") == head.base_hash
        ]  # fmt: skip
        if not named:
            return VerifyResult(False, res.checked, int(head.base_seq),
                                "start of the access log moved without a prune entry")  # fmt: skip
    return res


def prune(s: Session, *, now: datetime | None = None, operator: str = "lifecycle-beat") -> int:
    """Delete entries older than the retention period from the start of the chain."""
    now = now or utcnow()
    cutoff = now - timedelta(days=RETENTION_DAYS)
    head = _lock_head(s)
    t = AccessLogEntry.__table__
    # Only a prefix of the chain: the newest old entry bounds it, so nothing in between survives.
    last = s.execute(
        select(t.c.seq, t.c.hash).where(t.c.occurred_at < cutoff).order_by(t.c.seq.desc()).limit(1)
    ).first()
    if last is None:
        return 0
    n = cast("CursorResult[Any]", s.execute(delete(t).where(t.c.seq <= last.seq))).rowcount or 0
    head.base_seq, head.base_hash = int(last.seq), last.hash
    s.flush()
    record(
        s, operator=operator, kind="prune", action="access log prune (2 years)",
        details={"base_seq": int(last.seq), "base_hash": last.hash, "rows": int(n),
                 "cutoff": cutoff.date().isoformat()},
    )  # fmt: skip
    return int(n)


def export_csv(s: Session, out: IO[str], tz: str = "Asia/Seoul") -> int:
    # Imported here: every command writes an access-log entry, and the ledger's module (its
    # models, the checkpoint file) is needed only for this export's cell quoting.
    from lifecycle.vault.ledger import csv_cell

    zone = ZoneInfo(tz)
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([label for _, label in CSV_COLUMNS])
    n = 0
    for e in iter_entries(s):
        row = []
        for name, _ in CSV_COLUMNS:
            v = e[name]
            if v is None:
                row.append("")
            elif name == "occurred_at":
                row.append(as_utc(v).astimezone(zone).isoformat(sep=" ", timespec="seconds"))
            elif name == "details":
                row.append(csv_cell(json.dumps(v, sort_keys=True, ensure_ascii=False)) if v else "")
            else:
                row.append(csv_cell(str(v)))
        w.writerow(row)
        n += 1
    return n
