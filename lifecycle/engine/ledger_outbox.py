"""Move parked destruction entries from the primary DB's outbox into the ledger."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lifecycle.core import dbkind
from lifecycle.engine.context import EngineContext
from lifecycle.vault import ledger
from models.engine import LedgerOutbox


def flush_ledger_outbox(ctx: EngineContext, limit: int = 500) -> int:
    """Append parked entries to the ledger, then drop them from the outbox; returns how many.

    The ledger append is deduplicated by the outbox token, so a crash between the archive
    commit and the outbox delete re-appends nothing. Several flushers at once skip each other's
    rows on PostgreSQL.
    """
    total = 0
    t = LedgerOutbox.__table__
    while True:
        with ctx.primary.begin() as pconn:
            stmt = select(t.c.id, t.c.token, t.c.entry).order_by(t.c.id).limit(limit)
            stmt = dbkind.for_update(stmt, pconn, skip=True)
            rows = pconn.execute(stmt).all()
            if not rows:
                return total
            with Session(ctx.archive) as asess, asess.begin():
                ledger.append_many(
                    asess, [{**entry, "dedup_key": f"outbox:{token}"} for _id, token, entry in rows]
                )
            pconn.execute(delete(t).where(t.c.id.in_([r[0] for r in rows])))
        total += len(rows)
        if len(rows) < limit:
            return total
