"""The residue check: after a withdrawal or an erasure, is the member's identity still anywhere
in the primary's text columns?

The withdrawal's destroy step and the erasure's erase step capture the member's identities
(:func:`capture_member`, :func:`capture_values`) in the transaction that destroys them, before
they do, and keep them in a local variable: never in a task argument, a result or a log line
(a request parked for a finding keeps them sealed for its re-check only:
:mod:`lifecycle.rights.residue_check`). :func:`scan` then searches, in the same transaction
(it sees the step's own deletes and updates, and its verdict commits with them), and returns
table.column names and counts only.

What is searched, for a bounded cost (a 1,000,000-member site cannot afford a full scan of every
text column for each withdrawal):

1. **Index probes.** A text column that leads an index is asked for the identity's whole value
   in the forms it is commonly stored in (as captured, canonical): ``col IN (...)``, one index
   lookup. PostgreSQL compares case-sensitively here; MariaDB's usual ``_ci`` collations do
   not. A column also searched by pass 2 is not probed.
2. **One pass per table over the columns that can hold the identity.** A table the server
   estimates at no more than ``residue_exhaustive_rows`` rows is searched in every text and
   JSON column for every identity. A larger one is sampled: its newest
   ``residue_sample_rows`` rows (by primary key) go through
   :func:`lifecycle.datamap.patterns.kinds_in`, as ``datamap discover`` does; a column whose
   sample holds an email (plain, or inside a JSON or PHP-serialized blob) is searched for the
   member's emails, one with a mobile number for the member's mobile numbers, and the map's
   declared identity columns (``identities:``, ``subject.contact``) always; the table is named
   in the result's ``sampled``. One ``SELECT SUM(CASE …)`` per table counts, per column, the
   rows whose value contains an email case-blind (``lower(col) LIKE '%…%'``), a mobile number
   in one of its usual spellings (``010-1234-5678``, ``01012345678``, ``+82 10-…``), or holds
   the login id: as the whole value, case-blind, and, for an id that cannot be an ordinary word
   (:func:`login_in_text`), as a word inside the text (:func:`login_pattern`).
3. **Budgets.** ``residue_budget_seconds`` bounds the whole check (each statement runs with
   the remaining time as its timeout); ``residue_max_rows`` bounds the rows pass 2 may read
   (from the server's row estimate, before the table is read). What a budget left unsearched
   makes the result *incomplete*, which the request shows like a finding: never a silent ok.

What is not residue (not searched):

- the lifecycle's own tables (``lifecycle_*``): a withdrawn member's notice address is kept
  there on purpose, for at most ``notice_address_days``;
- the key and member-link columns the map declares (``key``, ``subject_column``, ``members:``,
  ``via``): another member's memo to the leaver names the leaver's login id in its recipient
  column, which is a reference the map keeps, not the leaver's data;
- with ``keep_row``, the subject table's ``login_column``: the blank row keeps the login id
  reserved on purpose;
- rows the map keeps live for the member: in a withdrawal, the member's rows (by a direct
  member link) in mapped tables whose purpose does not end on withdrawal; in an erasure (the
  member stays), the member's rows in every mapped table other than the subject table.

Everything else counts: an unmapped table, a mapped table's free-text column, an ignored table
(``ignore_tables`` says the map need not describe it, not that it holds nothing), another
member's row quoting the address.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Text, and_, case, cast, event, func, inspect, or_, select, text
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy import types as sqltypes
from sqlalchemy.exc import DBAPIError

from lifecycle.core import dbkind
from lifecycle.datamap.discover import OWN_TABLES
from lifecycle.datamap.entries import where_clause
from lifecycle.datamap.identities import mobile_forms, normalise_email, normalise_mobile
from lifecycle.datamap.model import DataMap
from lifecycle.datamap.patterns import kinds_in

log = logging.getLogger(__name__)

# A value that is a phone number and nothing else (no letters: a hash or a token is not one).
_PHONE_ONLY = re.compile(r"[+()0-9 .\-]{9,24}")


@dataclass(frozen=True, repr=False)
class Identities:
    """The member's identities, canonical, in memory only. Its repr names counts, never values,
    so a stray log line or traceback cannot carry them."""

    login: str | None = None
    emails: frozenset[str] = frozenset()
    mobiles: frozenset[str] = frozenset()
    # Whole values as the member's row held them, for the index probes.
    raw: frozenset[str] = frozenset()
    # subject-table column -> the member's value: finds the member's rows the map keeps live.
    links: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Identities(login={int(self.login is not None)}, emails={len(self.emails)}, "
            f"mobiles={len(self.mobiles)})"
        )

    __str__ = __repr__

    @property
    def empty(self) -> bool:
        return self.login is None and not self.emails and not self.mobiles

    def whole_forms(self) -> list[str]:
        """The whole values an index is probed with."""
        out = set(self.raw) | set(self.emails)
        if self.login:
            out.add(self.login)
        for m in self.mobiles:
            out.update(mobile_spellings(m))
        return sorted(out)


def mobile_spellings(canonical: str) -> list[str]:
    """How a mobile number is commonly written: 010-1234-5678, 01012345678, 010 1234 5678,
    010.1234.5678, +82 10-1234-5678, +82-10-1234-5678, +821012345678 (and 8210… digits)."""
    a, rest = canonical[:3], canonical[3:]
    b, c = rest[:-4], rest[-4:]
    out = {a + sep + b + sep + c for sep in ("-", "", " ", ".")}
    for lead in ("+82", "+82 ", "+82-"):
        for sep in ("-", "", " "):
            out.add(lead + a[1:] + sep + b + sep + c)
    out.update(mobile_forms(canonical))
    return sorted(out)


def _as_email(value: Any) -> str | None:
    return normalise_email(value) if isinstance(value, str) and len(value) <= 320 else None


def _as_mobile(value: Any) -> str | None:
    if not isinstance(value, str) or not _PHONE_ONLY.fullmatch(value.strip()):
        return None
    return normalise_mobile(value)


def _collect(values: Iterable[Any]) -> tuple[set[str], set[str], set[str]]:
    emails: set[str] = set()
    mobiles: set[str] = set()
    raw: set[str] = set()
    for v in values:
        e, m = _as_email(v), _as_mobile(v)
        if e:
            emails.add(e)
        if m:
            mobiles.add(m)
        if (e or m) and isinstance(v, str):
            raw.add(v.strip())
    return emails, mobiles, raw


def capture_member(conn: Connection, dm: DataMap, subject: Any, member_id: int) -> Identities:
    """The member's identities from their row of the subject table (``subject``, a Table):
    the login id, the declared contact columns, and any text column whose whole value is an
    email address or a mobile number. Empty when the row is gone."""
    s = dm.subject
    row = conn.execute(select(subject).where(subject.c[s.key] == member_id)).mappings().first()
    if row is None:
        return Identities()
    return _identities(dm, row)


def capture_members(
    conn: Connection, dm: DataMap, subject: Any, member_ids: Iterable[int]
) -> dict[int, Identities]:
    """:func:`capture_member` for several members in one statement (a group of withdrawals);
    a member whose row is gone is left out."""
    s = dm.subject
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    rows = conn.execute(select(subject).where(subject.c[s.key].in_(ids))).mappings()
    return {int(row[s.key]): _identities(dm, row) for row in rows}


def _identities(dm: DataMap, row: Any) -> Identities:
    s = dm.subject
    login = None
    raw_login = row.get(s.login_column) if s.login_column else None
    if isinstance(raw_login, str | int):
        login = str(raw_login).strip().lower() or None
    # A login that is the email is searched as an email too.
    texts = [v for k, v in row.items()
             if isinstance(v, str) and (k != s.login_column or s.login_is_contact)]  # fmt: skip
    emails, mobiles, raw = _collect(texts)
    if login is not None:
        raw.add(str(raw_login).strip())
    return Identities(login, frozenset(emails), frozenset(mobiles), frozenset(raw), _links(dm, row))


def capture_fields(
    conn: Connection, dm: DataMap, subject: Any, member_id: int, fields: Iterable[str]
) -> Identities:
    """For an erasure: the identities (an email, a mobile number) among the values of the
    member's ``fields`` about to be cleared; the member's link values find the rows the map
    keeps while the member stays."""
    s = dm.subject
    row = conn.execute(select(subject).where(subject.c[s.key] == member_id)).mappings().first()
    if row is None:
        return Identities()
    emails, mobiles, raw = _collect(row.get(f) for f in fields)
    return Identities(None, frozenset(emails), frozenset(mobiles), frozenset(raw), _links(dm, row))


def _links(dm: DataMap, row: Any) -> dict[str, Any]:
    return {
        lk.member_key: row[lk.member_key]
        for tm in dm.tables.values()
        for lk in tm.links
        if lk.member_key in row and row[lk.member_key] is not None
    }


@dataclass
class Result:
    """Names and counts only."""

    found: dict[str, int] = field(default_factory=dict)  # table.column -> rows
    incomplete: str | None = None
    searched: int = 0  # columns searched by pass 2
    probed: int = 0  # indexed columns probed
    sampled_out: int = 0  # text columns whose sample held no identity's kind
    # Tables over the exhaustive bound, whose columns were chosen by a sample: a column whose
    # sample held no address or number was not searched there.
    sampled: list[str] = field(default_factory=list)
    rows_read: int = 0
    seconds: float = 0.0
    skipped: bool = False  # nothing to look for (no identity captured)

    @property
    def clean(self) -> bool:
        return not self.found and self.incomplete is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "found": dict(sorted(self.found.items())),
            "incomplete": self.incomplete,
            "searched": self.searched,
            "probed": self.probed,
            "sampled_out": self.sampled_out,
            "sampled": sorted(self.sampled),
            "rows_read": self.rows_read,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Budget:
    seconds: float = 30.0
    max_rows: int = 20_000_000
    sample_rows: int = 500
    exhaustive_rows: int = 200_000

    @classmethod
    def from_settings(cls, settings: Any) -> Budget:
        return cls(
            float(settings.residue_budget_seconds),
            int(settings.residue_max_rows),
            int(settings.residue_sample_rows),
            int(settings.residue_exhaustive_rows),
        )


class _OutOfTime(Exception):
    pass


def _text_column(t: Any) -> bool:
    return isinstance(t, sqltypes.String | sqltypes.JSON) and not isinstance(t, sqltypes.Enum)


def _excluded_columns(dm: DataMap, name: str) -> set[str]:
    # ``name`` is a database table; several map entries may share it (``table:`` + ``where:``).
    out: set[str] = {c for tm in dm.entries_on(name) for c in tm.key_columns}
    s = dm.subject
    if name == s.table and s.keep_row and s.login_column and not s.login_is_contact:
        out.add(s.login_column)
    return out


def _declared(dm: DataMap, name: str) -> dict[str, set[str]]:
    """kind -> the table's columns the map declares as holding that kind of identity."""
    out: dict[str, set[str]] = {"email": set(), "mobile": set()}
    for tm in dm.entries_on(name):
        for kind, col in tm.identities:
            out.setdefault(kind, set()).add(col)
    s = dm.subject
    if name == s.table:
        if s.email_column:
            out["email"].add(s.email_column)
        if s.mobile_column:
            out["mobile"].add(s.mobile_column)
    return out


