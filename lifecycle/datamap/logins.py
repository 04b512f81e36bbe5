"""A login column that is also the member's email (or mobile) column: OpenCart and WooCommerce
log in by ``email``. The map names it as ``login_column`` *and* under ``contact:`` and a
category, so

- every command's MEMBER_ID may be that address (looked up case-blind, as those sites do;
  a MEMBER_ID of digits alone, which no address is, stays the numeric member id), and an
  address two members share is refused in one line rather than guessed;
- ``lifecycle correct`` may change it (it is the member's contact data), but never to an address
  another member already logs in with (:func:`refuse_taken`), which the site's own sign-up
  refuses too: two members with one login could no longer be told apart.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from lifecycle.core.errors import UserError
from lifecycle.datamap.model import Subject


def login_where(subject: Subject, t: Any, text: str) -> Any:
    """The condition finding the member whose login is ``text``."""
    col = t.c[subject.login_column]
    if subject.login_is_contact:
        return func.lower(col) == text.lower()
    return col == text


def lookup(subject: Subject, t: Any, conn: Any, text: str) -> int | None:
    """The member id whose login is ``text``; None if none; a UserError if several."""
    q = select(t.c[subject.key]).where(login_where(subject, t, text)).limit(2)
    keys = [k for (k,) in conn.execute(q)]
    if len(keys) > 1:
        raise UserError(
            f"several members have that {subject.table}.{subject.login_column}: give the "
            "numeric member id"
        )
    return int(keys[0]) if keys else None


def refuse_taken(
    subject: Subject, t: Any, conn: Any, member_id: int, values: dict[str, Any]
) -> None:
    """A one-line UserError when a correction would give the member a login another member
    already has (only for a login that is a contact column; others cannot be corrected)."""
    if not subject.login_is_contact:
        return
    new = values.get(subject.login_column)  # type: ignore[arg-type]
    if not isinstance(new, str) or not new.strip():
        return
    q = (
        select(t.c[subject.key])
        .where(login_where(subject, t, new.strip()), t.c[subject.key] != member_id)
        .limit(1)
    )
    if conn.execute(q).first() is not None:
        raise UserError(
            f"field {subject.login_column}: another member already has that login; nothing "
            "was changed"
        )
