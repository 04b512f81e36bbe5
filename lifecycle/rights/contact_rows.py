"""A correction of the member's contact, written to the other rows holding it.

A WooCommerce customer's billing email lives in a ``wp_usermeta`` row (``meta_key =
billing_email``), besides ``wp_users.user_email``. The map says so with ``contact: {email:
meta_value}`` on the entry selecting those rows; correcting the member's email (the subject's
``contact.email`` column) then rewrites those rows too, in the correction's transaction. Rows
the member does not have are not created.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from lifecycle.engine.context import get_context
from lifecycle.engine.selection import member_where


def contact_fields(subject: Any) -> dict[str, str]:
    """member-table field -> contact kind (``user_email`` -> ``email``)."""
    out = {}
    if subject.email_column:
        out[subject.email_column] = "email"
    if subject.mobile_column:
        out[subject.mobile_column] = "mobile"
    return out


def correct_contact_rows(s: Session, member_id: int, values: dict[str, Any]) -> list[str]:
    """Write the corrected contact ``values`` (member-table field -> new value) into every
    entry declaring ``contact:`` for that kind; returns the entries written (names only)."""
    ctx = get_context()
    dm = ctx.datamap
    kinds = contact_fields(dm.subject)
    wanted = {kinds[f]: v for f, v in values.items() if f in kinds}
    written: list[str] = []
    if not wanted:
        return written
    for tm in dm.tables.values():
        sets = {col: wanted[kind] for kind, col in tm.contact if kind in wanted}
        if not sets:
            continue
        t = ctx.table(tm.name)
        where = member_where(ctx, tm, [member_id])
        if s.connection().execute(update(t).where(where).values(sets)).rowcount:
            written.append(tm.name)
    return written
