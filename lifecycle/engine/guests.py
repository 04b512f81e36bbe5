"""Guest rows of leaving members: rows with no member link that hold a member's identity.

A table declaring ``match_identities:`` (lifecycle/datamap/guest_rows.py) has rows that name
no member (a guest order: ``mb_id`` empty) and still are a member's, found by the email or
mobile number they hold. For a set of members (one withdrawal, or one sweep batch),
:class:`GuestMatch` reads the members' identities once, in canonical form, from the member
rows, before any step blanks them (the members' table is processed last, and this runs before
the move starts), then adds to each such table one selection: its guest rows whose identity,
in canonical form, is in the batch's list (one set-based statement per table per batch).

An identity a member who is still with the site also holds names nobody for sure: the rows
holding it are taken for neither and counted (:class:`Shared`, counts and names only, never a
value), so the request or the run says what it left. Several leaving members of one batch
sharing an identity that no live member holds: the rows are the lowest member id's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, not_, select

from lifecycle.datamap.guest_rows import guest_where, identity_in, link_empty, matched_columns
from lifecycle.datamap.identities import IdentityKind, normalise
from lifecycle.datamap.model import TableMap
from lifecycle.engine.context import EngineContext
from lifecycle.engine.selection import (
    SQLITE_IN_CHUNK,
    Selection,
    guarded_categories,
    selected_columns,
)
from lifecycle.requests import holds

# The key a move's summary counts rows left for a shared identity under.
SHARED_ROWS = "guest_rows_shared"


@dataclass(frozen=True)
class Shared:
    """Guest rows of ``table`` holding a ``kind`` that a leaving member and ``members`` live
    members hold: taken for neither."""

    table: str
    kind: str
    rows: int
    identities: int
    members: int

    @property
    def key(self) -> str:
        return f"{SHARED_ROWS}:{self.table}.{self.kind}"

    def line(self) -> str:
        return (
            f"{self.table}: {self.rows} guest row(s) hold a {self.kind} that a leaving member "
            f"shares with {self.members} member(s) still with the site ({self.identities} "
            f"{self.kind} value(s)); not taken for either"
        )


def shared_line(counts: dict[str, Any]) -> str | None:
    """One line naming tables, kinds and counts from a summary's ``guest_rows_shared:`` keys."""
    parts = [
        f"{k.split(':', 1)[1]} {int(v)}"
        for k, v in sorted(counts.items())
        if k.startswith(SHARED_ROWS + ":") and v
    ]
    if not parts:
        return None
    return (
        f"guest rows left because a member still with the site shares the identity they hold "
        f"({', '.join(parts)} row(s)): decide whose they are (docs/datamap.md, match_identities)"
    )


def _kinds(tables: Iterable[TableMap]) -> list[IdentityKind]:
    out: dict[IdentityKind, None] = {}
    for tm in tables:
        for kind, _col in matched_columns(tm):
            out[kind] = None
    return list(out)


