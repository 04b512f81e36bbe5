"""Rows whose member a meta row names (``owner:``), found once before anything is deleted.

A WooCommerce order's customer is its ``wp_postmeta`` row ``_customer_user``. The meta table
is usually mapped too (through ``via`` to the orders), so it is deleted first, children before
parents, and the order could no longer be told from its meta row. The keys of the members'
owned rows, and which member each belongs to, are therefore read in the move's transaction
(its members locked) before any DELETE, and the statements name those keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, select

from lifecycle.core import dbkind
from lifecycle.datamap.links import coerce
from lifecycle.datamap.model import TableMap
from lifecycle.engine.context import EngineContext


def owned_where(ctx: EngineContext, tm: TableMap, t: Any, ids: Sequence[Any]) -> Any:
    """Rows of ``tm`` whose owner meta row names one of the members ``ids``, exactly (a row
    with two such meta rows belongs to the one :meth:`DataMap.owner_expr` gives)."""
    o = tm.owner
    assert o is not None
    dm = ctx.datamap
    s = dm.subject
    m = ctx.table(o.table).alias()
    st = ctx.subject_table
    if o.member_key == s.key:
        hit = coerce(m.c[o.value], st.c[s.key].type).in_(list(ids))
    else:
        hit = m.c[o.value].in_(select(st.c[o.member_key]).where(st.c[s.key].in_(list(ids))))
    row_key = t.c[o.row_key]
    near = coerce(row_key, m.c[o.column].type).in_(
        select(coerce(m.c[o.column], row_key.type)).where(o.rows(m), hit)
    )
    return and_(near, dm.owner_expr(tm, t, ctx.metadata).in_(list(ids)))


class OwnedRows:
    """table -> {row key: member id} for the rows of every ``owner:`` table the members
    ``ids`` own, read through ``conn`` before any row is deleted."""

    def __init__(self, ctx: EngineContext, conn: Connection, ids: Sequence[Any]) -> None:
        self.by_table: dict[str, dict[Any, Any]] = {}
        dm = ctx.datamap
        for tm in dm.tables.values():
            if tm.owner is None:
                continue
            t = ctx.table(tm.name)
            member = dm.owner_expr(tm, t, ctx.metadata)
            got: dict[Any, Any] = {}
            step = dbkind.in_chunk(conn)
            for i in range(0, len(ids), step):
                part = ids[i : i + step]
                q = select(t.c[tm.owner.row_key], member).where(
                    tm.scoped(t, owned_where(ctx, tm, t, part))
                )
                got.update((k, v) for k, v in conn.execute(q))
            self.by_table[tm.name] = got

    def keys(self, table: str) -> list[Any]:
        return sorted(self.by_table.get(table, {}))

    def member_of(self, table: str) -> dict[Any, Any] | None:
        return self.by_table.get(table)
