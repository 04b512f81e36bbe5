"""The data map: which website tables and columns hold which personal data, and for how long.

The website's schema is not ours. An operator describes it in a YAML file (``LIFECYCLE_DATA_MAP``;
the demo counselling centre's map ships as ``lifecycle/datamaps/demo.yaml``). This module loads
and validates that file and answers the questions the engine asks while planning a withdrawal, a
sweep or a purge. It is pure: no Celery, no writes; the only database access is reflection in
:meth:`DataMap.validate_against` and :meth:`DataMap.reflect`.

Every error is one line naming the file and the line (``demo.yaml:42: ...``) so an operator can
fix the map without reading code. Errors never contain personal data: only table, column and
category names from the map itself.

Semantics (what the engine must do with the map)
------------------------------------------------

*Subject.* One table holds the data subjects (members). A member is withdrawn when its
``status_column`` equals ``withdrawn_value``; ``withdrawn_at_column`` says when.

*Relation.* Every mapped table says how its rows hang off a member: either directly through
``subject_column`` (a column holding the member's key; it may be NULL, e.g. anonymous access
logs, and such rows are only reached by an ``age`` purpose end), or ``via: {table, column}``
(``column`` of this table references the primary key of a parent mapped table, which in turn
relates to the member). :meth:`DataMap.member_expr` builds the SQL expression giving a row's
member id either way.

*Categories.* Columns are listed under the category of personal data they hold. Key and
relation columns, and columns listed under ``non_personal``, are not personal data; every other
column of a mapped table must be listed (checked against the real schema) so a column the
operator forgot can never slip into the archive or survive a destruction unnoticed.

*Purpose end.* What ends a row's purpose: ``withdrawal`` (its member withdrew; the purpose ended
at the member's withdrawal time), ``dormancy`` (its member has been inactive for
``subject.dormancy.inactive_for``; an operator option, off by default, with
``advance_notice_days`` of notice first), and ``age`` (``{age: COLUMN}`` or
``{age: {column: COLUMN, after: PERIOD}}``: the row is destroyed once ``COLUMN`` is older than
``after``, which defaults to the longest retention period among the table's categories, e.g.
access logs after 3 months, whether or not the member is still active).

*Retention.* ``retention:`` maps every category to a period and a legal basis. Built-in
defaults follow docs/design.md (contract 5y, payment 5y, complaint 3y, advertising 6mo, tax 5y,
access_log 3mo, everything else 0d = destroy within 5 days under PIPA 제21조); the map overrides
them per category. ``counselling`` has no default: the operator must set it, and no rule may be
unbounded. A period is counted from the table's ``retain_from`` column when set (e.g.
``payments.paid_at``: 5 years from the payment), otherwise from the purpose end.

*Rows holding several categories* (the decision :meth:`TableMap.plan_row` makes): when a row's
purpose ends, each of its categories is *retained* if its period is non-zero and
``anchor + period`` is still in the future. If no category is retained the row is destroyed.
Otherwise the row is archived and then deleted from the primary DB: the archive receives one
part per retained category holding that category's columns plus the row's key, relation and
``non_personal`` columns, with that category's own ``retain_until``; columns of categories that
are not retained never reach the archive. So every datum is kept exactly as long as its own
rule allows (the row as a whole leaves the primary DB at once), and a part's expiry lines up with
a category x expiry-day key bucket. ``RowPlan.retain_until`` is the longest of the parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import MetaData, inspect, select
from sqlalchemy import types as sqltypes

from lifecycle.core.errors import UserError
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.periods import Period, Rule


class DataMapError(UserError):
    """The data map is wrong. ``str(exc)`` is ``FILE:LINE: message`` (one line)."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line else source
        super().__init__(f"data map {where}: {message}")


# -- public model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Via:
    """``column`` of the table references ``parent_key`` of mapped table ``table``."""

    table: str
    column: str
    parent_key: str


@dataclass(frozen=True)
class PurposeEnd:
    kind: Literal["withdrawal", "age", "dormancy"]
    column: str | None = None  # age only: the row's timestamp
    after: Period | None = None  # age only: explicit period; None = the table's longest rule


