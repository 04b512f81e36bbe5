"""Move parked destruction entries from the primary DB's outbox into the ledger."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from lifecycle.core import dbkind
from lifecycle.engine.context import EngineContext
from lifecycle.vault import ledger
from models.engine import LedgerOutbox


def flush_ledger_outbox(ctx: EngineContext, limit: int = 500) -> int:
    """Append parked entries to the ledger, then drop them from the outbox; returns how many.

    The ledger append is deduplicated by the outbox token, so a crash between the archive
    commit and the outbox delete re-appends nothing. Several flushers at once skip each other's
    rows where the server has ``SKIP LOCKED`` (PostgreSQL, MySQL 8, MariaDB 10.6+).
    """
    total = 0
    t = LedgerOutbox.__table__
    # MySQL/MariaDB: under REPEATABLE READ the claim and the delete also lock the gaps next to
    # the claimed rows, where other flushers and the destroying steps work: two withdrawals
    # finishing together deadlocked (the task retried after a back-off). READ COMMITTED locks
    # the claimed rows only; the claim and the delete still hold them to the commit.
    opts = {"isolation_level": "READ COMMITTED"} if dbkind.is_mysql(ctx.primary) else {}
    while True:
        with ctx.primary.connect().execution_options(**opts) as pconn, pconn.begin():
            stmt = select(t.c.id, t.c.token, t.c.entry).order_by(t.c.id).limit(limit)
            stmt = dbkind.for_update(stmt, pconn, skip=True)
            rows = pconn.execute(stmt).all()
            if not rows:
                return total
            with Session(ctx.archive) as asess, asess.begin():
                ledger.append_many(
                    asess, [{**entry, "dedup_key": f"outbox:{token}"} for _id, token, entry in rows]
                )
            # One delete per id, by primary key: `id IN (...)` was run as a scan on MariaDB,
            # which waited on the rows another flusher had claimed, and it on ours (deadlock).
            pconn.execute(
                delete(t).where(t.c.id == bindparam("oid")), [{"oid": r[0]} for r in rows]
            )
        total += len(rows)
        if len(rows) < limit:
            return total