def _kept_rows(dm: DataMap, name: str, t: Any, ids: Identities, kept: Callable[[Any], bool]) -> Any:
    """A clause leaving out the member's rows the map keeps live in this table (None: none)."""
    conds = [
        and_(
            lk.expr(t).is_not(None),
            lk.expr(t) == ids.links[lk.member_key],
            *([where_clause(tm.where, t)] if tm.where else []),
        )
        for tm in dm.entries_on(name)
        if kept(tm)
        for lk in tm.links
        if lk.member_key in ids.links and lk.column in t.c
    ]
    return ~or_(*conds) if conds else None


def kept_in_withdrawal(tm: Any) -> bool:
    """A withdrawal keeps the member's rows of a table whose purpose does not end with it."""
    return not tm.ends_on("withdrawal")


def kept_in_erasure(dm: DataMap) -> Callable[[Any], bool]:
    """An erasure keeps the member's rows everywhere but in the subject table's row itself."""
    return lambda tm: tm.name != dm.subject.table


class _Clock:
    def __init__(self, budget: float, clock: Callable[[], float]) -> None:
        self.budget, self.clock, self.start = budget, clock, clock()

    def left(self) -> float:
        return self.budget - (self.clock() - self.start)


def _estimate_rows(conn: Connection) -> dict[str, int]:
    """The server's row estimate of every table, read with one query per check (a table it has
    no estimate for counts 0): the row budget is checked before a table is read, without
    counting it."""
    fam = dbkind.family(conn)
    if fam == "postgresql":
        rows = conn.execute(
            text(
                "SELECT relname, reltuples FROM pg_class "
                "WHERE relnamespace = current_schema()::regnamespace "
                "AND relkind IN ('r', 'p', 'f', 'm')"
            )
        ).all()
    elif fam == "mysql":
        rows = conn.execute(
            text(
                "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE()"
            )
        ).all()
    else:
        return {}
    return {str(name): max(int(n or 0), 0) for name, n in rows}


