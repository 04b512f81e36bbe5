"""Which rows of which tables a step works on, read set-based and streamed.

A :class:`Selection` is one table plus a WHERE clause and a rule for when each row's purpose
ended. :func:`iter_planned` streams the selected rows in chunks (a server-side cursor on
PostgreSQL), asks the data map what happens to each row (:meth:`TableMap.plan_row`) and yields
the decisions, so memory is bounded by the chunk size whatever the table size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple

import orjson
from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    Connection,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import NullType

from lifecycle.core import dbkind
from lifecycle.core.mysql_conv import DIVE_MARK
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.anchors import RECORD, TAX_DEADLINE, tax_day, tax_retain_until
from lifecycle.datamap.consents import given_expr
from lifecycle.datamap.guest_rows import matched_columns
from lifecycle.datamap.links import MetaMarker, coerce, db_cutoff, link_eq, to_datetime
from lifecycle.datamap.model import MemberLink, TableMap, consented
from lifecycle.engine.context import EngineContext
from lifecycle.engine.owners import OwnedRows, owned_where
from lifecycle.requests import holds
from models.requests import OPEN_STATES, LifecycleRequest

READ_CHUNK = 5000
# Rows one DELETE ... RETURNING takes at a time: bounds memory for a member with a huge table.
DELETE_CHUNK = 10_000
# SQLite limits bound parameters per statement; stay well under every version's limit.
SQLITE_IN_CHUNK = dbkind.SQLITE_IN_CHUNK

SUBJECT_LABEL = "__lc_subject"


@dataclass(frozen=True)
class Selection:
    table: TableMap
    where: ColumnElement[bool]
    # When the purpose of a row ended, given (row tuple, member id): from its member
    # (withdrawal, dormancy) or its own age column.
    ended_at: Callable[[tuple[Any, ...], Any], datetime]
    # "take": the rows leave the primary DB (archived parts, the rest destroyed). "blank":
    # the rows stay with ``blank_columns`` cleared (a leaver's side of a row another member
    # still holds; the member row itself when the map keeps it to reserve the login id).
    # "unlist": the rows stay with the leavers' entries removed from a column listing
    # members (``owners``: link value -> member id; lifecycle/engine/unlist.py).
    # "drop": rows another member owns that name a leaver, deleted (``on_leave: delete``).
    mode: Literal["take", "blank", "unlist", "drop"] = "take"
    blank_columns: tuple[str, ...] = ()
    # The batch's login ids and member ids, read once (MySQL/MariaDB): see KeyLists.
    keys: KeyLists | None = None
    # More values read with each row, for ``ended_at``: it is given the row's columns, then
    # the inherited record date (a table inheriting its parent's), then these.
    extra: tuple[Any, ...] = ()
    # An ``owner:`` table's rows, found before anything was deleted: row key -> member id.
    owners: dict[Any, Any] | None = None
    # Rows naming no member (guest rows found by identity, lifecycle/engine/guests.py): the
    # member a row is taken for, from its values.
    owner_of: Callable[[tuple[Any, ...]], Any] | None = None
    # ``also_names`` clearing: columns written with a declared value instead of blanked.
    set_values: tuple[tuple[str, Any], ...] = ()
    # ``where`` is exactly the batch's members by key (their own member rows, locked by the
    # batch): their values can come from ``keys.member_rows`` instead of another read.
    members_only: bool = False


class Part(NamedTuple):
    """One retained category of one row (see :meth:`TableMap.plan_row`).

    Named tuples rather than frozen dataclasses: the sweep builds millions of these, and a
    frozen dataclass's constructor costs several times a tuple's.
    """

    category: str
    retain_until: datetime
    idx: tuple[int, ...]  # positions of the part's columns in the row tuple
    names: tuple[str, ...]


class PlannedRow(NamedTuple):
    pk: Any
    subject: Any  # the member id, None for rows with no member (anonymous access logs)
    parts: tuple[Part, ...]
    destroyed: tuple[str, ...]
    values: tuple[Any, ...]  # in the order of selected_columns(table)


def selected_columns(tm: TableMap) -> list[str]:
    cols: dict[str, None] = {}
    if tm.retains_anything:
        for c in (*tm.carried_columns, *tm.personal_columns):
            cols[c] = None
    else:
        # Nothing of these rows is archived: only what finds their key, files, dates and guest
        # owner is read (a board's uploads: 4 columns of 16), not columns decoded only to be
        # thrown away.
        for c in (*tm.key_columns, *tm.files, *(c for _k, c in matched_columns(tm))):
            cols[c] = None
    for extra in (tm.retain_from, tm.age_column):
        if extra:
            cols[extra] = None
    for ft in tm.file_templates:
        cols.update(dict.fromkeys(ft.fields))
    return list(cols)


def pk_text(values: tuple[Any, ...]) -> str:
    """A composite key as one text (the archive's ``source_pk``): ``["free",12,0]``."""
    return orjson.dumps(list(values), default=str).decode()


class RowPlanner:
    """:meth:`TableMap.plan_row`'s decision with everything per-table worked out once.

    The sweep decides millions of rows; the data map's general method rebuilds the same column
    lists and rule lookups for each. Same semantics (a test holds them equal): a category is
    kept if its period is non-zero, its consent (if consent-based) is recorded, and its
    :meth:`TableMap.until_of` is still ahead.
    """

    def __init__(self, dm: Any, tm: TableMap, cols: list[str]) -> None:
        pos = {c: i for i, c in enumerate(cols)}
        carried = tuple(tm.carried_columns)
        self.tm = tm
        self.key = pos[tm.key]
        self.keys = tuple(pos[k] for k in tm.keys) if tm.composite else None
        self.zero = tuple(c for c in tm.columns if dm.rule(c).period.is_zero)
        # (category, period, names, positions, anchor, consent column)
        self.kept = [
            (cat, dm.rule(cat).period, carried + cs, tuple(pos[c] for c in carried + cs),
             tm.anchor_of(cat), dm.rule(cat).consent)
            for cat, cs in tm.columns.items()
            if not dm.rule(cat).period.is_zero
        ]  # fmt: skip
        # The consent columns a row's member is asked for, in the order iter_planned selects
        # them after the member id.
        self.consent_cols = tuple(dict.fromkeys(c for *_x, c in self.kept if c))
        self.rf = pos[tm.retain_from] if tm.retain_from else None
        # Unix seconds or strftime text (links.to_datetime): the record date's own format,
        # or the format of the ancestor's column a date-less child inherits.
        src = tm.record_source
        self.rec_fmt = dm.tables[src[0]].date_format(src[1]) if src and src[0] in dm.tables \
            else None  # fmt: skip
        self.tax_ext = dm.rule("tax").period if tm.tax_evidence else None
        # Period.add_to moves the wall-clock date (clamping month ends) and keeps the time, so
        # the wall-clock shift depends on the anchor's date alone: work it out once per date.
        self._shift: dict[tuple[int, date], timedelta] = {}
        # Tax deadlines depend on the record's Korean day alone: one answer per day.
        self._tax: dict[tuple[int, date], datetime] = {}

    def _tax_until(self, k: int, cat: str, period: Any, anchor: str, rec: datetime) -> datetime:
        key = (k, tax_day(rec))
        until = self._tax.get(key)
        if until is None:
            biz = self.tm._map.business
            until = tax_retain_until(rec, period, biz) if anchor == TAX_DEADLINE else None
            if self.tax_ext is not None:
                ext = tax_retain_until(rec, self.tax_ext, biz)
                until = ext if until is None else max(until, ext)
            assert until is not None
            self._tax[key] = until
        return until

    def _until(self, k: int, period: Any, anchor: datetime) -> datetime:
        key = (k, anchor.date())
        shift = self._shift.get(key)
        if shift is None:
            until = period.add_to(anchor)
            shift = until.replace(tzinfo=None) - anchor.replace(tzinfo=None)
            self._shift[key] = shift
            return until  # type: ignore[no-any-return]
        return anchor + shift

    def plan(
        self,
        row: tuple[Any, ...],
        ended: datetime,
        now: datetime,
        consent: dict[str, Any] | None = None,
        record: Any = None,
    ) -> tuple[tuple[Part, ...], tuple[str, ...]]:
        """``record``: the record date a table inheriting its parent's takes (see
        :attr:`TableMap.inherits_from`)."""
        if not self.kept:
            return (), self.zero
        ended = as_utc(ended)
        rec = row[self.rf] if self.rf is not None else record
        if self.rec_fmt is not None:
            rec = to_datetime(rec, self.rec_fmt)
        rec = as_utc(rec) if rec is not None else ended
        parts: list[Part] = []
        destroyed = list(self.zero)
        shifts = self._shift
        for k, (cat, period, names, idx, anchor, ccol) in enumerate(self.kept):
            if ccol is not None and not (consent and consented(consent.get(ccol))):
                destroyed.append(cat)  # consent-based, and this member gave none
                continue
            if anchor == TAX_DEADLINE:
                until = self._tax_until(k, cat, period, anchor, rec)
            else:
                base = rec if anchor == RECORD else ended
                # The cache lookup inline: this runs once per row and category, millions of
                # times.
                shift = shifts.get((k, base.date()))
                until = self._until(k, period, base) if shift is None else base + shift
                if self.tax_ext is not None:
                    until = max(until, self._tax_until(k, cat, period, anchor, rec))
            if until <= now:
                destroyed.append(cat)
            else:
                parts.append(Part(cat, until, idx, names))
        return tuple(parts), tuple(destroyed)


def in_values(ctx: EngineContext, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``: one array parameter on PostgreSQL (any size), a list on SQLite."""
    if ctx.is_pg_primary:
        item_type: Any = getattr(column, "type", None)  # None: ARRAY of NullType
        arr = bindparam(None, value=list(values), type_=ARRAY(item_type))
        return column == any_(arr)  # type: ignore[no-any-return]
    return column.in_(list(values))  # type: ignore[no-any-return]


def guarded_categories(ctx: EngineContext, tm: TableMap) -> list[str]:
    """Categories whose hold keeps ``tm``'s rows: its own and those of every table that hangs
    off it (a child row left in place by a hold still references its parent row)."""
    dm = ctx.datamap
    if tm.name == dm.subject.table:
        return sorted({c for t in dm.tables.values() for c in t.categories})
    cats = set(tm.categories)
    for other in dm.tables.values():
        if tm.name in _ancestors(ctx, other):
            cats.update(other.categories)
    return sorted(cats)


def _ancestors(ctx: EngineContext, tm: TableMap) -> set[str]:
    """Tables ``tm`` reaches through its ``via`` relations (every table a pattern expanded to)."""
    seen: set[str] = set()
    todo = [tm]
    while todo:
        via = todo.pop().via
        if via is None:
            continue
        names = [tn for _v, tn in via.tables] if via.match is not None else [via.table]
        for name in names:
            if name not in seen and name in ctx.datamap.tables:
                seen.add(name)
                todo.append(ctx.datamap.tables[name])
    return seen


def member_expr(ctx: EngineContext, tm: TableMap) -> Any:
    return ctx.datamap.member_expr(tm.name, ctx.metadata)


def member_ids(
    ctx: EngineContext,
    conn: Connection,
    member_key: str,
    values: set[Any],
    keys: KeyLists | None = None,
) -> dict[Any, Any]:
    """Member ids for link values holding ``member_key`` (the login id): members are counted
    once whichever column reached them. ``keys``: the batch's own, already read."""
    s = ctx.datamap.subject
    if member_key == s.key or not values:
        return {}
    t = ctx.subject_table
    out: dict[Any, Any] = {}
    if keys is not None:
        known = keys.member_of(member_key)
        out = {v: known[v] for v in values if v in known}
        values = {v for v in values if v not in known}
    vals = sorted(v for v in values if v is not None)
    step = dbkind.in_chunk(conn)
    for i in range(0, len(vals), step):
        q = select(t.c[member_key], t.c[s.key]).where(t.c[member_key].in_(vals[i : i + step]))
        out.update(dict(conn.execute(q).all()))
    return out


def iter_planned(
    ctx: EngineContext, conn: Connection, sel: Selection, now: datetime, *, take: bool = False
) -> Iterator[list[PlannedRow]]:
    """Stream the selection's rows in chunks of planned rows.

    ``take=False`` reads them (a server-side cursor on PostgreSQL). ``take=True`` deletes them
    in the caller's transaction and plans what the DELETE returned: one pass instead of a read
    and a delete by key, and exactly the rows deleted are the rows planned, so nothing can be
    deleted unseen. The caller must not commit before the archive holds the retained parts.
    """
    tm = sel.table
    t: Table = ctx.table(tm.name)
    cols = selected_columns(tm)
    planner = RowPlanner(ctx.datamap, tm, cols)
    n = len(cols)
    # A login-id link: fetch the link itself and map it to member ids per chunk (one lookup)
    # rather than a correlated subquery per row.
    by_login = (
        len(tm.links) == 1
        and tm.name != ctx.datamap.subject.table
        and tm.links[0].member_key != ctx.datamap.subject.key
    )
    who = t.c[tm.links[0].column] if by_login else member_expr(ctx, tm)
    member = who
    if sel.owners is not None and tm.owner is not None:
        # Found before the meta rows went (lifecycle.engine.owners): the row key, mapped.
        who = t.c[tm.owner.row_key]
    # The member's consent columns, read in the same statement (no second round trip while a
    # streamed result is open): a consent-based category is kept only where it is recorded.
    consents = [
        consent_expr(ctx, tm, t, col, member, by_login).label(f"__lc_consent{i}")
        for i, col in enumerate(planner.consent_cols)
    ]
    # The record date a date-less child takes from its parent row, read with the row.
    inherited = (
        [inherited_expr(ctx, tm, t).label("__lc_record")] if tm.inherits_from is not None else []
    )
    after = [*inherited, *(e.label(f"__lc_extra{i}") for i, e in enumerate(sel.extra))]
    wanted = (*(t.c[c] for c in cols), who.label(SUBJECT_LABEL), *consents, *after)
    # Several login-id links (a memo), taken on MySQL/MariaDB: the links themselves, mapped to
    # member ids below. The CASE of subqueries would read the other members' rows inside the
    # DELETE, with shared locks (see KeyLists.shared_gone).
    links = (
        tm.links
        if take
        and sel.keys is not None
        and len(tm.links) > 1
        and not planner.consent_cols
        and all(lk.member_key != ctx.datamap.subject.key for lk in tm.links)
        else ()
    )
    if links:
        wanted = (*(t.c[c] for c in cols), *(t.c[lk.column] for lk in links))
    if take:
        # The inner SELECT names its own FROM (no correlation with the DELETE's table); rows
        # deleted by an earlier chunk are invisible to the next one in the same transaction.
        if dbkind.is_mysql(conn):
            chunks = take_rows_mysql(
                conn, t, sel.where, wanted, tuple(cols.index(k) for k in tm.keys)
            )
        elif ctx.is_pg_primary:
            # By physical address: a TID scan, not a second index lookup per row.
            ctid: ColumnClause[Any] = literal_column("ctid")
            pick = select(ctid).select_from(t).where(sel.where).limit(DELETE_CHUNK)
            which = ctid == any_(func.array(pick.correlate(None).scalar_subquery()))
        elif tm.composite:
            kc = [t.c[k] for k in tm.keys]
            pick = select(*kc).where(sel.where).limit(DELETE_CHUNK).correlate(None)
            which = tuple_(*kc).in_(pick)
        else:
            keycol = t.c[tm.key]
            which = keycol.in_(select(keycol).where(sel.where).limit(DELETE_CHUNK).correlate(None))
        if not dbkind.is_mysql(conn):
            chunks = _taken(ctx, conn, delete(t).where(which).returning(*wanted))
    else:
        chunks = _stream(ctx, conn, select(*wanted).where(sel.where))
    key, keys, ended_at, plan = planner.key, planner.keys, sel.ended_at, planner.plan
    owner_of = sel.owner_of
    for chunk in chunks:
        out: list[PlannedRow] = []
        ids = (
            member_ids(ctx, conn, tm.links[0].member_key, {v[n] for v in chunk}, sel.keys)
            if by_login
            else (sel.owners if sel.owners is not None and tm.owner is not None else None)
        )
        ccols = planner.consent_cols
        ex = n + 1 + len(ccols)  # where the inherited date and the selection's extras start
        by_link = [
            (n + i, member_ids(ctx, conn, lk.member_key, {v[n + i] for v in chunk}, sel.keys))
            for i, lk in enumerate(links)
        ]
        for values in chunk:
            if by_link:
                found = (m.get(values[i]) for i, m in by_link)
                subject = next((m for m in found if m is not None), None)
            else:
                subject = values[n] if ids is None else ids.get(values[n])
            if owner_of is not None and not subject:
                subject = owner_of(values[:n])
            consent = dict(zip(ccols, values[n + 1 : ex], strict=True)) if ccols else None
            if after:
                rec = values[ex] if inherited else None
                ended = ended_at((*values[:n], *values[ex:]), subject)
                values = values[:n]
                parts, destroyed = plan(values, ended, now, consent, rec)
            else:
                values = values[:n]
                parts, destroyed = plan(values, ended_at(values, subject), now, consent)
            pk = values[key] if keys is None else pk_text(tuple(values[i] for i in keys))
            out.append(PlannedRow(pk, subject, parts, destroyed, values))
        yield out


def consent_expr(
    ctx: EngineContext, tm: TableMap, t: Table, column: str, who: Any, by_login: bool
) -> Any:
    """The row's member's ``column`` of the members' table (NULL for rows with no member);
    ``column`` naming a consent purpose: whether the member currently gives it (wherever the
    purpose is recorded, :func:`lifecycle.datamap.consents.given_expr`)."""
    s = ctx.datamap.subject
    purpose = ctx.datamap.consents.get(column)
    if purpose is not None:
        key = who
        if tm.name == s.table:
            key = t.c[s.key]
        elif by_login:
            st = ctx.subject_table.alias()
            key = select(st.c[s.key]).where(st.c[tm.links[0].member_key] == who).scalar_subquery()
        return given_expr(purpose, ctx.subject_table, s.key, key)
    if tm.name == s.table:
        return t.c[column]
    st = ctx.subject_table.alias()
    match = st.c[tm.links[0].member_key] if by_login else st.c[s.key]
    return select(st.c[column]).where(match == who).scalar_subquery()


def _taken(ctx: EngineContext, conn: Connection, stmt: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Run a chunked ``DELETE ... RETURNING`` until it takes fewer rows than a full chunk."""
    fetch: Callable[[], list[tuple[Any, ...]]]
    if ctx.is_pg_primary:
        # psycopg's binary C row parsing straight into tuples, as in `_stream`.
        compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        sql, params = str(compiled), compiled.params
        raw: Any = conn.connection.driver_connection

        def fetch() -> list[tuple[Any, ...]]:
            with raw.cursor(binary=True) as cur:
                rows: list[tuple[Any, ...]] = cur.execute(sql, params).fetchall()
                return rows
    else:

        def fetch() -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(stmt)]

    while True:
        rows = fetch()
        if rows:
            yield rows
        if len(rows) < DELETE_CHUNK:
            return


def take_rows_mysql(
    conn: Connection, t: Table, where: Any, wanted: Sequence[Any], key_at: tuple[int, ...]
) -> Iterator[list[tuple[Any, ...]]]:
    """The MySQL/MariaDB form of `_taken`.

    MariaDB 10.5+ has ``DELETE ... LIMIT ... RETURNING``: one pass, as on PostgreSQL. MySQL 8
    has no RETURNING: each chunk is read ``FOR UPDATE`` (InnoDB locks the rows, and the gaps
    between them, until the caller commits, so nobody changes or adds a matching row) and then
    deleted by key, which deletes exactly the rows read.
    """
    if dbkind.delete_returning(conn):
        limited = delete(t).where(where).with_dialect_options(mysql_limit=DELETE_CHUNK)
        stmt = limited.returning(*wanted)
        while True:
            rows = [tuple(r) for r in conn.execute(stmt)]
            if rows:
                yield rows
            if len(rows) < DELETE_CHUNK:
                return
    if not key_at:
        # No key (a destroy-only table): the locked rows are exactly what the WHERE matches.
        rows = [tuple(r) for r in conn.execute(select(*wanted).where(where).with_for_update())]
        conn.execute(delete(t).where(where))
        if rows:
            yield rows
        return
    kcols = [t.c[wanted[i].name] for i in key_at]
    pick = select(*wanted).where(where).limit(DELETE_CHUNK).with_for_update()
    while True:
        rows = [tuple(r) for r in conn.execute(pick)]
        if rows:
            if len(kcols) == 1:
                which = kcols[0].in_([r[key_at[0]] for r in rows])
            else:
                which = tuple_(*kcols).in_([tuple(r[i] for i in key_at) for r in rows])
            conn.execute(delete(t).where(which))
            yield rows
        if len(rows) < DELETE_CHUNK:
            return


def _stream(ctx: EngineContext, conn: Connection, stmt: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Row tuples in chunks, from a server-side cursor.

    On PostgreSQL the statement runs on a named (server-side) binary psycopg cursor of the
    same connection and transaction: SQLAlchemy builds the SQL, psycopg's C row parsing skips
    the per-row Row objects that otherwise cost as much as the rest of the planning.
    """
    if not ctx.is_pg_primary:
        result = conn.execute(
            stmt, execution_options={"stream_results": True, "yield_per": READ_CHUNK}
        )
        try:
            for part in result.partitions(READ_CHUNK):
                yield [tuple(r) for r in part]
        finally:
            result.close()
        return
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    raw: Any = conn.connection.driver_connection
    global _cursor_seq
    _cursor_seq += 1
    with raw.cursor(name=f"lc_read_{_cursor_seq}", binary=True) as cur:
        cur.itersize = READ_CHUNK
        cur.execute(str(compiled), compiled.params)
        while True:
            rows = cur.fetchmany(READ_CHUNK)
            if not rows:
                return
            yield rows


_cursor_seq = 0


# -- what ends a purpose -------------------------------------------------------------------------


def open_request_exists(ctx: EngineContext, subject_key: Any) -> ColumnElement[bool]:
    """A withdrawal request for this member is still being carried out by its own task."""
    r = LifecycleRequest.__table__
    return exists().where(
        and_(
            r.c.member_id == subject_key,
            r.c.kind == "withdrawal",
            r.c.state.in_([s.value for s in OPEN_STATES]),
        )
    )


def withdrawn_subjects_query(
    ctx: EngineContext, first_id: int | None = None, last_id: int | None = None
) -> Any:
    """Withdrawn members still present (i.e. not processed) and not owned by an open request.

    A member row the map keeps blank counts as processed once its text personal columns are
    all blank (that is what processing leaves).
    """
    s = ctx.datamap.subject
    t = ctx.subject_table
    key = t.c[s.key]
    stmt = select(key, s.withdrawn_at_col(t)).where(
        s.withdrawn_clause(t),
        ~open_request_exists(ctx, key),
        ~holds.member_held(key, ctx.today()),
    )
    if s.keep_row:
        stmt = stmt.where(unprocessed_clause(ctx))
    return _id_range(stmt, key, first_id, last_id)


def unprocessed_clause(ctx: EngineContext) -> ColumnElement[bool]:
    """A kept member row still holds personal data in some text column."""
    t = ctx.subject_table
    tm = ctx.datamap.subject_table
    conds = [
        and_(t.c[c].is_not(None), t.c[c] != "")
        for c in tm.personal_columns
        if isinstance(t.c[c].type, String)
    ]
    return or_(*conds) if conds else literal_column("1") == 1


class KeyLists:
    """The values a batch's statements select other tables' rows by, read once per batch.

    MariaDB (10.11) does not turn ``col IN (SELECT ...)`` in a DELETE or UPDATE into a join:
    it scans the whole table and runs the subquery per row, even where ``col`` is indexed, so
    every batch cost a full scan of every member table. Given one of these, the statements
    name literal lists instead (bound as parameters), which the optimiser looks up through
    the column's index: the members' login ids, read once, and a ``via`` table's parent keys,
    read once per parent table. The reads run in the batch's transaction after its members
    are locked and before any row is deleted (children go first, so a parent's keys are read
    while its rows are all there), so they name the rows the subqueries would have named.
    """

    def __init__(self, ctx: EngineContext, conn: Connection, ids: Sequence[Any]) -> None:
        self.ctx = ctx
        self.conn = conn
        self.ids = list(ids)
        self._logins: dict[str, dict[Any, Any]] = {}
        self._sorted_logins: dict[str, list[Any]] = {}
        self._parents: dict[tuple[str, str], list[Any]] = {}
        self.owned: OwnedRows | None = None
        # id of a list this batch names in several statements -> (the list, rendered once)
        self._rendered: dict[int, tuple[list[Any], dbkind.SqlList]] = {}
        # The members' own rows, read once: column -> position, and member id -> values.
        self._member_cols: dict[str, int] | None = None
        self._member_rows: dict[Any, tuple[Any, ...]] = {}

    def member_columns(self) -> list[str]:
        """The member-table columns a batch reads by member id: login ids other tables link
        by, the declared identities (email, mobile, login) and what the member row's files are
        built from. One read of them all serves the login lists, the guest-row match, the
        identity hashes and the member row's own clearing."""
        dm = self.ctx.datamap
        s = dm.subject
        cols = [s.login_column, s.email_column, s.mobile_column]
        for tm in dm.tables.values():
            cols += [lk.member_key for lk in (*tm.links, *tm.also_names)]
            if tm.owner is not None:
                cols.append(tm.owner.member_key)
        sub = dm.tables.get(s.table)
        if sub is not None:
            cols += [*sub.files, *(f for ft in sub.file_templates for f in ft.fields)]
        st = self.ctx.subject_table
        return [c for c in dict.fromkeys(cols) if c and c != s.key and c in st.c]

    def member_rows(self, columns: Sequence[str]) -> dict[Any, tuple[Any, ...]] | None:
        """Member id -> the values of ``columns`` of the batch's members, from one read of
        :meth:`member_columns` (made under the batch's lock, before any row moves); None when a
        column is not among them (the caller reads it itself)."""
        if self._member_cols is None:
            wanted = self.member_columns()
            st = self.ctx.subject_table
            key = st.c[self.ctx.datamap.subject.key]
            self._member_cols = {c: i for i, c in enumerate(wanted)}
            step = dbkind.in_chunk(self.conn)
            for i in range(0, len(self.ids), step):
                part = self.ids[i : i + step]
                q = select(key, *(st.c[c] for c in wanted)).where(
                    _listed(key, part, self.conn, self)
                )
                self._member_rows.update((r[0], tuple(r[1:])) for r in self.conn.execute(q))
        at = [self._member_cols.get(c) for c in columns]
        if any(i is None for i in at):
            return None
        return {k: tuple(v[i] for i in at) for k, v in self._member_rows.items()}  # type: ignore[index]

    def rendered(self, values: list[Any]) -> dbkind.SqlList | None:
        """``values`` (one of this batch's lists) rendered for MySQL/MariaDB, once."""
        if not dbkind.is_mysql(self.conn):
            return None
        got = self._rendered.get(id(values))
        if got is None or got[0] is not values:
            got = (values, dbkind.SqlList(self.conn.connection.dbapi_connection, values))
            self._rendered[id(values)] = got
        return got[1]

    def member_of(self, member_key: str) -> dict[Any, Any]:
        """The members' values of ``member_key`` (the login id) and their member ids."""
        got = self._logins.get(member_key)
        if got is None:
            rows = self.member_rows([member_key])
            if rows is not None:
                got = self._logins[member_key] = {v: k for k, (v,) in rows.items() if v is not None}
                return got
            st = self.ctx.subject_table
            key = st.c[self.ctx.datamap.subject.key]
            got = {}
            step = dbkind.in_chunk(self.conn)
            for i in range(0, len(self.ids), step):
                part = self.ids[i : i + step]
                q = select(st.c[member_key], key).where(key.in_(part))
                got.update((v, k) for v, k in self.conn.execute(q) if v is not None)
            self._logins[member_key] = got
        return got

    def logins(self, member_key: str) -> list[Any]:
        # The same list object every time: `rendered` knows a list by its identity, so a new
        # sorted copy per statement escaped the batch's 2,000 login ids again in each.
        got = self._sorted_logins.get(member_key)
        if got is None:
            got = self._sorted_logins[member_key] = sorted(self.member_of(member_key))
        return got

    def shared_gone(self, table: Table, key: str, where: Any) -> list[Any]:
        """Keys of the rows ``where`` selects, by a plain read.

        For a row several members hold (a memo), whether every other member has left too is a
        subquery on the members' table. Inside a DELETE, InnoDB reads it with shared locks, so
        a batch waited for (or deadlocked with) the batch holding the other member's row; a
        plain SELECT is a consistent read and takes none. A member who leaves after it keeps
        their side until their own batch, which then finds ours cleared and takes the row.
        """
        return [k for (k,) in self.conn.execute(select(table.c[key]).where(where))]

    def parent_keys(self, parent_name: str, parent_key: str) -> list[Any]:
        """``parent_key`` of the members' rows of ``parent_name``."""
        got = self._parents.get((parent_name, parent_key))
        if got is None:
            parent = self.ctx.table(parent_name)
            ptm = self.ctx.datamap.table(parent_name)
            where = member_where(self.ctx, ptm, self.ids, self)
            q = select(parent.c[parent_key]).where(where).distinct()
            got = sorted(v for (v,) in self.conn.execute(q) if v is not None)
            self._parents[(parent_name, parent_key)] = got
        return got


def _listed(
    col: Any,
    values: list[Any],
    conn: Connection | None,
    lists: KeyLists | None = None,
    dive: bool = False,
) -> Any:
    """``col IN values`` for a list read in the batch. On MySQL/MariaDB the list is rendered
    once (:class:`~lifecycle.core.dbkind.SqlList`; ``lists`` keeps it for the batch's other
    statements) and bound as one parameter; elsewhere one expanding parameter: ``in_(list)``
    would build and check a literal per value, in every statement of every batch."""
    if not values:
        return false()
    if conn is not None and dbkind.is_mysql(conn):
        rendered = lists.rendered(values) if lists is not None else None
        if rendered is None:
            rendered = dbkind.SqlList(conn.connection.dbapi_connection, values)
        # ``dive``: a column that may hold one value in nearly every row (DIVE_MARK).
        op = f"IN {DIVE_MARK}" if dive else "IN"
        return col.op(op)(bindparam(None, value=rendered, type_=NullType()))
    return col.in_(bindparam(None, value=values, type_=col.type, expanding=True))


def link_in(
    ctx: EngineContext,
    lk: MemberLink,
    col: Any,
    ids: Sequence[Any],
    keys: KeyLists | None = None,
) -> Any:
    """Rows whose link column holds one of the members ``ids`` (by the subject's key)."""
    s = ctx.datamap.subject
    if lk.member_key == s.key:
        return in_values(ctx, coerce(col, ctx.subject_table.c[s.key].type), ids)
    if keys is not None:
        return _listed(col, keys.logins(lk.member_key), keys.conn, keys)
    st = ctx.subject_table
    return col.in_(select(st.c[lk.member_key]).where(in_values(ctx, st.c[s.key], ids)))


def member_where(
    ctx: EngineContext,
    tm: TableMap,
    ids: Sequence[Any],
    keys: KeyLists | None = None,
    owned: OwnedRows | None = None,
) -> Any:
    """Rows of ``tm`` belonging to members ``ids``: through their link column, or through
    their parents' (``via``, uncorrelated ``IN (SELECT ...)`` per hop; with ``match``, one
    branch per table the pattern expanded to), or through a meta row naming their owner
    (``owner:``; with ``owned``, the keys read before anything was deleted). With ``keys``,
    literal lists read once instead of the subqueries (see :class:`KeyLists`). Only the
    entry's own rows (its ``where:``) are named."""
    t = ctx.table(tm.name)
    return tm.scoped(t, _member_where(ctx, tm, t, ids, keys, owned))


def _member_where(
    ctx: EngineContext,
    tm: TableMap,
    t: Table,
    ids: Sequence[Any],
    keys: KeyLists | None,
    owned: OwnedRows | None,
) -> Any:
    s = ctx.datamap.subject
    if tm.name == s.table:
        return in_values(ctx, t.c[s.key], ids)
    if tm.links:
        return or_(*(link_in(ctx, lk, lk.expr(t), ids, keys) for lk in tm.links))
    if owned is None and keys is not None:
        owned = keys.owned
    if tm.owner is not None:
        if owned is not None:
            col = t.c[tm.owner.row_key]
            conn = keys.conn if keys is not None else None
            return _listed(col, owned.keys(tm.name), conn, keys)
        return owned_where(ctx, tm, t, ids)
    via = tm.via
    if via is None:
        return literal_column("1") == 0

    def through(parent_name: str) -> Any:
        parent = ctx.table(parent_name)
        col = coerce(t.c[via.column], parent.c[via.parent_key].type)
        if keys is not None:
            named = _listed(col, keys.parent_keys(parent_name, via.parent_key), keys.conn, keys)
        else:
            ptm = ctx.datamap.table(parent_name)
            pcol = coerce(parent.c[via.parent_key], t.c[via.column].type)
            named = col.in_(select(pcol).where(member_where(ctx, ptm, ids, owned=owned)))
        if via.many:
            # Named by the members' rows, and by no one else's (lifecycle.engine.shared_parents).
            return and_(named, in_values(ctx, member_expr(ctx, tm), ids))
        return named

    if via.match is None:
        return through(via.table)
    branches = [and_(t.c[via.match] == v, through(tn)) for v, tn in via.tables]
    return or_(*branches) if branches else literal_column("1") == 0


def _link_gone(ctx: EngineContext, lk: MemberLink, col: Any) -> Any:
    """No member who is still with the site holds this link (blank, or withdrawn/unknown)."""
    s = ctx.datamap.subject
    st = ctx.subject_table.alias()
    active = exists().where(link_eq(st.c[lk.member_key], col), ~s.withdrawn_clause(st))
    gone = [col.is_(None), ~active]
    if isinstance(col.type, String):
        gone.append(col == "")
    return or_(*gone)


def _id_range(stmt: Any, key: Any, first_id: int | None, last_id: int | None) -> Any:
    """``stmt`` limited to members ``first_id..last_id`` (either end open), by member id."""
    if first_id is not None:
        stmt = stmt.where(key >= first_id)
    if last_id is not None:
        stmt = stmt.where(key <= last_id)
    return stmt.order_by(key)


def dormant_subjects_query(
    ctx: EngineContext, now: datetime, first_id: int | None = None, last_id: int | None = None
) -> Any | None:
    """Members the site marked dormant whose inactivity passed the map's period (if enabled)."""
    s = ctx.datamap.subject
    d = s.dormancy
    if not d.enabled or not d.last_active_column:
        return None
    t = ctx.subject_table
    key = t.c[s.key]
    cutoff = d.inactive_for.subtract_from(now)
    assert s.status_column is not None  # the loader requires it with dormancy
    stmt = select(key, t.c[d.last_active_column]).where(
        t.c[s.status_column] == d.status_value,
        t.c[d.last_active_column] < cutoff,
        ~open_request_exists(ctx, key),
        ~holds.member_held(key, ctx.local_date(now)),
    )
    return _id_range(stmt, key, first_id, last_id)


def subject_selections(
    ctx: EngineContext,
    kind: str,
    ended: dict[Any, datetime],
    now: datetime,
    *,
    check_holds: bool = True,
    conn: Connection | None = None,
    read: Connection | None = None,
) -> list[Selection]:
    """One selection per table whose purpose ends on ``kind`` for these members.

    ``check_holds=False`` (the caller found no active hold in its transaction) leaves the
    per-row legal-hold filter out of the statements. ``conn`` (the caller's transaction,
    its members locked): on MySQL/MariaDB the login ids and parent keys the statements select
    by are read once through it and named as lists (:class:`KeyLists`). ``read`` (else
    ``conn``): the transaction the rows of ``owner:`` tables are found in before anything is
    deleted (:class:`OwnedRows`); without either they are selected by subquery (a preview)."""
    ids = sorted(ended)
    keys = KeyLists(ctx, conn, ids) if conn is not None and dbkind.is_mysql(conn) else None
    read = read or conn
    owned = None
    if read is not None and any(t.owner is not None for t in ctx.datamap.tables.values()):
        owned = OwnedRows(ctx, read, ids)
        if keys is not None:
            keys.owned = owned
    out: list[Selection] = []
    blanks: list[Selection] = []
    subject = ctx.datamap.subject

    def _ended(_values: Any, subject: Any, _e: dict[Any, datetime] = ended) -> datetime:
        return _e.get(subject) or now

    for tm in ctx.tables_ending_on(kind):
        t = ctx.table(tm.name)
        if tm.name == subject.table:
            if kind == "dormancy":
                # Other tables (payments, contracts) still reference a dormant member's row, so
                # the row itself stays; only the tables that end on dormancy leave the primary.
                continue
            if subject.keep_row:
                # The row stays so the login id stays taken: every personal column is cleared,
                # and the other members it names (also_names: who recommended them).
                where = in_values(ctx, t.c[subject.key], ids)
                named = (lk.column for lk in tm.also_names)
                blanks.append(
                    Selection(tm, where, _ended, "blank", (*tm.personal_columns, *named), keys,
                              members_only=keys is not None)
                )  # fmt: skip
                continue
        if len(tm.links) > 1:
            # A row several members hold (a memo: sender and recipient) leaves the primary DB
            # once none of them is still with the site; until then the leaver's side of it is
            # cleared (their link and the columns listed with it).
            mine = or_(*(link_in(ctx, lk, t.c[lk.column], ids, keys) for lk in tm.links))
            all_gone = and_(*(_link_gone(ctx, lk, t.c[lk.column]) for lk in tm.links))
            take = tm.scoped(t, and_(mine, all_gone))
            if keys is not None and len(tm.keys) == 1:
                gone = keys.shared_gone(t, tm.key, take)
                take = and_(mine, _listed(t.c[tm.key], gone, keys.conn))
            out.append(Selection(tm, take, _ended, keys=keys))
            for lk in tm.links:
                where = tm.scoped(t, link_in(ctx, lk, t.c[lk.column], ids, keys))
                blanks.append(Selection(tm, where, _ended, "blank", (lk.column, *lk.blank), keys))
            continue
        owners = owned.member_of(tm.name) if owned is not None else None
        where = member_where(ctx, tm, ids, keys, owned)
        mk = subject.marker_store
        if subject.keep_row and isinstance(mk, MetaMarker) and mk.table == tm.table:
            # The kept member row's withdrawal marker stays with it (else the member would
            # look active again once processed).
            kc = t.c[mk.key_column]
            where = and_(where, or_(kc.is_(None), kc != mk.key))
        out.append(Selection(tm, where, _ended, keys=keys, owners=owners))
    if kind == "withdrawal":
        blanks.extend(named_selections(ctx, ids, keys, _ended, read))
    if check_holds:
        # Rows of a held member, or of a table holding a held category, stay (legal hold).
        today = ctx.local_date(now)
        out = [_unheld(ctx, sel, today) for sel in out]
        blanks = [_unheld(ctx, sel, today) for sel in blanks]
    # Blanks run after every DELETE (the mover keeps this order).
    return out + blanks


def named_selections(
    ctx: EngineContext,
    ids: Sequence[Any],
    keys: KeyLists | None,
    ended: Callable[[tuple[Any, ...], Any], datetime],
    read: Connection | None = None,
) -> list[Selection]:
    """Rows another member owns that name a leaver (``also_names:``, a notification's sender):
    the row stays for its owner, with the leaver's link and the columns listed with it
    cleared. Whatever the table's purpose end: naming a member who left is no purpose.

    A login-id link is resolved through ``read`` before anything moves: the clearing runs
    after the member row is deleted (``on_withdrawal: delete``), when a subquery on the
    members' table would find no login id, and the ledger names the leaver from this map."""
    s = ctx.datamap.subject
    out: list[Selection] = []
    logins: dict[str, dict[Any, Any]] = {}

    def whose_logins(member_key: str, conn: Connection) -> dict[Any, Any]:
        if member_key not in logins:
            if keys is not None and keys.conn is conn:
                # The batch read these login ids already (a round trip saved per batch).
                known = keys.member_of(member_key)
                logins[member_key] = {v: k for v, k in known.items() if v != ""}
            else:
                logins[member_key] = _logins(ctx, conn, member_key, ids)
        return logins[member_key]

    for tm in ctx.ordered_tables:
        t = ctx.table(tm.name) if tm.also_names else None
        for lk in tm.also_names:
            assert t is not None
            col = t.c[lk.column]
            if lk.separator is not None:
                if read is None:
                    continue  # a preview: a list is rewritten, never taken, so it counts none
                if lk.member_key == s.key:
                    listed: dict[Any, Any] = {i: i for i in ids}
                else:
                    listed = whose_logins(lk.member_key, read)
                out.append(Selection(tm, tm.scoped(t, true()), ended, "unlist",
                                     (lk.column,), keys, owners=listed))  # fmt: skip
                continue
            whose = None
            if lk.template is not None:
                found, whose = _spelled_in(ctx, lk, col, ids, read, whose_logins)
            elif lk.member_key != s.key and read is not None:
                whose = whose_logins(lk.member_key, read)
                # Other members' rows naming a leaver: mostly one value (no recommender).
                found = _listed(col, sorted(whose), read, keys, dive=True)
            else:
                found = link_in(ctx, lk, col, ids, keys)
            out.append(Selection(tm, tm.scoped(t, found), ended,
                                 "drop" if lk.deletes else "blank", lk.cleared, keys,
                                 owners=whose, set_values=lk.values))  # fmt: skip
    return out


def _spelled_in(
    ctx: EngineContext,
    lk: MemberLink,
    col: Any,
    ids: Sequence[Any],
    read: Connection | None,
    whose_logins: Callable[[str, Connection], dict[Any, Any]],
) -> tuple[Any, dict[Any, Any] | None]:
    """Rows whose ``col`` equals ``lk``'s template spelled with a leaver's id (``"kim01
    추천"``), and the map spelled value -> member id. Plain equality, so an index on the
    column serves it; a preview (no ``read``) spells the ids in SQL instead."""
    s = ctx.datamap.subject
    if lk.member_key == s.key:
        named: dict[Any, Any] = {i: i for i in ids}
    elif read is not None:
        named = whose_logins(lk.member_key, read)
    else:
        st = ctx.subject_table
        spelled = lk.spelled_sql(st.c[lk.member_key])
        return col.in_(select(spelled).where(in_values(ctx, st.c[s.key], ids))), None
    whose = {lk.spelled(v): k for v, k in named.items()}
    # One spelling in nearly every row of such a column (every point's '쓰기'): DIVE_MARK.
    return _listed(col, sorted(whose), read, dive=True), whose


def _logins(
    ctx: EngineContext, conn: Connection, column: str, ids: Sequence[Any]
) -> dict[Any, Any]:
    """``column`` (a login id) of members ``ids``: value -> member id."""
    st = ctx.subject_table
    key = st.c[ctx.datamap.subject.key]
    out: dict[Any, Any] = {}
    step = dbkind.in_chunk(conn)
    for i in range(0, len(ids), step):
        q = select(st.c[column], key).where(in_values(ctx, key, ids[i : i + step]))
        out.update({v: k for v, k in conn.execute(q) if v is not None and v != ""})
    return out


def whose_login(owners: dict[Any, Any], value: Any) -> Any:
    """The member id ``value`` names in a login-id map; a row spelling the login in another
    case (MySQL's ``_ci`` collations match it) is found too."""
    found = owners.get(value)
    if found is None and isinstance(value, str):
        folded = value.casefold()
        found = next((k for v, k in owners.items() if str(v).casefold() == folded), None)
    return found


def _unheld(ctx: EngineContext, sel: Selection, today: date) -> Selection:
    """``sel`` narrowed to rows no active legal hold keeps: neither the table (a held category
    of it or of a table hanging off it) nor any member the row names (each link of a row
    several members hold)."""
    tm = sel.table
    t = ctx.table(tm.name)
    dm = ctx.datamap
    if len(tm.links) > 1:
        members = [dm.link_expr(lk, lk.expr(t), ctx.metadata) for lk in tm.links]
    else:
        members = [member_expr(ctx, tm)]
    # A held member named in someone else's row keeps that row whole (and a held owner too).
    members += [dm.link_expr(lk, t.c[lk.column], ctx.metadata) for lk in tm.also_names
                if sel.mode in ("blank", "drop") and sel.blank_columns == lk.cleared]  # fmt: skip
    cond = and_(
        ~holds.categories_held(guarded_categories(ctx, tm), today),
        *(~holds.member_held(m, today) for m in members),
    )
    # Narrowed: a held member's row is no longer selected, so the batch's read does not serve.
    return replace(sel, where=and_(sel.where, cond), members_only=False)


def age_selection(
    ctx: EngineContext,
    tm: TableMap,
    now: datetime,
    first_id: Any = None,
    last_id: Any = None,
    *,
    check_holds: bool = True,
) -> Selection:
    """Rows of ``tm`` past their age: an explicit age rule (access logs past 3 months), or
    every period counted from the record's own date over (an active member's 6-year-old
    payment). A row another mapped table still references stays until that row goes."""
    col = tm.age_column
    assert col is not None
    t = ctx.table(tm.name)
    at = selected_columns(tm).index(col)
    cutoff = tm.age_cutoff(now)
    # The cut-off in the column's own form (a datetime, Unix seconds, text): an index serves
    # it. A zero or empty date (MySQL's '0000-00-00', a PHP site's "no date") sorts before
    # every cut-off but has no date to count a period from: such a row stays.
    old = db_cutoff(t.c[col], cutoff, tm.date_format(col))
    where = tm.scoped(t, and_(old, *_unreferenced(ctx, tm, t)))
    # Rows of a held member, or of a table holding a held category, stay (legal hold).
    if check_holds:
        where = and_(
            where,
            holds.not_held(guarded_categories(ctx, tm), member_expr(ctx, tm), ctx.local_date(now)),
        )
    if first_id is not None:
        where = and_(where, t.c[tm.key] >= first_id)
    if last_id is not None:
        where = and_(where, t.c[tm.key] <= last_id)

    def _ended(values: tuple[Any, ...], _subject: Any) -> datetime:
        return tm.age_ended_at(values[at])

    return Selection(tm, where, _ended)


def age_selections(
    ctx: EngineContext,
    tm: TableMap,
    now: datetime,
    first_id: Any = None,
    last_id: Any = None,
    *,
    check_holds: bool = True,
    conn: Connection | None = None,
) -> list[Selection]:
    """:func:`age_selection` and the selections of the rows that end with it: the rows of
    every table inheriting ``tm``'s record date (an order's lines and addresses), through
    every level. ``move`` deletes children first, so each child's statement still finds the
    parent rows it hangs off.

    ``conn`` (the batch's transaction) on MySQL/MariaDB: the parents' keys are read once
    through it, before any row is deleted, and named as a list, for the reason
    :class:`KeyLists` gives (an ``IN (SELECT ...)`` in a DELETE scans the whole child table)."""
    listed = conn is not None and dbkind.is_mysql(conn)
    top = age_selection(ctx, tm, now, first_id, last_id, check_holds=check_holds)
    if tm.owner is not None and conn is not None:
        # Its meta rows may go first (an inheriting child): whose each row is, read now.
        t = ctx.table(tm.name)
        member = ctx.datamap.owner_expr(tm, t, ctx.metadata)
        found = conn.execute(select(t.c[tm.owner.row_key], member).where(top.where))
        top = replace(top, owners={k: m for k, m in found})
    out = [top]
    todo = [top]
    while todo:
        psel = todo.pop()
        ptm = psel.table
        pt = ctx.table(ptm.name)
        for child in ctx.ordered_tables:
            if child.via is None or ptm.name not in _inherits(child):
                continue
            via = child.via
            ct = ctx.table(child.name)
            parents = select(coerce(pt.c[via.parent_key], ct.c[via.column].type)).where(psel.where)
            col = coerce(ct.c[via.column], pt.c[via.parent_key].type)
            if listed:
                assert conn is not None
                keys = sorted({v for (v,) in conn.execute(parents.distinct()) if v is not None})
                where = child.scoped(ct, _listed(col, keys, conn))
            else:
                where = child.scoped(ct, col.in_(parents))
            value = _inherits(child)[ptm.name]
            if value is not None:
                # A pattern parent (g5_write_*): the child rows naming this table.
                assert via.match is not None
                where = and_(ct.c[via.match] == value, where)
            sel = Selection(
                child,
                where,
                _child_ended(tm, child),
                extra=_age_of(ctx, tm, child, ct),
            )
            out.append(sel)
            todo.append(sel)
    return out


def _inherits(tm: TableMap) -> dict[str, str | None]:
    """The tables whose record date ``tm``'s rows take -> the ``via.match`` value naming each
    (None for a plain ``via``)."""
    return {p.name: v for v, p in tm.inherited_parents}


def _age_of(ctx: EngineContext, root: TableMap, child: TableMap, ct: Table) -> tuple[Any, ...]:
    """The root row's age value, read with an inheriting row, when it is not the record date
    the row inherits already."""
    if root.age_column == root.retain_from:
        return ()
    assert root.age_column is not None
    return (inherited_expr(ctx, child, ct, root.age_column),)


def _child_ended(root: TableMap, child: TableMap) -> Callable[[tuple[Any, ...], Any], datetime]:
    """An inheriting row's purpose end in an age move: its root row's."""
    at = len(selected_columns(child)) + (0 if root.age_column == root.retain_from else 1)

    def _ended(values: tuple[Any, ...], _subject: Any) -> datetime:
        return root.age_ended_at(values[at])

    return _ended


def inherited_expr(ctx: EngineContext, tm: TableMap, t: Any, column: str | None = None) -> Any:
    """The record date (or ``column`` of the ancestor holding it) a row of ``tm``, a table
    inheriting its parent's date, takes: a scalar subquery per hop up to that ancestor."""
    parent = tm.inherits_from
    assert parent is not None and tm.via is not None
    if column is None:
        src = tm.record_source
        assert src is not None
        column = src[1]
    via = tm.via

    def through(parent: TableMap) -> Any:
        pt = ctx.table(parent.name).alias()
        inner = (
            pt.c[column]
            if parent.inherits_from is None
            else inherited_expr(ctx, parent, pt, column)
        )
        return select(inner).where(link_eq(pt.c[via.parent_key], t.c[via.column])).scalar_subquery()

    if via.match is None:
        return through(parent)
    # A pattern parent: the board the row's match column names.
    return case(*((t.c[via.match] == v, through(p)) for v, p in tm.inherited_parents), else_=null())


def _unreferenced(ctx: EngineContext, tm: TableMap, t: Any) -> list[Any]:
    """No row of another mapped table points at this row (a real foreign key, or a ``via``):
    a payment its still-kept tax invoice references cannot be deleted before the invoice.
    Rows of a table inheriting this one's date do not count: they go with it
    (:func:`age_selections`)."""
    dm = ctx.datamap
    conds = []
    for child, ccols, parent, pcols in dm.foreign_keys:
        if parent != tm.name or child == tm.name or child not in dm.tables:
            continue
        if tm.name in _inherits(dm.tables[child]):
            continue
        ct = ctx.table(child).alias()
        refs = and_(*(ct.c[c] == t.c[p] for c, p in zip(ccols, pcols, strict=True)))
        conds.append(~exists().where(dm.tables[child].scoped(ct, refs)))
    for other in dm.tables.values():
        via = other.via
        if via is None or other.name == tm.name:
            continue
        if tm.name not in ([tn for _v, tn in via.tables] if via.match else [via.table]):
            continue
        ct = ctx.table(other.name).alias()
        cond = other.scoped(ct, link_eq(ct.c[via.column], t.c[via.parent_key]))
        if via.match:
            value = next(v for v, tn in via.tables if tn == tm.name)
            cond = and_(cond, ct.c[via.match] == value)
        if tm.name in _inherits(other):
            # It goes with this row, but a row of its own another table references (with a
            # date of its own) keeps it, and so this row, in place.
            held = _unreferenced(ctx, other, ct)
            if held:
                conds.append(~exists().where(cond, ~and_(*held)))
            continue
        conds.append(~exists().where(cond))
    return conds


def utcnow() -> datetime:
    return datetime.now(UTC)
