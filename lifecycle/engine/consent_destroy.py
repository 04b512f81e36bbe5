"""What a consent withdrawal destroys (개인정보 보호법 제37조): the categories that depended on the
consent, in the member's live rows and in the archive.

- Live rows (:func:`destroy_dependants`): a processing or guardian consent carries its
  categories (:attr:`ConsentPurpose.destroys`); withdrawing it destroys them in the member's
  rows of the primary DB.
- Archived records (:func:`destroy_archived`): a retention consent keeps its categories after
  the member leaves (a rule names it, ``consent: PURPOSE``); withdrawing it destroys the
  records the archive keeps only because of it (:func:`kept_by_consent`). Records a statute
  keeps (a rule with a legal period and no consent) stay, and are counted
  (:func:`kept_by_law`) so the answer can say so.

Used by the consent withdrawal request (``lifecycle.rights.consent``) and by the ledger replay
after a restore (``lifecycle.engine.replay``), so both destroy the same thing the same way.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, delete, func, or_, select, update
from sqlalchemy import types as sqltypes
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.datamap.consents import ConsentPurpose, holding
from lifecycle.datamap.model import DataMap
from lifecycle.engine.context import EngineContext
from lifecycle.vault import former, keystore
from models.archive import ArchivedRecord


def _blank(col: Column[Any]) -> Any:
    """What a cleared column holds: NULL where allowed, else '' for text."""
    if col.nullable:
        return None
    if isinstance(col.type, sqltypes.String):
        return ""
    raise UserError(f"column {col.table.name}.{col.name} cannot be cleared (NOT NULL, not text)")


def withdrawn_value(col: Column[Any]) -> Any:
    """What a consent column holds once the consent is withdrawn (a replay clearing it again;
    the request sets the site's own value, ``lifecycle.rights.consent``)."""
    if isinstance(col.type, sqltypes.Boolean):
        return False
    if col.nullable:
        return None
    if isinstance(col.type, sqltypes.Integer | sqltypes.Numeric):
        return 0
    return _blank(col)


def destroy_dependants(
    ctx: EngineContext, conn: Connection, p: ConsentPurpose, member_id: int
) -> dict[str, int]:
    """Destroy the categories ``p`` carries in the member's live rows: rows holding only such
    categories are deleted, other rows have those columns cleared. Checked by re-reading in the
    same transaction; returns table -> rows destroyed or cleared (tables touched only)."""
    dm = ctx.datamap
    md = ctx.metadata
    done: dict[str, int] = {}
    for tm in dm.tables_in_dependency_order():
        cats = [c for c in tm.columns if c in p.destroys]
        if not cats:
            continue
        t = ctx.table(tm.name)
        mine = tm.scoped(t, dm.member_expr(tm.name, md) == member_id)
        cols = [t.c[c] for cat in cats for c in tm.columns[cat]]
        if tm.name != dm.subject.table and set(tm.columns) <= set(p.destroys):
            n = conn.execute(delete(t).where(mine)).rowcount
            left = conn.scalar(select(func.count()).select_from(t).where(mine))
        else:
            held = or_(*(holding(c) for c in cols))
            n = conn.execute(
                update(t).where(mine, held).values({c.name: _blank(c) for c in cols})
            ).rowcount
            left = conn.scalar(select(func.count()).select_from(t).where(mine, held))
        if left:
            raise UserError(
                f"consent withdrawal: {left} row(s) of {tm.name} still hold {', '.join(cats)}"
            )
        if n:
            done[tm.name] = int(n)
    return done


# -- the archive --------------------------------------------------------------------------------


def kept_by_consent(dm: DataMap, p: ConsentPurpose) -> list[str]:
    """The categories the archive keeps only under ``p`` (a retention rule naming it)."""
    return sorted(cat for cat, rule in dm.rules.items() if rule.consent == p.name)


def _mine(ref: str, categories: list[str], before: datetime | None) -> Any:
    r = ArchivedRecord
    cond = [r.subject_ref == ref, r.category.in_(categories)]
    if before is not None:
        # A replay redoes only what was there when the withdrawal was done: a record archived
        # since (the member gave the consent again and left again) is kept.
        cond.append(r.archived_at < before)
    return cond


def archived_counts(
    a: Session, ref: str, categories: list[str], before: datetime | None = None
) -> dict[str, int]:
    """source table -> archived records of the member (``ref``) in ``categories``."""
    if not categories:
        return {}
    r = ArchivedRecord
    rows = a.execute(
        select(r.source_table, func.count())
        .where(*_mine(ref, categories, before))
        .group_by(r.source_table)
    ).all()
    return {str(t): int(n) for t, n in rows}


def kept_by_law(dm: DataMap, a: Session, ref: str, p: ConsentPurpose) -> dict[str, int]:
    """category -> the member's archived records kept by a statute, not by ``p`` (they stay)."""
    r = ArchivedRecord
    mine = kept_by_consent(dm, p)
    rows = a.execute(
        select(r.category, func.count())
        .where(r.subject_ref == ref, r.category.not_in(mine or [""]))
        .group_by(r.category)
    ).all()
    return {str(c): int(n) for c, n in rows}


def archived_files(ctx: EngineContext, a: Session, ref: str, categories: list[str]) -> list[str]:
    """The file paths the member's archived records in ``categories`` name (the map's ``files:``
    columns of their table, when the column is in the record's category). The records are
    decrypted for that only; a record whose key is already destroyed names nothing anyone can
    read, and its file was handed to the shredder when the purge destroyed the key's rows."""
    if not categories:
        return []
    dm = ctx.datamap
    wanted: dict[tuple[str, str], list[str]] = {}
    for tm in dm.tables.values():
        for col in tm.files:
            cat = tm.category_of(col)
            if cat in categories:
                wanted.setdefault((tm.name, cat), []).append(col)
    if not wanted:
        return []
    paths: list[str] = []
    r = ArchivedRecord
    recs = a.scalars(select(r).where(*_mine(ref, categories, None))).all()
    for rec in recs:
        cols = wanted.get((rec.source_table, rec.category))
        if not cols:
            continue
        try:
            values = json.loads(keystore.decrypt_archived(a, rec))
        except keystore.KeyDestroyed:
            continue
        paths.extend(str(values[c]) for c in cols if values.get(c))
    return paths


def destroy_archived(
    a: Session, ref: str, categories: list[str], before: datetime | None = None
) -> dict[str, int]:
    """Delete the member's archived records in ``categories`` (in the caller's archive
    transaction), checked by re-counting; returns source table -> records deleted."""
    if not categories:
        return {}
    counts = archived_counts(a, ref, categories, before)
    if not counts:
        return {}
    r = ArchivedRecord
    a.execute(delete(r).where(*_mine(ref, categories, before)))
    left = archived_counts(a, ref, categories, before)
    if left:
        raise UserError(
            f"consent withdrawal: {sum(left.values())} archived record(s) still there after "
            "their deletion"
        )
    # These may have been the former member's last records: then nothing is kept that their
    # identity hashes could lead to (lifecycle/vault/former.py).
    former.forget_if_none_left(a, ref)
    return counts
