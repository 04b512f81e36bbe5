"""Recording a withdrawal in the site's own terms, wherever the map says it is kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update

from lifecycle.datamap.links import record_marker
from lifecycle.engine.context import EngineContext


def record_withdrawal(ctx: EngineContext, conn: Any, member_id: int, when: datetime) -> None:
    """Mark ``member_id`` withdrawn at ``when``: the members' row (a status or marker
    column), a meta row of the member, or the lifecycle's own ``lifecycle_withdrawals``."""
    sub = ctx.datamap.subject
    if sub.marker_store is not None:
        record_marker(conn, sub.marker_store, member_id, when)
        return
    t = ctx.subject_table
    conn.execute(update(t).where(t.c[sub.key] == member_id).values(sub.withdraw_values(when)))
