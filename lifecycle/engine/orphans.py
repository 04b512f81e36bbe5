"""Rows whose member no longer exists: orphans, and the sweep's handling of them.

A site that deletes the member row itself (Rhymix's own 탈퇴, an administrator's DELETE by
hand) leaves every other row of that member under a link value no member has. The sweep
selects withdrawn members from the members' table, so without this module those rows would
stay forever, unseen.

*Orphan row.* A row of a mapped table (not the members' table, the table's ``orphans:`` not
``false``) whose member link column holds a value that is not empty and matches no member row
(by the link's ``member_key``: the key, or the login id). Empty: NULL; ``0`` in a numeric
column; ``''`` in a text column; and the values the table's ``orphans: {guests: [...],
guests_below: N}`` declares (guests, anonymous posts). Tables reached ``via`` a parent follow
their parent row and are never orphans themselves.

*Orphaned member.* The member id (the link value) of an orphan row in a column holding the
subject key. The sweep records the first time it saw each (``lifecycle_orphan_members``): the
site left no withdrawal time, so that is the earliest time the lifecycle can prove the member
was gone, and retention counts from it (the ledger's reason says so). After
:data:`ORPHAN_GRACE` the member's rows are taken like a withdrawn member's, in the same
set-based batches (:func:`lifecycle.engine.selection.subject_selections`).

*Why a grace.* A site writing a new member and its first post in separate transactions (or
on a table without transactions) can show the post a moment before the member row commits; a
scan in that moment sees an orphan. The grace (at least one sweep earlier, and twelve hours)
lets such a member appear; a member row that appears meanwhile ends the orphan record and
nothing is taken. Twelve hours rather than a day so a nightly sweep starting a little earlier
than the previous one still takes what that one saw.

A column naming a second member (``also_names:``) is a link here too: its orphaned ids are
recorded, and the orphan batch clears them in the rows other members own.

Login-id links (``mb_id``) are counted (``datamap check`` per table; the sweep's
``orphan_rows_unhandled``, which ``lifecycle status`` lists as attention) but not taken, on
purpose: there is no member id to file them under (record, batch, lock, archive and ledger are
all keyed by it), and a login id the site freed may already be the next sign-up's, so whose
the rows are is the operator's call (docs/engine.md, "Orphans").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, and_, delete, exists, func, insert, select, update
from sqlalchemy import types as sqltypes

from lifecycle.core import dbkind
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.links import INT_TEXT, is_int, link_eq
from lifecycle.datamap.model import DataMap, MemberLink, TableMap
from lifecycle.engine.context import EngineContext
from lifecycle.engine.selection import SQLITE_IN_CHUNK, open_request_exists
from models.engine import OrphanMember

ORPHAN_GRACE = timedelta(hours=12)
# The sweep run's count of orphan rows it cannot take (login-id links).
UNHANDLED = "orphan_rows_unhandled"

REASON = (
    "회원 행 없음: 사이트가 회원을 직접 삭제함, 탈퇴 시각 미상 — 보존기간은 라이프사이클이 "
    "처음 확인한 시각부터 (member row deleted by the site; withdrawal time unknown, retention "
    "counted from when the lifecycle first saw the member gone, the earliest time it can prove)"
)


@dataclass(frozen=True)
class OrphanCount:
    table: str
    column: str
    rows: int
    handled: bool  # the sweep takes them (a link holding the subject key)

    def line(self) -> str:
        how = (
            f"the sweep takes them {_hours(ORPHAN_GRACE)} after it first sees them"
            if self.handled
            else "not taken by the sweep (a login-id link): delete them or map the member"
        )
        return (
            f"orphans: {self.table}.{self.column}: {self.rows} row(s) name a member that no "
            f"longer exists; {how}"
        )


def _hours(d: timedelta) -> str:
    return f"{int(d.total_seconds() // 3600)}h"


def orphan_links(dm: DataMap) -> list[tuple[TableMap, MemberLink]]:
    """Every direct member link of a mapped table that may hold orphans."""
    return [
        (tm, lk)
        for tm in dm.tables.values()
        if tm.name != dm.subject.table and tm.orphans.enabled
        # A second member named in someone's row (also_names) is a link too: when the site
        # deleted that member's row, the sweep clears their name there.
        for lk in (*tm.links, *tm.also_names)
        # A list (a poll's voters) is no single value to compare, nor an id inside text (a
        # recommender's point row): not looked at.
        if lk.separator is None and lk.template is None
    ]


def _numeric(col: Any) -> bool:
    return isinstance(col.type, sqltypes.Integer | sqltypes.Numeric)


def orphan_clause(dm: DataMap, metadata: Any, tm: TableMap, lk: MemberLink) -> Any:
    """Rows of ``tm`` whose ``lk`` names a member no member row has (see the module doc)."""
    t = metadata.tables[tm.table]
    col = lk.expr(t)
    st = metadata.tables[dm.subject.table].alias()
    conds = [col.is_not(None)]
    numeric = _numeric(col)
    if numeric:
        conds.append(col != 0)
    elif isinstance(col.type, String):
        conds.append(col != "")
        if is_int(st.c[lk.member_key].type):
            # Text holding the integer id (``text_ids:``): only a plain positive integer names
            # a member at all, so a guest's key ('t_5f1c…' in WooCommerce's sessions) or '0'
            # names nobody and is no orphan.
            conds.append(col.regexp_match(INT_TEXT))
    guests = [_as(v, numeric) for v in tm.orphans.guests]
    guests = [v for v in guests if v is not None]
    if guests:
        conds.append(col.not_in(guests))
    if tm.orphans.guests_below is not None and numeric:
        conds.append(col >= tm.orphans.guests_below)
    # link_eq: a member id held as text (``text_ids:``) is compared through a guarded cast.
    conds.append(~exists().where(link_eq(st.c[lk.member_key], col)))
    return tm.scoped(t, and_(*conds))


def _as(value: Any, numeric: bool) -> Any:
    """A declared guest value in the column's type (a non-number in a numeric column: none)."""
    if not numeric:
        return str(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def count_orphans(dm: DataMap, conn: Connection, metadata: Any) -> list[OrphanCount]:
    """Orphan rows per table and link column (only those with some)."""
    out: list[OrphanCount] = []
    for tm, lk in orphan_links(dm):
        q = select(func.count()).select_from(metadata.tables[tm.table])
        n = int(conn.execute(q.where(orphan_clause(dm, metadata, tm, lk))).scalar_one())
        if n:
            out.append(OrphanCount(tm.name, lk.column, n, lk.member_key == dm.subject.key))
    return out


def _key_links(dm: DataMap) -> list[tuple[TableMap, MemberLink]]:
    return [(tm, lk) for tm, lk in orphan_links(dm) if lk.member_key == dm.subject.key]


def record_orphans(ctx: EngineContext, conn: Connection, now: datetime) -> dict[str, int]:
    """Scan for orphaned member ids and bring ``lifecycle_orphan_members`` up to date: new
    ids recorded as first seen ``now``, ids seen again keep their first time, ids no longer
    seen (their rows went, or their member row appeared) are forgotten. Set-based: one
    ``SELECT DISTINCT`` per link column."""
    dm = ctx.datamap
    seen: set[int] = set()
    for tm, lk in _key_links(dm):
        col = lk.expr(ctx.table(tm.name))
        q = select(col).where(orphan_clause(dm, ctx.metadata, tm, lk)).distinct()
        # A text link may hold something that is no id at all: not a member id to record.
        seen.update(int(v) for (v,) in conn.execute(q) if str(v).strip().isdigit())
    # Login-id links: counted only (no member id to record), said in the run's counts.
    unhandled = 0
    for tm, lk in orphan_links(dm):
        if lk.member_key != dm.subject.key:
            q = select(func.count()).select_from(ctx.table(tm.name))
            q = q.where(orphan_clause(dm, ctx.metadata, tm, lk))
            unhandled += int(conn.execute(q).scalar_one())
    o = OrphanMember.__table__
    known = {int(v) for (v,) in conn.execute(select(o.c.member_id))}
    new = sorted(seen - known)
    again = sorted(seen & known)
    gone = sorted(known - seen)
    for part in _chunks(new):
        conn.execute(
            insert(o), [{"member_id": i, "first_seen_at": now, "last_seen_at": now} for i in part]
        )
    for part in _chunks(again):
        conn.execute(update(o).where(o.c.member_id.in_(part)).values(last_seen_at=now))
    for part in _chunks(gone):
        conn.execute(delete(o).where(o.c.member_id.in_(part)))
    return {UNHANDLED: unhandled} if unhandled else {}


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + SQLITE_IN_CHUNK] for i in range(0, len(ids), SQLITE_IN_CHUNK)]


