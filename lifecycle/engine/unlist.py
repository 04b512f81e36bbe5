"""Removing leavers from columns that list members (``also_names:`` with ``list:``).

A poll's ``mb_ids`` (``kim01,lee_mh7,``) names every member who voted. When members leave
(withdrawal, the sweep's member batches, replay), each row listing one of them is rewritten
without their entries, in the move's transaction, after every DELETE (like the other
``also_names`` clearings); the other entries stay as they were. The rows are found by a
containment test (no index serves it: the table is read whole) and each is then parsed, so
``kim01`` never matches ``kim012``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select, update

from lifecycle.datamap.member_lists import may_list, named, without
from lifecycle.datamap.model import MemberLink, TableMap
from lifecycle.engine.context import EngineContext
from lifecycle.requests import holds
from models.guards import LegalHold

# The ledger category of a removed entry when the table has none of its own (a poll's voter
# list): the entry is the member's login id or number, profile data ended by withdrawal.
LISTED_CATEGORY = "profile"


def listed_link(tm: TableMap, column: str) -> MemberLink:
    return next(lk for lk in tm.also_names if lk.column == column and lk.separator)


def categories(tm: TableMap) -> list[str]:
    """What removing an entry is recorded as destroying: the table's categories, else
    :data:`LISTED_CATEGORY`."""
    return list(tm.columns) or [LISTED_CATEGORY]


def held_members(
    ctx: EngineContext, conn: Connection, ids: Sequence[Any], now: datetime
) -> set[Any]:
    """Members of ``ids`` under an active legal hold: their entries stay."""
    if not ids:
        return set()
    h = LegalHold.__table__
    today = ctx.local_date(now)
    q = select(h.c.member_id).where(h.c.member_id.in_(sorted(set(ids))), holds.is_active(today))
    return {m for (m,) in conn.execute(q)}


def unlist_rows(
    ctx: EngineContext,
    conn: Connection,
    tm: TableMap,
    lk: MemberLink,
    where: Any,
    members: dict[Any, Any],
    now: datetime,
) -> list[tuple[Any, list[Any]]]:
    """Rewrite the rows of ``tm`` (within ``where``) listing one of ``members`` (link value ->
    member id) in ``lk.column`` without those entries. Returns (row key, member ids removed)
    per row changed. Rows are locked before they are read, so a neighbouring batch's change
    to the same list is never overwritten."""
    assert lk.separator is not None
    held = held_members(ctx, conn, sorted(set(members.values())), now)
    members = {v: m for v, m in members.items() if m not in held}
    if not members:
        return []
    t = ctx.table(tm.name)
    keys = [t.c[k] for k in tm.keys]
    col = t.c[lk.column]
    found = conn.execute(
        select(*keys, col).where(and_(where, may_list(col, members))).with_for_update()
    ).all()
    out: list[tuple[Any, list[Any]]] = []
    for row in found:
        value = row[-1]
        who = named(value, lk.separator, members)
        if not who:
            continue
        drop = [v for v, m in members.items() if m in who]
        key = tuple(row[:-1])
        match = and_(*(k == v for k, v in zip(keys, key, strict=True)))
        conn.execute(update(t).where(match).values({lk.column: without(value, lk.separator, drop)}))
        out.append((key, who))
    return out
