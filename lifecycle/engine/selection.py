"""Which rows of which tables a step works on, read set-based and streamed.

A :class:`Selection` is one table plus a WHERE clause and a rule for when each row's purpose
ended. :func:`iter_planned` streams the selected rows in chunks (a server-side cursor on
PostgreSQL), asks the data map what happens to each row (:meth:`TableMap.plan_row`) and yields
the decisions, so memory is bounded by the chunk size whatever the table size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.model import TableMap
from lifecycle.engine.context import EngineContext
from lifecycle.requests import holds
from models.requests import OPEN_STATES, LifecycleRequest

READ_CHUNK = 5000
# Rows one DELETE ... RETURNING takes at a time: bounds memory for a member with a huge table.
DELETE_CHUNK = 10_000
# SQLite limits bound parameters per statement; stay well under every version's limit.
SQLITE_IN_CHUNK = 500

SUBJECT_LABEL = "__lc_subject"


@dataclass(frozen=True)
class Selection:
    table: TableMap
    where: ColumnElement[bool]
    # When the purpose of a row ended, given (row tuple, member id): from its member
    # (withdrawal, dormancy) or its own age column.
    ended_at: Callable[[tuple[Any, ...], Any], datetime]


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
    for c in (*tm.carried_columns, *tm.personal_columns):
        cols[c] = None
    for extra in (tm.retain_from, tm.age[0] if tm.age else None):
        if extra:
            cols[extra] = None
    return list(cols)


class RowPlanner:
    """:meth:`TableMap.plan_row`'s decision with everything per-table worked out once.

    The sweep decides millions of rows; the data map's general method rebuilds the same column
    lists and rule lookups for each. Same semantics (a test holds them equal): a category is
    kept if its period is non-zero and ``anchor + period`` is still ahead, the anchor being
    the row's ``retain_from`` value or else its purpose end.
    """

    def __init__(self, dm: Any, tm: TableMap, cols: list[str]) -> None:
        pos = {c: i for i, c in enumerate(cols)}
        carried = tuple(tm.carried_columns)
        self.key = pos[tm.key]
        self.zero = tuple(c for c in tm.columns if dm.rule(c).period.is_zero)
        self.kept = [
            (cat, dm.rule(cat).period, carried + cs, tuple(pos[c] for c in carried + cs))
            for cat, cs in tm.columns.items()
            if not dm.rule(cat).period.is_zero
        ]
        self.rf = pos[tm.retain_from] if tm.retain_from else None
        # Period.add_to moves the wall-clock date (clamping month ends) and keeps the time, so
        # the wall-clock shift depends on the anchor's date alone: work it out once per date.
        self._shift: dict[tuple[int, date], timedelta] = {}

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
        self, row: tuple[Any, ...], ended: datetime, now: datetime
    ) -> tuple[tuple[Part, ...], tuple[str, ...]]:
        if not self.kept:
            return (), self.zero
        anchor = row[self.rf] if self.rf is not None else None
        anchor = as_utc(anchor if anchor is not None else ended)
        parts: list[Part] = []
        destroyed = list(self.zero)
        day = anchor.date()
        shifts = self._shift
        for k, (cat, period, names, idx) in enumerate(self.kept):
            # The cache lookup inline: this runs once per row and category, millions of times.
            shift = shifts.get((k, day))
            until = self._until(k, period, anchor) if shift is None else anchor + shift
            if until <= now:
                destroyed.append(cat)
            else:
                parts.append(Part(cat, until, idx, names))
        return tuple(parts), tuple(destroyed)


def in_values(ctx: EngineContext, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``: one array parameter on PostgreSQL (any size), a list on SQLite."""
    if ctx.is_pg_primary:
        arr = bindparam(None, value=list(values), type_=ARRAY(column.type))
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
        if any(p.name == tm.name for p in dm.subject_path(other.name)):
            cats.update(other.categories)
    return sorted(cats)