def due_query(ctx: EngineContext, now: datetime) -> Any:
    """Orphaned member ids past the grace, not owned by an open withdrawal request, with when
    each was first seen (their purpose end)."""
    o = OrphanMember.__table__
    return (
        select(o.c.member_id, o.c.first_seen_at)
        .where(o.c.first_seen_at <= now - ORPHAN_GRACE, ~open_request_exists(ctx, o.c.member_id))
        .order_by(o.c.member_id)
    )


def lock_orphans(
    ctx: EngineContext, conn: Connection, first: int, last: int, now: datetime
) -> tuple[dict[Any, datetime], int]:
    """Lock the batch's orphaned members past the grace; returns ``{member id: first seen}``
    and how many an unlocked read found (fewer locked: another transaction holds some).

    As for members (sweep._by_ids_mysql): the ids are read without locks, then locked by key,
    so InnoDB's next-key lock never reaches the next batch's first id. An id whose member row
    has appeared meanwhile is not an orphan: its record goes and nothing is taken.
    """
    o = OrphanMember.__table__
    q = due_query(ctx, now).where(o.c.member_id >= first, o.c.member_id <= last)
    ids = [int(v) for (v,) in conn.execute(q.with_only_columns(o.c.member_id))]
    if not ids:
        return {}, 0
    locking = select(o.c.member_id, o.c.first_seen_at).where(
        o.c.member_id.in_(ids), o.c.first_seen_at <= now - ORPHAN_GRACE
    )
    got = {
        int(k): as_utc(v)
        for k, v in conn.execute(dbkind.for_update(locking, conn, skip=True, of=o))
    }
    if got:
        s = ctx.datamap.subject
        key = ctx.subject_table.c[s.key]
        back = sorted(int(v) for (v,) in conn.execute(select(key).where(key.in_(sorted(got)))))
        if back:
            conn.execute(delete(o).where(o.c.member_id.in_(back)))
            for i in back:
                del got[i]
    return got, len(ids)


def forget_taken(ctx: EngineContext, conn: Connection, ids: list[int]) -> None:
    """Drop the records of orphaned members none of whose rows is left (a legal hold may
    keep some: their record, and its first time, stays for the next run)."""
    if not ids:
        return
    dm = ctx.datamap
    left: set[int] = set()
    for tm, lk in _key_links(dm):
        col = lk.expr(ctx.table(tm.name))
        wanted = ids if _numeric(col) else [str(i) for i in ids]
        q = select(col).where(col.in_(wanted)).distinct()
        left.update(int(v) for (v,) in conn.execute(q) if str(v).strip().isdigit())
    o = OrphanMember.__table__
    done = sorted(set(ids) - left)
    for part in _chunks(done):
        conn.execute(delete(o).where(o.c.member_id.in_(part)))
