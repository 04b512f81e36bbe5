"""Rows reached ``via`` a parent column that is not unique (``via: {..., many: true}``).

An OpenCart upload (``oc_upload.code``) is named only by the value of an order option of type
file (``oc_order_option.value``), which several options may hold. Such a row is a member's
only when every parent row naming its value is that member's (the map's member expression,
:meth:`lifecycle.datamap.model.DataMap.member_expr`); a value other members' rows, or rows
of no member (a guest's order), name too is taken for nobody: like a file another live row
still names, it stays, and the withdrawal or sweep run says so (:func:`count`,
:func:`line`) instead of passing over it in silence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from lifecycle.datamap.links import coerce
from lifecycle.engine.context import EngineContext
from lifecycle.engine.selection import in_values, member_expr, member_where

# Summary keys ``via_rows_shared:TABLE``: rows left because other rows name their value too.
VIA_SHARED = "via_rows_shared"


def count(ctx: EngineContext, conn: Connection, ids: Sequence[Any]) -> dict[str, int]:
    """Rows of each ``many`` table that the members ``ids``' parent rows name but that are
    not theirs alone; read before the move (it deletes those parent rows)."""
    out: dict[str, int] = {}
    if not ids:
        return out
    for tm in ctx.ordered_tables:
        via = tm.via
        if via is None or not via.many:
            continue
        t, parent = ctx.table(tm.name), ctx.table(via.table)
        ptm = ctx.datamap.table(via.table)
        col = coerce(t.c[via.column], parent.c[via.parent_key].type)
        pcol = coerce(parent.c[via.parent_key], t.c[via.column].type)
        named = col.in_(select(pcol).where(member_where(ctx, ptm, ids)))
        member = member_expr(ctx, tm)
        # NOT IN on a NULL member (several members, or none) is NULL, not true: said apart.
        others = or_(member.is_(None), ~in_values(ctx, member, ids))
        q = select(func.count()).select_from(t).where(tm.scoped(t, and_(named, others)))
        n = int(conn.execute(q).scalar() or 0)
        if n:
            out[f"{VIA_SHARED}:{tm.name}"] = n
    return out


def line(counts: dict[str, Any]) -> str | None:
    """One line naming the tables and counts of ``via_rows_shared:`` keys (None: none)."""
    parts = [
        f"{k.split(':', 1)[1]} {int(v)}"
        for k, v in sorted(counts.items())
        if k.startswith(VIA_SHARED + ":") and v
    ]
    if not parts:
        return None
    return (
        f"rows other members' rows (or a guest's) also name were taken for nobody "
        f"({', '.join(parts)} row(s)): decide whose they are (docs/datamap.md, via many:)"
    )
