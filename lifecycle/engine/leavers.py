"""The identities of members leaving with something kept, read before their row goes, so that
a former member can still be found by what they declared (lifecycle/vault/former.py).

Read in the move's primary transaction before any DELETE or blanking (the values are gone after
it), hashed and written in the move's archive transaction (they commit with the records they
lead to). Only for members who leave something kept: an archived part of theirs in this move,
or their member row kept blanked (``on_withdrawal: blank_and_keep``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from lifecycle.datamap.identities import IdentityKind, normalise
from lifecycle.datamap.links import member_id
from lifecycle.engine.context import EngineContext
from lifecycle.engine.selection import Selection
from lifecycle.vault import crypto, former, keystore

Identities = dict[int, tuple[tuple[str, str], ...]]


def declared_columns(ctx: EngineContext) -> list[tuple[IdentityKind, str]]:
    """(kind, column) of the identities the map declares on the member table."""
    sub = ctx.datamap.subject
    cols: list[tuple[IdentityKind, str | None]] = [
        ("login", sub.login_column),
        ("email", sub.email_column),
        ("mobile", sub.mobile_column),
    ]
    return [(k, c) for k, c in cols if c]


def read_identities(
    ctx: EngineContext, conn: Connection, selections: Iterable[Selection]
) -> tuple[Identities, set[int]]:
    """The canonical identities of the members whose own row the selections take or blank,
    and which of them keep their row (blanked)."""
    sub = ctx.datamap.subject
    declared = declared_columns(ctx)
    out: Identities = {}
    kept_rows: set[int] = set()
    if not declared:
        return out, kept_rows
    t = ctx.table(sub.table)
    for sel in selections:
        if sel.table.name != sub.table or sel.mode not in ("take", "blank"):
            continue
        known = None
        if sel.members_only and sel.keys is not None and sel.keys.conn is conn:
            known = sel.keys.member_rows([c for _, c in declared])
        if known is not None:
            rows: Iterable[Any] = [(k, *v) for k, v in known.items()]
        else:
            q = select(t.c[sub.key], *(t.c[c] for _, c in declared)).where(sel.where)
            rows = conn.execute(q)
        for key, *values in rows:
            mid = member_id(key)
            if not isinstance(mid, int):
                continue
            found = {
                (kind, canon)
                for (kind, _), value in zip(declared, values, strict=True)
                if (canon := normalise(kind, value)) is not None
            }
            out[mid] = tuple(sorted(found | set(out.get(mid, ()))))
            if sel.mode == "blank":
                kept_rows.add(mid)
    return out, kept_rows


def record_kept(
    s: Session,
    identities: Identities,
    kept_rows: set[int],
    kept: Mapping[str, date],
) -> int:
    """Hash the identities of the leavers who keep something (``kept``: pseudonym -> last day
    of a part archived in this move), and move the day of former members' entries on."""
    key = keystore.ref_key(s)
    leavers = []
    for mid, found in identities.items():
        ref = crypto.subject_ref(key, mid)
        if ref in kept or mid in kept_rows:
            leavers.append(
                former.Leaver(mid, ref, found, kept.get(ref), kept_live=mid in kept_rows)
            )
    written = former.record(s, leavers)
    mine = {lv.subject_ref for lv in leavers}
    former.extend(s, {ref: day for ref, day in kept.items() if ref not in mine})
    return written
