"""Guest rows of leaving members: rows with no member link that hold a member's identity.

A table declaring ``match_identities:`` (lifecycle/datamap/guest_rows.py) has rows that name
no member (a guest order: ``mb_id`` empty) and still are a member's, found by the email or
mobile number they hold. For a set of members (one withdrawal, or one sweep batch),
:class:`GuestMatch` reads the members' identities once, in canonical form, from the member
rows, before any step blanks them (the members' table is processed last, and this runs before
the move starts), then adds to each such table one selection: its guest rows whose identity,
in canonical form, is in the batch's list (one set-based statement per table per batch).

Rows hanging off a guest row through ``via`` (an order's lines, options, totals and status
history) are the same member's: :meth:`GuestMatch.descendant_keys` reads their parents' keys
(at any depth) before anything is deleted, so they are taken with their guest row whatever
order the tables are moved in, and :meth:`GuestMatch.descendant_where` puts them in access
packages.

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

from sqlalchemy import Connection, and_, bindparam, not_, or_, select, tuple_

from lifecycle.core import dbkind
from lifecycle.datamap.guest_rows import (
    GUEST_NOTE,
    among,
    guest_where,
    identity_in,
    identity_listed,
    link_empty,
    listed,
    matched_columns,
    matched_meta,
)
from lifecycle.datamap.identities import IdentityKind, normalise
from lifecycle.datamap.links import coerce, link_eq
from lifecycle.datamap.model import TableMap
from lifecycle.engine import shared_parents
from lifecycle.engine.context import EngineContext
from lifecycle.engine.selection import (
    KeyLists,
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
    """One line naming tables, kinds and counts from a summary's ``guest_rows_shared:`` keys,
    and the rows a non-unique ``via`` left (:mod:`lifecycle.engine.shared_parents`)."""
    guests = _guest_line(counts)
    via = shared_parents.line(counts)
    return "; ".join(x for x in (guests, via) if x) or None


def _guest_line(counts: dict[str, Any]) -> str | None:
    parts = [
        f"{k.split(':', 1)[1]} {int(v)}"
        for k, v in sorted(counts.items())
        if k.startswith(SHARED_ROWS + ":") and v
    ]
    if not parts:
        return None
    return (
        f"{GUEST_NOTE} the identity they hold ({', '.join(parts)} row(s)): decide whose they "
        "are (docs/datamap.md, match_identities)"
    )


def _kinds(tables: Iterable[TableMap]) -> list[IdentityKind]:
    out: dict[IdentityKind, None] = {}
    for tm in tables:
        for kind, _col in (*matched_columns(tm), *matched_meta(tm)):
            out[kind] = None
    return list(out)


class GuestMatch:
    """Whose guest rows are whose, for members ``ids``: read once through ``conn``.

    1. The members' identities, canonical, from their rows (``owners``: kind -> canonical
       value -> member id).
    2. Per table, one read of its guest rows holding one of them (an IN list of canonical
       forms; narrowed by the link column's index to the rows naming no member): which values
       are present, and in how many rows.
    3. Only for the values found: the members outside ``ids`` still with the site who hold one
       too (``shared``). Usually there is nothing to look up, so the members' table is not
       searched for every batch.
    """

    def __init__(
        self,
        ctx: EngineContext,
        conn: Connection,
        ids: Sequence[Any],
        tables: Iterable[TableMap],
        keys: KeyLists | None = None,
    ) -> None:
        self.ctx = ctx
        self.dialect = conn.dialect.name
        self.tables = [tm for tm in tables if tm.match_identities]
        self.owners: dict[str, dict[str, Any]] = {}
        # table -> its guest rows holding a member's identity: kind -> the members' values
        # it holds (one for a whole-value column; any number for a list column)
        self.present: dict[str, list[dict[IdentityKind, set[str]]]] = {}
        # table -> the keys of those rows, in the same order (list tables are taken by key)
        self.keys: dict[str, list[tuple[Any, ...]]] = {}
        # An ``owner:`` table's guest rows (their identity in meta rows): row key -> what the
        # row holds. Kept by key: the meta rows may be deleted before the rows themselves.
        self.by_key: dict[str, dict[Any, dict[IdentityKind, str]]] = {}
        self.shared: dict[str, dict[str, int]] = {}
        kinds = _kinds(self.tables)
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
        # The batch's one read of its members' rows (KeyLists.member_rows), when it has one.
        known = keys.member_rows(list(cols.values())) if keys is not None else None
        if known is not None:
            rows: Iterable[Sequence[Any]] = [(k, *v) for k, v in sorted(known.items())]
        else:
            rows = self._member_identities(conn, key, [st.c[c] for c in cols.values()], members)
        for row in rows:
            for kind, value in zip(cols, row[1:], strict=True):
                canonical = normalise(kind, value)
                if canonical is None:
                    continue
                mine = self.owners.setdefault(kind, {})
                if canonical not in mine or row[0] < mine[canonical]:
                    mine[canonical] = row[0]
        if not self.owners:
            return
        found: dict[IdentityKind, set[str]] = {}
        for tm in self.tables:
            if tm.owner is not None:
                by_key = self.by_key[tm.name] = self._present_meta(conn, tm)
                self.present[tm.name] = [
                    {kind: {value} for kind, value in held.items()} for held in by_key.values()
                ]
                self.keys[tm.name] = [(k,) for k in by_key]
            else:
                self.present[tm.name], self.keys[tm.name] = self._present(conn, tm)
            for held in self.present[tm.name]:
                for kind, values in held.items():
                    found.setdefault(kind, set()).update(values)
        for kind, values in found.items():
            if kind in cols:
                self.shared[kind] = self._held_elsewhere(conn, kind, cols[kind], members, values)

    @staticmethod
    def _member_identities(
        conn: Connection, key: Any, cols: list[Any], members: list[Any]
    ) -> list[Sequence[Any]]:
        out: list[Sequence[Any]] = []
        step = dbkind.in_chunk(conn)
        for i in range(0, len(members), step):
            q = select(key, *cols).where(key.in_(members[i : i + step]))
            out.extend(conn.execute(q))
        return out

    def _present(
        self, conn: Connection, tm: TableMap
    ) -> tuple[list[dict[IdentityKind, set[str]]], list[tuple[Any, ...]]]:
        """Each guest row of ``tm`` holding one of the members' identities (kind -> the
        members' values it holds), and its key (one read, an IN list per identity column; a
        list column narrowed by containment, each row's list then read in Python)."""
        t = self.ctx.table(tm.name)
        matched = matched_columns(tm)
        owners = self.owners
        out: list[dict[IdentityKind, set[str]]] = []
        out_keys: list[tuple[Any, ...]] = []
        mine = {k: sorted(owners.get(k, {})) for k, _c in matched}
        longest = max((len(v) for v in mine.values()), default=0)
        seen: set[tuple[Any, ...]] = set()
        keys = [t.c[k] for k in tm.keys]
        step = dbkind.in_chunk(conn)
        for i in range(0, longest, step):
            conds = [
                (identity_listed if col in tm.identity_lists else identity_in)(
                    kind, t.c[col], self.dialect, mine[kind][i : i + step]
                )
                for kind, col in matched
            ]
            q = select(*keys, *(t.c[c] for _k, c in matched)).where(
                tm.scoped(t, and_(link_empty(tm, t), or_(*conds)))
            )
            for r in conn.execute(q):
                ident = tuple(r[: len(keys)])
                if keys and ident in seen:
                    continue  # found through both lists of an earlier chunk
                seen.add(ident)
                held: dict[IdentityKind, set[str]] = {}
                for (kind, col), value in zip(matched, r[len(keys) :], strict=True):
                    theirs = _held(tm, kind, col, value) & owners.get(kind, {}).keys()
                    if theirs:
                        held.setdefault(kind, set()).update(theirs)
                if held:
                    out.append(held)
                    out_keys.append(ident)
        return out, out_keys

    def _present_meta(self, conn: Connection, tm: TableMap) -> dict[Any, dict[IdentityKind, str]]:
        """Each row of an ``owner:`` table whose owner names no member and whose identity meta
        rows hold one of the members' identities: row key -> kind -> that value (one read, the
        meta rows of each identity key narrowed by an IN list of canonical forms)."""
        o = tm.owner
        assert o is not None
        t = self.ctx.table(tm.name)
        m = self.ctx.table(o.table).alias()
        meta = matched_meta(tm)
        kind_of = {key: kind for kind, key in meta}
        owners = self.owners
        mine = {k: sorted(owners.get(k, {})) for k, _key in meta}
        longest = max((len(v) for v in mine.values()), default=0)
        guest = self.ctx.datamap.owner_expr(tm, t, self.ctx.metadata).is_(None)
        joined = t.join(m, link_eq(m.c[o.column], t.c[o.row_key]))
        out: dict[Any, dict[IdentityKind, str]] = {}
        step = dbkind.in_chunk(conn)
        for i in range(0, longest, step):
            conds = [
                and_(
                    m.c[o.key_column] == key,
                    identity_in(kind, m.c[o.value], self.dialect, mine[kind][i : i + step]),
                )
                for kind, key in meta
            ]
            q = (
                select(t.c[o.row_key], m.c[o.key_column], m.c[o.value])
                .select_from(joined)
                .where(tm.scoped(t, guest), or_(*conds))
            )
            for row_key, key, value in conn.execute(q):
                kind = kind_of.get(key)
                canonical = normalise(kind, value) if kind is not None else None
                if kind is not None and canonical is not None and canonical in owners.get(kind, {}):
                    held = out.setdefault(row_key, {})
                    # Two meta rows of one kind: the lowest value counts, whatever the order.
                    if kind not in held or canonical < held[kind]:
                        held[kind] = canonical
        return out

    def _meta_owners(self, tm: TableMap) -> dict[Any, Any]:
        """An ``owner:`` table's guest rows that are the members': row key -> member."""
        out: dict[Any, Any] = {}
        for row_key, held in self.by_key.get(tm.name, {}).items():
            for kind, _key in matched_meta(tm):
                value = held.get(kind)
                if value is not None and self._unshared(kind, value):
                    out[row_key] = self.owners[kind][value]
                    break
        return out

    def _held_elsewhere(
        self, conn: Connection, kind: IdentityKind, col: str, ids: list[Any], values: set[str]
    ) -> dict[str, int]:
        """Which of ``values`` a member outside ``ids`` who has not withdrawn holds too, with
        how many such members."""
        s = self.ctx.datamap.subject
        st = self.ctx.subject_table
        key = st.c[s.key]
        wanted = sorted(values)
        out: dict[str, int] = {}
        step = dbkind.in_chunk(conn)
        for i in range(0, len(wanted), step):
            part = wanted[i : i + step]
            q = select(key, st.c[col]).where(
                identity_in(kind, st.c[col], self.dialect, part),
                not_(s.withdrawn_clause(st)),
                not_(among(key, ids, self.dialect, key.type)),
            )
            for _key, value in conn.execute(q):
                canonical = normalise(kind, value)
                if canonical in values:
                    out[canonical] = out.get(canonical, 0) + 1
        return out

    def _unshared(self, kind: str, value: str) -> bool:
        return value not in self.shared.get(kind, {})

    def where(self, tm: TableMap, t: Any) -> Any | None:
        """``tm``'s guest rows that are the members' (None: there are none): those holding
        one of the members' identities that no live member shares."""
        if tm.owner is not None:
            # By key (found before the move): the meta rows may go before the rows do.
            owned = sorted(self._meta_owners(tm))
            if not owned:
                return None
            return tm.scoped(t, t.c[tm.owner.row_key].in_(bindparam(None, owned, expanding=True)))
        canonical: dict[str, set[str]] = {}
        keys: list[tuple[Any, ...]] = []
        for row, key in zip(self.present.get(tm.name, []), self.keys.get(tm.name, []),
                            strict=True):  # fmt: skip
            mine = False
            for kind, values in row.items():
                for value in values:
                    if self._unshared(kind, value):
                        canonical.setdefault(kind, set()).add(value)
                        mine = True
            if mine:
                keys.append(key)
        if not canonical:
            return None
        found = guest_where(tm, t, self.dialect, dict(canonical))
        if tm.identity_lists:
            # A list may hold the value inside a longer one (``xkim@…`` holds ``kim@…``): the
            # rows read and confirmed above, by key.
            kc = [t.c[k] for k in tm.keys]
            by_key = tuple_(*kc).in_(keys) if len(kc) > 1 else kc[0].in_([k[0] for k in keys])
            found = and_(found, by_key)
        return None if found is None else tm.scoped(t, found)

    def descendant_where(self, tm: TableMap, t: Any) -> Any | None:
        """Rows of ``tm`` hanging off the members' guest rows through ``via`` (at any depth;
        None: there are none): a guest order's addresses, lines and notes are the order's.
        Subqueries on the parents: for reading (an access package), not for a DELETE that may
        run after its parents' (see :meth:`descendant_keys`)."""
        via = tm.via
        if via is None or via.match is not None:
            return None
        ptm = self.ctx.datamap.tables.get(via.table)
        if ptm is None:
            return None
        pt = self.ctx.table(ptm.name)
        pwhere = self.where(ptm, pt) if ptm.match_identities else self.descendant_where(ptm, pt)
        if pwhere is None:
            return None
        col = coerce(t.c[via.column], pt.c[via.parent_key].type)
        pcol = coerce(pt.c[via.parent_key], t.c[via.column].type)
        return tm.scoped(t, col.in_(select(pcol).where(pwhere)))

    def descendant_keys(self, conn: Connection, tm: TableMap) -> dict[Any, Any] | None:
        """For a table hanging off guest rows (:meth:`descendant_where`): its parents' keys
        it may name -> the member each parent row is taken for, read now (before any row is
        deleted), so a withdrawal selects the children by a list whatever order the tables
        are moved in. None: ``tm`` hangs off no guest row of the members."""
        via = tm.via
        if via is None or via.match is not None or via.table not in self.ctx.datamap.tables:
            return None
        return self._owners_by(conn, self.ctx.datamap.tables[via.table], via.parent_key)

    def _owners_by(self, conn: Connection, tm: TableMap, column: str) -> dict[Any, Any] | None:
        t = self.ctx.table(tm.name)
        if tm.match_identities and tm.owner is not None:
            mine = self._meta_owners(tm)
            if not mine:
                return None
            if column == tm.owner.row_key:
                return mine
            k = t.c[tm.owner.row_key]
            q = select(t.c[column], k).where(k.in_(bindparam(None, sorted(mine), expanding=True)))
            return {r[0]: mine.get(r[1]) for r in conn.execute(q)}
        if tm.match_identities:
            where = self.where(tm, t)
            if where is None:
                return None
            cols = selected_columns(tm)
            own = self.owner_of(tm)
            q = select(t.c[column], *(t.c[c] for c in cols)).where(where)
            return {r[0]: own(tuple(r[1:])) for r in conn.execute(q)}
        via = tm.via
        if via is None or via.match is not None or via.table not in self.ctx.datamap.tables:
            return None
        parents = self._owners_by(conn, self.ctx.datamap.tables[via.table], via.parent_key)
        if not parents:
            return None
        col = t.c[via.column]
        q = select(t.c[column], col).where(
            tm.scoped(t, col.in_(bindparam(None, sorted(parents), expanding=True)))
        )
        return {key: parents.get(parent) for key, parent in conn.execute(q)}

    def owner_of(self, tm: TableMap) -> Callable[[tuple[Any, ...]], Any]:
        """The member a guest row (in :func:`selected_columns` order) is taken for."""
        cols = selected_columns(tm)
        if tm.owner is not None:
            mine = self._meta_owners(tm)
            at_key = cols.index(tm.owner.row_key)
            return lambda values: mine.get(values[at_key])
        at = [(kind, col, cols.index(col)) for kind, col in matched_columns(tm)]
        owners = self.owners
        shared = self.shared

        def owner(values: tuple[Any, ...]) -> Any:
            for kind, col, i in at:
                found = [
                    owners[kind][c]
                    for c in _held(tm, kind, col, values[i])
                    if c in owners.get(kind, {}) and c not in shared.get(kind, {})
                ]
                if found:
                    # A list naming several leavers: the lowest member id, as for a shared one.
                    return min(found)
            return None

        return owner

    def left(self, tm: TableMap) -> list[Shared]:
        """Guest rows of ``tm`` that hold a member's identity only where a live member shares
        it: taken for nobody, counted per kind of the shared identity."""
        rows: dict[str, int] = {}
        values: dict[str, set[str]] = {}
        for row in self.present.get(tm.name, []):
            if any(self._unshared(k, v) for k, vs in row.items() for v in vs):
                continue
            for kind, vs in row.items():
                rows[kind] = rows.get(kind, 0) + 1
                values.setdefault(kind, set()).update(vs)
        return [
            Shared(tm.name, kind, n, len(values[kind]),
                   sum(self.shared[kind][v] for v in values[kind]))
            for kind, n in sorted(rows.items())
        ]  # fmt: skip


def _held(tm: TableMap, kind: IdentityKind, col: str, value: Any) -> set[str]:
    """The canonical identities of ``kind`` a row's ``col`` holds: its whole value, or each
    entry of a list column."""
    if col in tm.identity_lists:
        return listed(kind, value)
    canonical = normalise(kind, value)
    return {canonical} if canonical is not None else set()


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
    guest rows per table declaring ``match_identities`` (and of the rows hanging off them,
    :meth:`GuestMatch.descendant_keys`); and the rows left for a shared identity. Dormancy
    takes no guest rows: the member is still with the site."""
    tables = [tm for tm in ctx.tables_ending_on(kind) if tm.match_identities]
    if kind != "withdrawal" or not tables:
        return selections, []
    keys = next((s.keys for s in selections if s.keys is not None and s.keys.conn is conn), None)
    match = GuestMatch(ctx, conn, list(ended), tables, keys)
    today = ctx.local_date(now)
    extra: list[Selection] = []
    shared: list[Shared] = []
    for tm in tables:
        t = ctx.table(tm.name)
        where = match.where(tm, t)
        shared += match.left(tm)
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
    # What hangs off those guest rows (an order's addresses, lines, notes, through via at any
    # depth) goes with them, taken for the same member.
    for tm in ctx.tables_ending_on(kind):
        if tm.match_identities or tm.via is None:
            continue
        parents = match.descendant_keys(conn, tm)
        if not parents:
            continue
        t = ctx.table(tm.name)
        col = t.c[tm.via.column]
        where = tm.scoped(t, col.in_(bindparam(None, sorted(parents), expanding=True)))
        if check_holds:
            where = and_(where, not_(holds.categories_held(guarded_categories(ctx, tm), today)))
        at = selected_columns(tm).index(tm.via.column)

        def _owner(values: tuple[Any, ...], _p: dict[Any, Any] = parents, _i: int = at) -> Any:
            return _p.get(values[_i])

        def _child_ended(_values: Any, subject: Any, _e: dict[Any, datetime] = ended) -> datetime:
            return _e.get(subject) or now

        base = next((s for s in selections if s.table.name == tm.name and s.mode == "take"), None)
        sel = Selection(tm, where, _child_ended, owner_of=_owner)
        if base is not None:
            sel = replace(base, where=where, owner_of=_owner)
        extra.append(sel)
    return [*selections, *extra], shared