@dataclass(frozen=True)
class Dormancy:
    enabled: bool = False
    inactive_for: Period = field(default_factory=lambda: Period(years=1))
    last_active_column: str | None = None
    status_value: str = "dormant"
    advance_notice_days: int = 30


@dataclass(frozen=True)
class Subject:
    table: str
    key: str
    status_column: str
    withdrawn_value: str
    withdrawn_at_column: str
    dormancy: Dormancy


@dataclass(frozen=True)
class ArchivePart:
    """One retained category of one row: what goes to the archive and until when."""

    category: str
    retain_until: datetime
    columns: tuple[str, ...]  # the category's columns + key/relation/non_personal columns
    rule: Rule


@dataclass(frozen=True)
class RowPlan:
    """What happens to one row whose purpose ended (see the module docstring)."""

    archive: bool
    parts: tuple[ArchivePart, ...]
    destroyed_categories: tuple[str, ...]

    @property
    def retain_until(self) -> datetime | None:
        return max((p.retain_until for p in self.parts), default=None)


@dataclass
class TableMap:
    name: str
    key: str
    subject_column: str | None
    via: Via | None
    columns: dict[str, tuple[str, ...]]  # category -> columns, in map order
    non_personal: tuple[str, ...]
    files: tuple[str, ...]
    purpose_end: tuple[PurposeEnd, ...]
    retain_from: str | None
    line: int | None
    _map: DataMap = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    @property
    def categories(self) -> list[str]:
        return list(self.columns)

    def columns_of(self, category: str) -> tuple[str, ...]:
        return self.columns[category]

    def category_of(self, column: str) -> str | None:
        for cat, cols in self.columns.items():
            if column in cols:
                return cat
        return None

    @property
    def personal_columns(self) -> list[str]:
        return [c for cols in self.columns.values() for c in cols]

    @property
    def key_columns(self) -> list[str]:
        """Primary key and relation columns: they identify the row, they are not its data."""
        out = [self.key]
        for c in (self.subject_column, self.via.column if self.via else None):
            if c and c not in out:
                out.append(c)
        return out

    @property
    def carried_columns(self) -> list[str]:
        """Columns every archive part of a row carries (keys + non_personal)."""
        return [*self.key_columns, *(c for c in self.non_personal if c not in self.key_columns)]

    def retention_for(self, category: str) -> Rule:
        if category not in self.columns:
            raise KeyError(f"table {self.name} has no category {category}")
        return self._map.rule(category)

    @property
    def rules(self) -> list[Rule]:
        return [self._map.rule(c) for c in self.columns]

    @property
    def longest_rule(self) -> Rule | None:
        rules = self.rules
        return max(rules, key=lambda r: r.period.approx_days) if rules else None

    @property
    def retains_anything(self) -> bool:
        """False when every category is destroy-now: rows are never archived."""
        return any(not r.period.is_zero for r in self.rules)

    def ends_on(self, kind: str) -> bool:
        return any(p.kind == kind for p in self.purpose_end)

    @property
    def age(self) -> tuple[str, Period] | None:
        """``(column, period)`` when rows also expire by age, else None."""
        for p in self.purpose_end:
            if p.kind == "age":
                assert p.column is not None
                period = p.after or (self.longest_rule.period if self.longest_rule else None)
                assert period is not None
                return p.column, period
        return None

    def plan_row(
        self, purpose_ended_at: datetime, now: datetime, retain_from_value: datetime | None = None
    ) -> RowPlan:
        """Decide one row's fate. ``retain_from_value`` is the row's ``retain_from`` column (if
        the table has one; NULL there falls back to the purpose end)."""
        anchor = retain_from_value if retain_from_value is not None else purpose_ended_at
        anchor = as_utc(anchor)
        now = as_utc(now)
        parts: list[ArchivePart] = []
        destroyed: list[str] = []
        carried = tuple(self.carried_columns)
        for cat, cols in self.columns.items():
            rule = self._map.rule(cat)
            until = rule.retain_until(anchor)
            if rule.period.is_zero or until <= now:
                destroyed.append(cat)
            else:
                parts.append(ArchivePart(cat, until, carried + cols, rule))
        return RowPlan(bool(parts), tuple(parts), tuple(destroyed))