def member_expr(ctx: EngineContext, tm: TableMap) -> Any:
    return ctx.datamap.member_expr(tm.name, ctx.metadata)


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
    wanted = (*(t.c[c] for c in cols), member_expr(ctx, tm).label(SUBJECT_LABEL))
    if take:
        # The inner SELECT names its own FROM (no correlation with the DELETE's table); rows
        # deleted by an earlier chunk are invisible to the next one in the same transaction.
        if ctx.is_pg_primary:
            # By physical address: a TID scan, not a second index lookup per row.
            ctid = literal_column("ctid")
            pick = select(ctid).select_from(t).where(sel.where).limit(DELETE_CHUNK)
            which = ctid == any_(func.array(pick.correlate(None).scalar_subquery()))
        else:
            keycol = t.c[tm.key]
            which = keycol.in_(select(keycol).where(sel.where).limit(DELETE_CHUNK).correlate(None))
        chunks = _taken(ctx, conn, delete(t).where(which).returning(*wanted))
    else:
        chunks = _stream(ctx, conn, select(*wanted).where(sel.where))
    key, ended_at, plan = planner.key, sel.ended_at, planner.plan
    for chunk in chunks:
        out: list[PlannedRow] = []
        for values in chunk:
            subject = values[n]
            values = values[:n]
            parts, destroyed = plan(values, ended_at(values, subject), now)
            out.append(PlannedRow(values[key], subject, parts, destroyed, values))
        yield out


def _taken(ctx: EngineContext, conn: Connection, stmt: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Run a chunked ``DELETE ... RETURNING`` until it takes fewer rows than a full chunk."""
    fetch: Callable[[], list[tuple[Any, ...]]]
    if ctx.is_pg_primary:
        # psycopg's binary C row parsing straight into tuples, as in `_stream`.
        compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        sql, params = str(compiled), compiled.params
        raw = conn.connection.driver_connection

        def fetch() -> list[tuple[Any, ...]]:
            with raw.cursor(binary=True) as cur:
                return cur.execute(sql, params).fetchall()
    else:

        def fetch() -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(stmt)]

    while True:
        rows = fetch()
        if rows:
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
    raw = conn.connection.driver_connection
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
    """Withdrawn members still present (i.e. not processed) and not owned by an open request."""
    s = ctx.datamap.subject
    t = ctx.subject_table
    key = t.c[s.key]
    stmt = select(key, t.c[s.withdrawn_at_column]).where(
        t.c[s.status_column] == s.withdrawn_value,
        ~open_request_exists(ctx, key),
        ~holds.member_held(key, ctx.today()),
    )
    return _id_range(stmt, key, first_id, last_id)


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
) -> list[Selection]:
    """One selection per table whose purpose ends on ``kind`` for these members.

    ``check_holds=False`` (the caller found no active hold in its transaction) leaves the
    per-row legal-hold filter out of the statements."""
    ids = sorted(ended)
    out: list[Selection] = []
    for tm in ctx.tables_ending_on(kind):
        if kind == "dormancy" and tm.name == ctx.datamap.subject.table:
            # Other tables (payments, contracts) still reference a dormant member's row, so the
            # row itself stays; only the tables that end on dormancy leave the primary DB.
            continue

        def _ended(_values: Any, subject: Any, _e: dict[Any, datetime] = ended) -> datetime:
            return _e.get(subject) or now

        mexpr = member_expr(ctx, tm)
        where = in_values(ctx, mexpr, ids)
        if check_holds:
            where = and_(
                where, holds.not_held(guarded_categories(ctx, tm), mexpr, ctx.local_date(now))
            )
        out.append(Selection(tm, where, _ended))
    return out


def age_selection(
    ctx: EngineContext,
    tm: TableMap,
    now: datetime,
    first_id: Any = None,
    last_id: Any = None,
    *,
    check_holds: bool = True,
) -> Selection:
    """Rows of ``tm`` older than its age rule (e.g. access logs past 3 months)."""
    assert tm.age is not None
    col, period = tm.age
    t = ctx.table(tm.name)
    at = selected_columns(tm).index(col)
    # Rows of a held member, or of a table holding a held category, stay (legal hold).
    where = t.c[col] < period.subtract_from(now)
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
        return period.add_to(as_utc(values[at]))

    return Selection(tm, where, _ended)


def utcnow() -> datetime:
    return datetime.now(UTC)
