"""Linkage: rows the map links to one member that hold another member's identity.

A table that declares ``identities: {email: od_email}`` says that column holds the identity of
the row's own member. When it holds another member's instead (every order a shop administrator
keyed in names the administrator as its member), the map's link for that table is wrong: a
withdrawal would leave that customer's order behind and take the administrator's, and an access
package (열람) for the administrator would hand over other customers' data. `datamap check`
counts such rows per table and column, and an access package that would hold one is refused.

Values are compared in their canonical forms (:mod:`lifecycle.datamap.identities`); the member
table is searched with index-friendly ``IN`` lists of the forms a value may be stored in, so the
cost is bounded by the rows looked at, not by the number of members. Only counts and column
names ever leave this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from lifecycle.datamap.identities import IdentityKind, normalise
from lifecycle.datamap.model import DataMap

# Rows of each table `datamap check` looks at (the newest by key).
SAMPLE = 2000
_CHUNK = 500
# What a row's member id reads as when its link names no member (NULL, 0, '').
_NO_MEMBER = (None, 0, "")


@dataclass(frozen=True)
class Misfit:
    """Rows of ``table`` whose ``column`` names another member than the row's own."""

    table: str
    column: str
    kind: str
    rows: int

    def line(self) -> str:
        return (
            f"{self.table}: {self.rows} row(s) linked to one member hold another member's "
            f"{self.kind} in {self.column}: the map's link for {self.table} is wrong"
        )


def stored_forms(kind: IdentityKind, canonical: str) -> list[str]:
    """The ways a value with this canonical form is commonly stored (for an indexed IN)."""
    if kind == "email":
        return [canonical]
    local = canonical[3:]
    head, tail = (local[:-4], local[-4:])
    prefix = canonical[:3]
    return [
        canonical,
        f"{prefix}-{head}-{tail}",
        f"{prefix} {head} {tail}",
        f"+82-{prefix[1:]}-{head}-{tail}",
        f"+82 {prefix[1:]}-{head}-{tail}",
        f"+82{canonical[1:]}",
    ]


def owners_of(
    dm: DataMap, conn: Connection, metadata: Any, kind: IdentityKind, values: Iterable[str]
) -> dict[str, set[Any]]:
    """canonical value -> the member ids whose contact column holds it."""
    s = dm.subject
    column = s.email_column if kind == "email" else s.mobile_column
    assert column is not None
    t = metadata.tables[s.table]
    wanted = {v for v in values if v}
    forms: dict[str, str] = {}
    for v in wanted:
        for f in stored_forms(kind, v):
            forms[f] = v
    # Sites keep the case an address was typed in: ask for it as given and lower-cased.
    raw = list(forms)
    out: dict[str, set[Any]] = {}
    for i in range(0, len(raw), _CHUNK):
        chunk = raw[i : i + _CHUNK]
        rows = conn.execute(select(t.c[s.key], t.c[column]).where(t.c[column].in_(chunk))).all()
        for key, stored in rows:
            canonical = normalise(kind, stored)
            if canonical in wanted:
                out.setdefault(canonical, set()).add(key)
    return out


def misfits(
    dm: DataMap,
    conn: Connection,
    metadata: Any,
    rows: Mapping[str, list[tuple[Any, dict[str, Any]]]],
) -> list[Misfit]:
    """For ``rows`` (table -> [(the row's member id, {identity column: value})]), the rows
    whose identity column holds another member's identity and not their own."""
    out: list[Misfit] = []
    for table, items in sorted(rows.items()):
        tm = dm.tables[table]
        for kind, column in tm.identities:
            k: IdentityKind = "email" if kind == "email" else "mobile"
            seen = [(member, normalise(k, values.get(column))) for member, values in items]
            found = owners_of(dm, conn, metadata, k, (v for _m, v in seen if v))
            # A row linked to no member (a guest order) is not a misfit of the link; a link
            # holding the key names none with 0 as with NULL (guest_rows.link_empty).
            n = sum(
                1
                for member, v in seen
                if member not in _NO_MEMBER and v and v in found and member not in found[v]
            )
            if n:
                out.append(Misfit(table, column, kind, n))
    return out


def sample_rows(
    dm: DataMap, conn: Connection, metadata: Any, limit: int = SAMPLE
) -> dict[str, list[tuple[Any, dict[str, Any]]]]:
    """The newest ``limit`` rows (by key) of every table declaring identities, with their
    member id and identity columns."""
    out: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for tm in dm.tables.values():
        if not tm.identities or tm.table not in metadata.tables:
            continue
        t = metadata.tables[tm.table]
        cols = [c for _k, c in tm.identities]
        member = dm.member_expr(tm.name, metadata)
        query = select(member, *(t.c[c] for c in cols)).limit(limit)
        if tm.where:
            query = query.where(tm.scope(t))
        if tm.keys:
            query = query.order_by(*(t.c[k].desc() for k in tm.keys))
        out[tm.name] = [(r[0], dict(zip(cols, r[1:], strict=True))) for r in conn.execute(query)]
    return out


def check(dm: DataMap, engine: Any, metadata: Any) -> list[Misfit]:
    """What `datamap check` reports: misfits among each table's newest rows."""
    with engine.connect() as conn:
        return misfits(dm, conn, metadata, sample_rows(dm, conn, metadata))