# Execution option: run the statement under ``SET STATEMENT max_statement_time = <seconds> FOR``
# (MariaDB), added to the SQL text as it goes out so that the statement's compiled form stays
# in SQLAlchemy's cache (compiling the search's SQL afresh cost more than the search).
_STATEMENT_TIME = "lifecycle_max_statement_time"


def _statement_time_prefix(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    seconds = context.execution_options.get(_STATEMENT_TIME) if context is not None else None
    if seconds is not None:
        statement = f"SET STATEMENT max_statement_time = {float(seconds):.3f} FOR {statement}"
    return statement, parameters


def _prefix_statement_time(engine: Any) -> None:
    with _PLANS_LOCK:
        if not event.contains(engine, "before_cursor_execute", _statement_time_prefix):
            event.listen(engine, "before_cursor_execute", _statement_time_prefix, retval=True)


class _Statements:
    """Runs the check's statements, each with the budget's remaining time as its timeout, in
    as few round trips as the server allows: the check sends one to three statements per
    table, and on a loaded server each extra round trip costs as much as a small table's
    search. :meth:`close` puts the caller's own setting back (PostgreSQL)."""

    def __init__(self, conn: Connection, clock: _Clock) -> None:
        self.conn, self.clock = conn, clock
        self.fam = dbkind.family(conn)
        self.mariadb = dbkind.is_mariadb(conn)
        # PostgreSQL: the caller's statement_timeout, read at the first statement.
        self._pg_prev: str | None = None

    def run(self, stmt: Any) -> Any:
        left = self.clock.left()
        if left <= 0:
            raise _OutOfTime
        if self.fam not in ("postgresql", "mysql"):
            # SQLite (the embedded default) has no statement timeout: the clock is checked
            # between statements only.
            return self.conn.execute(stmt).all()
        try:
            if self.mariadb:
                return self._mariadb(stmt, left)
            return self._in_savepoint(stmt, left)
        except DBAPIError:
            if self.clock.left() <= 0.05 * self.clock.budget:
                raise _OutOfTime from None
            raise

    def _mariadb(self, stmt: Any, left: float) -> Any:
        # One round trip: the timeout applies to this statement only, and a statement it stops
        # is undone alone (InnoDB), so no savepoint: these are reads, and the caller's
        # transaction (the destroying one) stays as it was.
        _prefix_statement_time(self.conn.engine)
        return self.conn.execute(stmt.execution_options(**{_STATEMENT_TIME: left})).all()

    def _in_savepoint(self, stmt: Any, left: float) -> Any:
        # In a savepoint: a timeout rolls back to it (PostgreSQL aborts the transaction on any
        # error otherwise) and leaves the caller's transaction intact.
        conn = self.conn
        if self.fam == "postgresql" and self._pg_prev is None:
            prev = conn.execute(text("SELECT current_setting('statement_timeout')")).scalar()
            self._pg_prev = str(prev)
        sp = conn.begin_nested()
        try:
            if self.fam == "postgresql":
                # Local to the transaction (a rollback to the savepoint undoes it); close()
                # puts the caller's value back once, after the check's last statement.
                conn.execute(
                    text("SELECT set_config('statement_timeout', :v, true)"),
                    {"v": str(max(int(left * 1000), 1))},
                )
                rows = conn.execute(stmt).all()
            else:
                # MySQL 8: no per-statement form for a whole statement here; set and put back.
                prev = conn.execute(text("SELECT @@session.max_execution_time")).scalar()
                conn.execute(text(f"SET SESSION max_execution_time = {max(int(left * 1000), 1)}"))
                try:
                    rows = conn.execute(stmt).all()
                finally:
                    conn.execute(text(f"SET SESSION max_execution_time = {int(prev or 0)}"))
        except DBAPIError:
            sp.rollback()
            raise
        sp.commit()
        return rows

    def close(self) -> None:
        if self._pg_prev is not None:
            self.conn.execute(
                text("SELECT set_config('statement_timeout', :v, true)"), {"v": self._pg_prev}
            )
            self._pg_prev = None


def _lower(col: Any, is_json: bool) -> Any:
    return func.lower(cast(col, Text) if is_json else col)


def scan(
    conn: Connection,
    dm: DataMap,
    ids: Identities,
    *,
    kept: Callable[[Any], bool],
    budget: Budget,
    clock: Callable[[], float] = time.monotonic,
) -> Result:
    """Search the primary (``conn``, in the destroying transaction) for ``ids``; names and
    counts only. ``kept(tablemap)``: whether the member's rows of that mapped table stay live
    (:func:`kept_in_withdrawal`, :func:`kept_in_erasure`)."""
    return scan_many(conn, dm, [ids], kept=kept, budget=budget, clock=clock)[0]


@dataclass
class _Member:
    """One member of a grouped search: what to look for, and its own result."""

    ids: Identities
    res: Result
    whole: list[str]
    emails: list[str]


def scan_many(
    conn: Connection,
    dm: DataMap,
    group: list[Identities],
    *,
    kept: Callable[[Any], bool],
    budget: Budget,
    clock: Callable[[], float] = time.monotonic,
) -> list[Result]:
    """:func:`scan` for several members destroyed in one transaction (grouped withdrawals):
    one statement per table counts every member's columns side by side, so a table is read
    once for the group instead of once per member; each member gets its own result (what was
    found for another member is never in it). The budgets bound the whole group's check."""
    t0 = clock()
    members = [_Member(i, Result(), i.whole_forms(), sorted(i.emails)) for i in group]
    for m in members:
        m.res.skipped = m.ids.empty
    live = [m for m in members if not m.ids.empty]
    if live:
        timer = _Clock(budget.seconds, clock)
        insp = schema_plan(conn)
        names = sorted(n for n in insp.names if not n.startswith(OWN_TABLES))
        fam = dbkind.family(conn)
        left_out: list[str] = []
        stmts = _Statements(conn, timer)
        estimates = _estimate_rows(conn)
        incomplete: str | None = None
        try:
            for i, name in enumerate(names):
                try:
                    _scan_table(conn, dm, live, name, stmts, budget, fam, kept, insp, left_out,
                                estimates.get(name, 0))  # fmt: skip
                except _OutOfTime:
                    left_out.extend(names[i:])
                    raise
        except _OutOfTime:
            incomplete = f"time budget of {budget.seconds:g}s used up; not searched: " + _names(
                sorted(set(left_out))
            )
        else:
            if left_out:
                incomplete = (
                    f"row budget of {budget.max_rows} rows used up; not searched: "
                    + _names(sorted(set(left_out)))
                )
        finally:
            stmts.close()
        for m in live:
            m.res.incomplete = incomplete
    seconds = clock() - t0
    for m in members:
        m.res.seconds = seconds
    return [m.res for m in members]


# A login id is looked for inside text only when it cannot be an ordinary word: at least this
# long and holding a digit or one of . _ - (``seoyeon92``, ``lee_mh7``, ``jiwoo.park``;
# never ``admin`` or ``kim``).
LOGIN_IN_TEXT_MIN = 6
_LOGIN_MARK = re.compile(r"[0-9._-]")
# What may not touch a login id found inside text: id characters, or the @ of an address.
_LOGIN_EDGE = "[^a-z0-9._@-]"


def login_in_text(login: str) -> bool:
    """Whether ``login`` (canonical, lower-cased) is searched for inside text too."""
    return len(login) >= LOGIN_IN_TEXT_MIN and bool(_LOGIN_MARK.search(login))


def login_pattern(login: str) -> str:
    """A regular expression (PostgreSQL and MariaDB/MySQL alike) finding ``login`` as a word of
    a lower-cased text: not preceded or followed by a letter, digit, ``.``, ``_``, ``-`` or
    ``@`` (``xseoyeon92``, ``seoyeon92a`` and ``seoyeon92@mail`` do not count)."""
    body = "".join(ch if ch.isalnum() else f"\\{ch}" if ch in "^\\" else f"[{ch}]" for ch in login)
    return f"(^|{_LOGIN_EDGE}){body}($|{_LOGIN_EDGE})"


def _names(names: list[str], shown: int = 8) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _scan_table(
    conn: Connection,
    dm: DataMap,
    members: list[_Member],
    name: str,
    stmts: _Statements,
    budget: Budget,
    fam: str,
    kept: Callable[[Any], bool],
    insp: _Schema,
    left_out: list[str],
    est: int,
) -> None:
    timer = stmts.clock
    if timer.left() <= 0:
        raise _OutOfTime
    cols_info = insp.columns.get(name, [])
    excluded = _excluded_columns(dm, name)
    json_cols = {c["name"] for c in cols_info if isinstance(c["type"], sqltypes.JSON)}
    cols = [c["name"] for c in cols_info if _text_column(c["type"]) and c["name"] not in excluded]
    if not cols:
        return
    all_names = [c["name"] for c in cols_info]
    pk = insp.pk.get(name, [])
    t = sa_table(name, *(sa_column(c) for c in all_names))
    # Which columns can hold which identity: the newest rows' patterns, and the map's word.
    declared = _declared(dm, name)
    holds: dict[str, set[str]] | None
    if est <= budget.exhaustive_rows:
        # Small enough to search whole: every text column, for every identity.
        holds = {c: {"email", "mobile"} for c in cols}
    else:
        # A larger table: its sample, kept by this worker for a while (schema_plan).
        holds = insp.sampled(name, cols, budget.sample_rows, timer.clock())
    if holds is None:
        sample = select(*(t.c[c] for c in cols)).limit(budget.sample_rows)
        if pk:
            sample = sample.order_by(*(t.c[c].desc() for c in pk))
        holds = {c: set() for c in cols}
        for row in stmts.run(sample):
            for c, value in zip(cols, row, strict=True):
                if value is not None:
                    holds[c].update(k.rsplit(":", 1)[-1] for k in kinds_in(value))
        insp.remember(name, cols, budget.sample_rows, timer.clock(), holds)
    for kind, dcols in declared.items():
        for c in dcols:
            if c in holds:
                holds[c].add(kind)
    alone = len(members) == 1
    # (member, column): a column searched for a member (its condition built when counted).
    counted: list[tuple[_Member, str]] = []
    keeps: list[Any] = []
    for m in members:
        keeps.append(_kept_rows(dm, name, t, m.ids, kept))
        mine = [c for c in cols if _looked_for(m, holds[c])]
        m.res.sampled_out += len(cols) - len(mine)
        if len(mine) < len(cols) and est > budget.exhaustive_rows:
            m.res.sampled.append(name)
        counted += [(m, c) for c in mine]
    if counted:
        read = members[0].res.rows_read
        if read + est > budget.max_rows:
            left_out.append(name)
        else:
            if alone:
                conds = _conditions(members[0], [c for _m, c in counted], json_cols, holds, t)
                _count(stmts, t, name, [(members[0], c, conds[c]) for c in conds], keeps[0])
            else:
                keep_of = {id(m): k for m, k in zip(members, keeps, strict=True)}
                _count_group(stmts, t, name, counted, json_cols, holds, keep_of)
            for m in members:
                m.res.searched += sum(1 for mm, _c in counted if mm is m)
                m.res.rows_read = read + est
    # Pass 1: the indexed text columns pass 2 did not search, probed with whole values; in a
    # group, every member's probes in one statement (each still an index lookup).
    searched = {(id(m), c) for m, c in counted}
    probes: list[tuple[_Member, str, Any]] = []
    for m, keep_clause in zip(members, keeps, strict=True):
        for c in insp.indexed.get(name, []):
            if (id(m), c) in searched or c not in cols or not m.whole:
                continue
            probe = select(func.count()).select_from(t).where(t.c[c].in_(m.whole))
            if keep_clause is not None:
                probe = probe.where(keep_clause)
            probes.append((m, c, probe))
    if not probes:
        return
    if alone:
        counts = [stmts.run(p)[0][0] for _m, _c, p in probes]
    else:
        counts = list(stmts.run(select(*(p.scalar_subquery() for _m, _c, p in probes)))[0])
    for (m, c, _p), n in zip(probes, counts, strict=True):
        m.res.probed += 1
        if n:
            m.res.found[f"{name}.{c}"] = m.res.found.get(f"{name}.{c}", 0) + int(n)


def _count(stmts: _Statements, t: Any, name: str, counted: list[Any], where: Any) -> None:
    """Every (member, column, condition) of ``counted`` in one statement: the rows matching."""
    q = select(
        *(
            func.sum(case((cond, 1), else_=0)).label(f"c{i}")
            for i, (_m, _c, cond) in enumerate(counted)
        )
    ).select_from(t)
    if where is not None:
        q = q.where(where)
    row = stmts.run(q)[0]
    for (m, c, _cond), n in zip(counted, row, strict=True):
        if n:
            m.res.found[f"{name}.{c}"] = int(n)


def _count_group(
    stmts: _Statements,
    t: Any,
    name: str,
    counted: list[tuple[_Member, str]],
    json_cols: set[str],
    holds: dict[str, set[str]],
    keep_of: dict[int, Any],
) -> None:
    """:func:`_count` for a group: every member's conditions side by side would make the
    server test each row once per member and spelling (a group of 50 costs more than 50 single
    checks). First one statement asks, per column, for the rows holding any of the group's
    values at all (one regular expression per column: a superset of what the members'
    conditions match); only the columns where some row does are then counted exactly, per
    member (its kept rows left out of its own count), over those rows only. Residue is rare,
    so that second statement is seldom sent."""
    by_col: dict[str, list[_Member]] = {}
    for m, c in counted:
        by_col.setdefault(c, []).append(m)
    pre: dict[str, Any] = {}
    for c, ms in by_col.items():
        pattern = _any_of(ms)
        if pattern is not None:
            pre[c] = _lower(t.c[c], c in json_cols).regexp_match(pattern)
    loose = [c for c in by_col if c not in pre]
    if pre:
        q = select(
            *(
                func.sum(case((cond, 1), else_=0)).label(f"p{i}")
                for i, cond in enumerate(pre.values())
            )
        ).select_from(t)
        hits = dict(zip(pre, stmts.run(q)[0], strict=True))
        loose += [c for c in pre if hits[c]]
    if not loose:
        return
    exact = []
    for c in loose:
        for m in by_col[c]:
            cond = _conditions(m, [c], json_cols, holds, t)[c]
            keep = keep_of[id(m)]
            exact.append((m, c, cond if keep is None else and_(keep, cond)))
    where = or_(*(pre[c] for c in loose)) if all(c in pre for c in loose) else None
    _count(stmts, t, name, exact, where)


def _any_of(members: Iterable[_Member]) -> str | None:
    """One regular expression (PostgreSQL and MariaDB/MySQL alike) a lower-cased value matches
    whenever one of the members' conditions matches it: their emails and login ids as
    literals, each mobile number's middle and last digit groups as every spelling of it holds
    them. None: nothing to look for (the caller counts exactly)."""
    alts: set[tuple[str, ...]] = set()
    for m in members:
        alts.update(_atoms(e) for e in m.emails)
        if m.ids.login:
            alts.add(_atoms(m.ids.login))
        # Every spelling (mobile_spellings) holds these two groups with at most one separator.
        alts.update((*mob[3:-4], "[-. ]?", *mob[-4:]) for mob in m.ids.mobiles if mob.isdigit())
        if any(not mob.isdigit() for mob in m.ids.mobiles):
            return None
    return _prefix_tree(frozenset(alts)) if alts else None


# A group's columns are searched for the same values: the pattern is built once.
@lru_cache(maxsize=64)
def _prefix_tree(alts: frozenset[tuple[str, ...]]) -> str:
    """The alternation of ``alts`` (each a sequence of atoms) with common prefixes factored
    out: the same matches, but a server tests each position of a value against a branch per
    distinct next atom instead of against every alternative (MariaDB's PCRE2 tried all fifty
    of a group's at each position, which made the pre-check cost grow with the group). For a
    search that only asks whether a value contains one of them, an alternative extending
    another adds nothing and is dropped."""
    end = ""
    tree: dict[str, Any] = {}
    for seq in alts:
        node = tree
        for atom in seq:
            node = node.setdefault(atom, {})
        node[end] = {}

    def emit(node: dict[str, Any]) -> str:
        if end in node:
            return ""
        branches = [atom + emit(child) for atom, child in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(tree)


def _atoms(value: str) -> tuple[str, ...]:
    """``value`` as the atoms both servers' regular expressions match as itself, one a
    character."""
    return tuple(ch if ch.isalnum() else f"\\{ch}" if ch in "^\\[]" else f"[{ch}]" for ch in value)


def _looked_for(m: _Member, kinds: set[str]) -> bool:
    """Whether a column whose values may hold ``kinds`` is searched for ``m`` (what makes
    :func:`_conditions` give it a condition)."""
    return bool(m.emails and "email" in kinds) or bool(m.ids.mobiles and "mobile" in kinds)


def _conditions(
    m: _Member, cols: list[str], json_cols: set[str], holds: dict[str, set[str]], t: Any
) -> dict[str, Any]:
    """column -> the condition a row matching one of ``m``'s identities meets there."""
    ids, emails = m.ids, m.emails
    conds: dict[str, Any] = {}
    for c in cols:
        low = _lower(t.c[c], c in json_cols)
        terms: list[Any] = []
        if emails and "email" in holds[c]:
            terms += [low.contains(e, autoescape=True) for e in emails]
        if ids.mobiles and "mobile" in holds[c]:
            raw = cast(t.c[c], Text) if c in json_cols else t.c[c]
            for mob in sorted(ids.mobiles):
                # Every spelling holds the middle and last digit groups in order: one LIKE
                # per row rules most rows out before the spellings are tried.
                first = raw.like(f"%{mob[3:-4]}%{mob[-4:]}%")
                these = [raw.contains(sp, autoescape=True) for sp in mobile_spellings(mob)]
                terms.append(and_(first, or_(*these)))
        if terms and ids.login:
            terms.append(func.trim(low) == ids.login)
            if login_in_text(ids.login):
                terms.append(low.regexp_match(login_pattern(ids.login)))
        if terms:
            conds[c] = or_(*terms)
    return conds


# (table, its searched columns, sample size): a map or budget change makes a new sample.
_SampleKey = tuple[str, tuple[str, ...], int]


class _Schema:
    """The primary's tables, columns, primary keys and index-leading columns, read with one
    query each for all tables (a query per table costs seconds on a schema of hundreds), and
    what each table's sample said its columns hold (the search plan, kept by :func:`schema_plan`
    for the next withdrawals of this worker)."""

    def __init__(self, conn: Connection) -> None:
        # -> (when read, column -> the kinds of identity its sample held)
        self._samples: dict[_SampleKey, tuple[float, dict[str, set[str]]]] = {}
        insp = inspect(conn)
        self.names: list[str] = list(insp.get_table_names())
        self.columns: dict[str, list[Any]] = {
            k[1]: list(v) for k, v in insp.get_multi_columns().items()
        }
        self.pk: dict[str, list[str]] = {
            k[1]: list(v.get("constrained_columns") or [])
            for k, v in insp.get_multi_pk_constraint().items()
        }
        firsts: dict[str, list[list[str]]] = {n: [self.pk.get(n, [])] for n in self.names}
        try:
            for k, ixs in insp.get_multi_indexes().items():
                firsts.setdefault(k[1], []).extend(
                    [str(c) for c in ix.get("column_names") or [] if c] for ix in ixs
                )
            for k, ucs in insp.get_multi_unique_constraints().items():
                firsts.setdefault(k[1], []).extend(list(uc.get("column_names") or []) for uc in ucs)
        except NotImplementedError:
            pass
        self.indexed: dict[str, list[str]] = {
            n: list(dict.fromkeys(cols[0] for cols in lists if cols)) for n, lists in firsts.items()
        }

    def sampled(
        self, name: str, cols: list[str], rows: int, now: float
    ) -> dict[str, set[str]] | None:
        """A copy of what the table's sample held, if it was read less than
        :data:`SAMPLE_PLAN_SECONDS` ago (the caller adds the map's declared kinds to it)."""
        hit = self._samples.get((name, tuple(cols), rows))
        if hit is None or now - hit[0] > SAMPLE_PLAN_SECONDS:
            return None
        return {c: set(kinds) for c, kinds in hit[1].items()}

    def remember(
        self, name: str, cols: list[str], rows: int, now: float, holds: dict[str, set[str]]
    ) -> None:
        self._samples[(name, tuple(cols), rows)] = (now, {c: set(k) for c, k in holds.items()})


# How long a table's sample (which columns hold emails, mobile numbers) is reused by the next
# withdrawals of the same worker: a burst of withdrawals from the website would otherwise read
# every table's newest rows once per member. A column that starts holding a new kind of value
# is searched for it at the latest this long after; a column that leads an index is probed
# with the whole values meanwhile, and the map's declared identity columns are always searched.
SAMPLE_PLAN_SECONDS = 60.0

# engine URL -> (schema fingerprint, plan); per worker process, guarded by _PLANS_LOCK.
_PLANS: dict[str, tuple[Any, _Schema]] = {}
_PLANS_LOCK = threading.Lock()


def _fingerprint(conn: Connection) -> Any:
    """A digest of the primary's tables, columns, their types and index-leading columns, read
    with one catalogue query: a change to any of them (a table added, a column altered) makes
    the next check reflect the schema again. None: no cheap digest here (reflect every time)."""
    fam = dbkind.family(conn)
    if fam == "mysql":
        return tuple(
            conn.execute(
                text(
                    "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', TABLE_NAME, COLUMN_NAME, "
                    "COLUMN_TYPE, COLUMN_KEY, ORDINAL_POSITION))), 0), "
                    "(SELECT COALESCE(SUM(CRC32(CONCAT_WS('|', TABLE_NAME, INDEX_NAME, "
                    "SEQ_IN_INDEX, COLUMN_NAME))), 0) FROM information_schema.STATISTICS "
                    "WHERE TABLE_SCHEMA = DATABASE()) "
                    "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                )
            ).one()
        )
    if fam == "postgresql":
        return conn.execute(
            text(
                "SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM ("
                " SELECT c.oid::text || ':' || a.attnum || ':' || a.attname || ':' || a.atttypid"
                "   || ':' || a.atttypmod AS x"
                " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " WHERE c.relnamespace = current_schema()::regnamespace"
                "   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
                "   AND a.attnum > 0 AND NOT a.attisdropped"
                " UNION ALL SELECT 'i' || i.indexrelid::text || ':' || i.indrelid::text || ':'"
                "   || i.indkey::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
                " WHERE c.relnamespace = current_schema()::regnamespace) s"
            )
        ).scalar()
    if fam == "sqlite":
        return conn.execute(
            text("SELECT group_concat(coalesce(sql, ''), ';') FROM sqlite_master")
        ).scalar()
    return None


def schema_plan(conn: Connection) -> _Schema:
    """The reflected schema (and its sample plan) for ``conn``'s database, reused while the
    schema's fingerprint is unchanged: reflecting costs seconds per withdrawal on MariaDB."""
    fp = _fingerprint(conn)
    key = conn.engine.url.render_as_string(hide_password=True)
    if fp is not None:
        with _PLANS_LOCK:
            hit = _PLANS.get(key)
        if hit is not None and hit[0] == fp:
            return hit[1]
    plan = _Schema(conn)
    if fp is not None:
        with _PLANS_LOCK:
            _PLANS[key] = (fp, plan)
    return plan


def forget_plans() -> None:
    """Drop every kept plan (tests that change a schema's contents and want a fresh sample)."""
    with _PLANS_LOCK:
        _PLANS.clear()