class GuestMatch:
    """The identities of members ``ids``, canonical, read once through ``conn``: kind ->
    canonical value -> member id (``owners``), and those a live member outside ``ids`` holds
    too (``shared``: canonical value -> how many such members)."""

    def __init__(
        self,
        ctx: EngineContext,
        conn: Connection,
        ids: Sequence[Any],
        tables: Iterable[TableMap],
    ) -> None:
        self.ctx = ctx
        self.dialect = conn.dialect.name
        self.owners: dict[str, dict[str, Any]] = {}
        self.shared: dict[str, dict[str, int]] = {}
        kinds = _kinds(tables)
        if not kinds or not ids:
            return
        s = ctx.datamap.subject
        st = ctx.subject_table
        key = st.c[s.key]
        column = {"email": s.email_column, "mobile": s.mobile_column}
        cols: dict[IdentityKind, str] = {}
        for k in kinds:
            c = column.get(k)
            if c:
                cols[k] = c
        members = sorted(ids)
        for i in range(0, len(members), SQLITE_IN_CHUNK):
            part = members[i : i + SQLITE_IN_CHUNK]
            q = select(key, *(st.c[c] for c in cols.values())).where(key.in_(part))
            for row in conn.execute(q):
                for kind, value in zip(cols, row[1:], strict=True):
                    canonical = normalise(kind, value)
                    if canonical is None:
                        continue
                    mine = self.owners.setdefault(kind, {})
                    if canonical not in mine or row[0] < mine[canonical]:
                        mine[canonical] = row[0]
        for kind, col in cols.items():
            self.shared[kind] = self._held_elsewhere(conn, kind, col, members)

    def _held_elsewhere(
        self, conn: Connection, kind: IdentityKind, col: str, ids: list[Any]
    ) -> dict[str, int]:
        """The batch's values of ``kind`` a member outside ``ids`` who has not withdrawn holds
        too, with how many such members (one IN list of canonical forms per chunk)."""
        s = self.ctx.datamap.subject
        st = self.ctx.subject_table
        key = st.c[s.key]
        mine = sorted(self.owners.get(kind, {}))
        out: dict[str, int] = {}
        for i in range(0, len(mine), SQLITE_IN_CHUNK):
            part = mine[i : i + SQLITE_IN_CHUNK]
            q = select(key, st.c[col]).where(
                identity_in(kind, st.c[col], self.dialect, part),
                not_(s.withdrawn_clause(st)),
                key.not_in(ids),
            )
            for _key, value in conn.execute(q):
                canonical = normalise(kind, value)
                if canonical in self.owners[kind]:
                    out[canonical] = out.get(canonical, 0) + 1
        return out

    def _values(self, kind: str, *, shared: bool) -> list[str]:
        left = self.shared.get(kind, {})
        return [v for v in self.owners.get(kind, {}) if (v in left) == shared]

    def where(self, tm: TableMap, t: Any) -> Any | None:
        """``tm``'s guest rows that are the batch's members' (None: none can be)."""
        canonical: dict[str, Iterable[str]] = {
            k: self._values(k, shared=False) for k, _c in matched_columns(tm)
        }
        if not any(canonical.values()):
            return None
        return guest_where(tm, t, self.dialect, canonical)

    def owner_of(self, tm: TableMap) -> Callable[[tuple[Any, ...]], Any]:
        """The member a guest row (in :func:`selected_columns` order) is taken for."""
        cols = selected_columns(tm)
        at = [(kind, cols.index(col)) for kind, col in matched_columns(tm)]
        owners = self.owners
        shared = self.shared

        def owner(values: tuple[Any, ...]) -> Any:
            for kind, i in at:
                canonical = normalise(kind, values[i])
                if canonical is not None and canonical not in shared.get(kind, {}):
                    found = owners.get(kind, {}).get(canonical)
                    if found is not None:
                        return found
            return None

        return owner

    def left(self, conn: Connection, tm: TableMap, t: Any) -> list[Shared]:
        """Guest rows of ``tm`` holding a shared identity and no unshared one of the batch."""
        taken = self.where(tm, t)
        out: list[Shared] = []
        for kind, col in matched_columns(tm):
            values = self._values(kind, shared=True)
            if not values:
                continue
            cond = and_(link_empty(tm, t), identity_in(kind, t.c[col], self.dialect, values))
            if taken is not None:
                cond = and_(cond, not_(func.coalesce(taken, False)))
            n = int(conn.execute(select(func.count()).select_from(t).where(cond)).scalar_one())
            if n:
                others = sum(self.shared[kind][v] for v in values)
                out.append(Shared(tm.name, kind, n, len(values), others))
        return out


def with_guests(
    ctx: EngineContext,
    conn: Connection,
    kind: str,
    ended: dict[Any, datetime],
    now: datetime,
    selections: list[Selection],
    *,
    check_holds: bool = True,
) -> tuple[list[Selection], list[Shared]]:
    """``selections`` (from ``subject_selections``) and, for a withdrawal, one selection of
    guest rows per table declaring ``match_identities``; and the rows left for a shared
    identity. Dormancy takes no guest rows: the member is still with the site."""
    tables = [tm for tm in ctx.tables_ending_on(kind) if tm.match_identities]
    if kind != "withdrawal" or not tables:
        return selections, []
    match = GuestMatch(ctx, conn, list(ended), tables)
    today = ctx.local_date(now)
    extra: list[Selection] = []
    shared: list[Shared] = []
    for tm in tables:
        t = ctx.table(tm.name)
        where = match.where(tm, t)
        shared += match.left(conn, tm, t)
        if where is None:
            continue
        if check_holds:
            where = and_(where, not_(holds.categories_held(guarded_categories(ctx, tm), today)))
        base = next((s for s in selections if s.table.name == tm.name and s.mode == "take"), None)

        def _ended(_values: Any, subject: Any, _e: dict[Any, datetime] = ended) -> datetime:
            return _e.get(subject) or now

        sel = Selection(tm, where, _ended, owner_of=match.owner_of(tm))
        if base is not None:
            sel = replace(base, where=where, owner_of=sel.owner_of)
        extra.append(sel)
    return [*selections, *extra], shared