class DataMap:
    """A validated data map. Build it with :func:`load_datamap` / :func:`parse_datamap`."""

    def __init__(
        self,
        source: str,
        subject: Subject,
        rules: dict[str, Rule],
        tables: dict[str, TableMap],
        ignore_tables: tuple[str, ...],
        marks: dict[tuple[Any, ...], int],
    ) -> None:
        self.source = source
        self.subject = subject
        self.rules = rules
        self.tables = tables
        self.ignore_tables = ignore_tables
        self._marks = marks
        # child -> parents it must be deleted before; reflection adds real foreign keys.
        self._edges: dict[str, set[str]] = {name: set() for name in tables}
        for t in tables.values():
            t._map = self
            if t.via:
                self._edges[t.name].add(t.via.table)
            elif t.name != subject.table:
                self._edges[t.name].add(subject.table)
        self.tables_in_dependency_order()  # raises on a cycle in the declared relations

    # -- lookups -------------------------------------------------------------------------------

    def table(self, name: str) -> TableMap:
        return self.tables[name]

    @property
    def subject_table(self) -> TableMap:
        return self.tables[self.subject.table]

    def rule(self, category: str) -> Rule:
        return self.rules[category]

    def categories_in_use(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.tables.values():
            for c in t.columns:
                seen[c] = None
        return list(seen)

    def file_columns(self) -> list[tuple[str, str]]:
        """``(table, column)`` of every column holding a managed file's path."""
        return [(t.name, c) for t in self.tables.values() for c in t.files]

    def line_of(self, *path: Any) -> int | None:
        """The map's line for a key path, e.g. ``line_of("tables", "payments")``."""
        for n in range(len(path), 0, -1):
            if path[:n] in self._marks:
                return self._marks[path[:n]]
        return None

    def error(self, message: str, *path: Any) -> DataMapError:
        return DataMapError(self.source, self.line_of(*path), message)

    # -- planning ------------------------------------------------------------------------------

    def subject_path(self, table: str) -> list[TableMap]:
        """The chain of mapped tables from ``table`` up to the one with a subject_column."""
        chain = [self.tables[table]]
        while chain[-1].via is not None:
            chain.append(self.tables[chain[-1].via.table])
        return chain

    def tables_in_dependency_order(self) -> list[TableMap]:
        """Children before parents (the order to delete in); the subject table comes last.

        Uses the declared relations and, after :meth:`validate_against`, the real foreign keys
        between mapped tables (e.g. counselling_records.booking_id -> counselling_bookings).
        """
        order: list[str] = []
        state: dict[str, int] = {}
        # Reverse DFS: a table is emitted once every table that depends on it is emitted.
        dependents: dict[str, list[str]] = {n: [] for n in self.tables}
        for child, parents in self._edges.items():
            for p in parents:
                if p in dependents and p != child:
                    dependents[p].append(child)

        def visit(name: str, trail: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = " -> ".join([*trail[trail.index(name) :], name])
                raise self.error(f"tables reference each other in a cycle ({cycle})", "tables")
            state[name] = 1
            for d in dependents[name]:
                visit(d, [*trail, name])
            state[name] = 2
            order.append(name)

        names = [n for n in self.tables if n != self.subject.table] + [self.subject.table]
        for n in names:
            visit(n, [])
        # DFS emits dependents first; keep the subject table strictly last.
        order.remove(self.subject.table)
        order.append(self.subject.table)
        return [self.tables[n] for n in order]

    def member_expr(self, table: str, metadata: Any) -> Any:
        """SQL expression giving each row's member id (``metadata`` holds reflected tables).

        Direct relation: the column itself. Via: a correlated scalar subquery through the
        parents, usable in WHERE (``member_expr(...).in_(ids)``) or in a SELECT list.
        """
        chain = self.subject_path(table)
        if len(chain) == 1:
            return metadata.tables[table].c[chain[0].subject_column]
        return _nested_member_expr(chain, metadata)

    def reflect(self, engine: Any) -> Any:
        """A MetaData holding the mapped tables, reflected from the real database."""

        md = MetaData()
        md.reflect(bind=engine, only=list(self.tables))
        return md

    # -- validation against the real schema ----------------------------------------------------

    def validate_against(self, engine: Any) -> None:
        """Check every table and column the map names exists in the real database, every
        column of a mapped table is accounted for, time columns are dates/times, and no
        unmapped table references a mapped one. Records the real foreign keys for
        :meth:`tables_in_dependency_order`."""

        insp = inspect(engine)
        existing = set(insp.get_table_names())
        cols: dict[str, dict[str, Any]] = {}
        for name in self.tables:
            if name not in existing:
                raise self.error(f"table {name!r} does not exist in the database", "tables", name)
            cols[name] = {c["name"]: c["type"] for c in insp.get_columns(name)}

        def need(table: str, column: str | None, *path: Any, time: bool = False) -> None:
            if column is None:
                return
            if column not in cols[table]:
                raise self.error(f"column {table}.{column} does not exist in the database", *path)
            if time and not isinstance(cols[table][column], sqltypes.Date | sqltypes.DateTime):
                raise self.error(f"column {table}.{column} is not a date/time column", *path)

        s = self.subject
        st = s.table
        need(st, s.key, "subject", "key")
        need(st, s.status_column, "subject", "status_column")
        need(st, s.withdrawn_at_column, "subject", "withdrawn_at_column", time=True)
        if s.dormancy.last_active_column:
            need(
                st,
                s.dormancy.last_active_column,
                "subject",
                "dormancy",
                "last_active_column",
                time=True,
            )
        for name, t in self.tables.items():
            base = ("tables", name)
            need(name, t.key, *base, "key")
            need(name, t.subject_column, *base, "subject_column")
            if t.via:
                need(name, t.via.column, *base, "via", "column")
                need(t.via.table, t.via.parent_key, *base, "via", "parent_key")
            for cat, cs in t.columns.items():
                for i, c in enumerate(cs):
                    need(name, c, *base, "columns", cat, i)
            for i, c in enumerate(t.non_personal):
                need(name, c, *base, "non_personal", i)
            need(name, t.retain_from, *base, "retain_from", time=True)
            for i, p in enumerate(t.purpose_end):
                need(name, p.column, *base, "purpose_end", i, time=True)
            declared = set(t.carried_columns) | set(t.personal_columns)
            if name == st:
                declared |= {s.status_column, s.withdrawn_at_column}
            missing = [c for c in cols[name] if c not in declared]
            if missing:
                raise self.error(
                    f"column {name}.{missing[0]} is not in the data map: list it under a "
                    f"category in `columns:` or under `non_personal:`",
                    *base,
                )
            for fk in insp.get_foreign_keys(name):
                parent = fk.get("referred_table")
                if parent in self.tables and parent != name:
                    self._edges[name].add(parent)
        for other in sorted(existing - set(self.tables)):
            if other in self.ignore_tables or other.startswith(("lifecycle_", "alembic_version")):
                continue
            for fk in insp.get_foreign_keys(other):
                if fk.get("referred_table") in self.tables:
                    raise self.error(
                        f"table {other!r} references mapped table {fk['referred_table']!r} but "
                        f"is not in the data map: map it, or list it under `ignore_tables:`",
                        "tables",
                    )
        self.tables_in_dependency_order()


def _nested_member_expr(chain: list[TableMap], metadata: Any) -> Any:
    """member id of ``chain[0]``'s rows through ``via`` hops (correlated scalar subqueries)."""

    def expr_for(i: int, ref: Any) -> Any:
        # ``ref`` is the expression holding the key of chain[i]'s row.
        node = chain[i]
        t = metadata.tables[node.name]
        if node.via is None:
            return select(t.c[node.subject_column]).where(t.c[node.key] == ref).scalar_subquery()
        parent_ref = select(t.c[node.via.column]).where(t.c[node.key] == ref).scalar_subquery()
        return expr_for(i + 1, parent_ref)

    first = chain[0]
    first_t = metadata.tables[first.name]
    assert first.via is not None
    return expr_for(1, first_t.c[first.via.column])
