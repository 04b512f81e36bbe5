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
defaults follow DESIGN.md (contract 5y, payment 5y, complaint 3y, advertising 6mo, tax 5y,
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

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.constructor import SafeConstructor

from lifecycle.errors import UserError
from lifecycle.storage_engines import non_transactional, refusal

SHIPPED_DEMO_MAP = Path(__file__).parent / "datamaps" / "demo.yaml"

# The longest retention the map accepts: anything longer is "unbounded" in all but name.
MAX_PERIOD_YEARS = 100

PIPA_DEFAULT_BASIS = "개인정보 보호법 제21조 (목적 달성 후 지체 없이 파기, 5일 이내)"

# category -> (period, legal basis). counselling is deliberately absent: the operator sets it.
DEFAULT_RULES: dict[str, tuple[str, str]] = {
    "contract": ("5y", "전자상거래법 제6조, 시행령 제6조 (계약 또는 청약철회 등에 관한 기록)"),
    "payment": ("5y", "전자상거래법 제6조, 시행령 제6조 (대금결제 및 재화 등의 공급에 관한 기록)"),
    "complaint": (
        "3y",
        "전자상거래법 제6조, 시행령 제6조 (소비자의 불만 또는 분쟁처리에 관한 기록)",
    ),
    "advertising": ("6mo", "전자상거래법 제6조, 시행령 제6조 (표시·광고에 관한 기록)"),
    "tax": ("5y", "국세기본법 제85조의3 (장부 및 증거서류의 보존)"),
    "access_log": (
        "3mo",
        "통신비밀보호법 제15조의2, 시행령 제41조 (로그기록자료, 접속지 추적자료)",
    ),
    "profile": ("0d", PIPA_DEFAULT_BASIS),
    "contact": ("0d", PIPA_DEFAULT_BASIS),
    "rrn": ("0d", PIPA_DEFAULT_BASIS),
    "guardian": ("0d", PIPA_DEFAULT_BASIS),
    "hobbies": ("0d", PIPA_DEFAULT_BASIS),
    "credentials": ("0d", PIPA_DEFAULT_BASIS),
    "service_usage": ("0d", PIPA_DEFAULT_BASIS),
    "uploads": ("0d", PIPA_DEFAULT_BASIS),
}

# The vocabulary of categories; an operator adds their own under `categories:`.
KNOWN_CATEGORIES: tuple[str, ...] = (*DEFAULT_RULES, "counselling")

PURPOSE_END_KINDS = ("withdrawal", "age", "dormancy")


class DataMapError(UserError):
    """The data map is wrong. ``str(exc)`` is ``FILE:LINE: message`` (one line)."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line else source
        super().__init__(f"data map {where}: {message}")


# -- periods -----------------------------------------------------------------------------------

_UNBOUNDED_WORDS = {
    "forever",
    "unlimited",
    "unbounded",
    "infinite",
    "infinity",
    "inf",
    "never",
    "permanent",
    "none",
    "null",
    "~",
    "영구",
}
_UNIT_RE = re.compile(r"(\d+)\s*(years?|y|months?|mo|m|weeks?|w|days?|d)", re.IGNORECASE)
_ISO_RE = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?", re.IGNORECASE)


@dataclass(frozen=True, order=False)
class Period:
    """A calendar period: years and months are calendar-aware, days are exact."""

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, value: object) -> Period:
        """``5y``, ``3y``, ``6m``/``6mo`` (months), ``2w``, ``30d``, ``1y6mo``, ``P5Y``, ``P3M``,
        ``0``/``0d`` (destroy now). Raises ValueError for anything unbounded or malformed."""
        if value is None:
            raise ValueError("no period")
        if isinstance(value, bool):
            raise ValueError(f"period {value!r} is not a period such as 5y, 6mo or 30d")
        if isinstance(value, int):
            if value == 0:
                return cls()
            if value < 0:
                raise ValueError(f"period {value} is negative (unbounded retention is refused)")
            raise ValueError(f"period {value} has no unit: write {value}y, {value}mo or {value}d")
        if not isinstance(value, str):
            raise ValueError(f"period {value!r} is not a period such as 5y, 6mo or 30d")
        text = value.strip()
        if text.lower() in _UNBOUNDED_WORDS or text.startswith("-"):
            raise ValueError(
                f"period {text!r} is unbounded: every rule needs a finite period (e.g. 5y, 6mo)"
            )
        if text == "0":
            return cls()
        iso = _ISO_RE.fullmatch(text)
        if iso and text.upper() != "P":
            y, m, w, d = (int(g) if g else 0 for g in iso.groups())
            return cls._checked(text, y, m, d + 7 * w)
        pos = 0
        y = m = d = 0
        for match in _UNIT_RE.finditer(text):
            if text[pos : match.start()].strip():
                break
            n, unit = int(match.group(1)), match.group(2).lower()
            if unit.startswith("y"):
                y += n
            elif unit.startswith("m"):  # m, mo, month(s): never minutes in a retention rule
                m += n
            elif unit.startswith("w"):
                d += 7 * n
            else:
                d += n
            pos = match.end()
        if pos == 0 or text[pos:].strip():
            raise ValueError(f"period {text!r} is not a period such as 5y, 3y, 6mo, 30d, P5Y or 0d")
        return cls._checked(text, y, m, d)

    @classmethod
    def _checked(cls, text: str, y: int, m: int, d: int) -> Period:
        p = cls(y, m, d)
        if p.approx_days > MAX_PERIOD_YEARS * 366:
            raise ValueError(
                f"period {text!r} is longer than {MAX_PERIOD_YEARS} years, i.e. unbounded"
            )
        return p

    @property
    def is_zero(self) -> bool:
        return self.years == 0 and self.months == 0 and self.days == 0

    @property
    def approx_days(self) -> float:
        """For ordering periods only (the longest rule wins); never for computing dates."""
        return self.years * 365.2425 + self.months * 30.436875 + self.days

    def add_to(self, when: datetime) -> datetime:
        total = when.month - 1 + self.months + 12 * self.years
        year, month = when.year + total // 12, total % 12 + 1
        # 31 Jan + 1 month = 28/29 Feb: clamp rather than spill into March.
        day = min(when.day, calendar.monthrange(year, month)[1])
        return when.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    def subtract_from(self, when: datetime) -> datetime:
        total = when.month - 1 - self.months - 12 * self.years
        year, month = when.year + total // 12, total % 12 + 1
        day = min(when.day, calendar.monthrange(year, month)[1])
        return when.replace(year=year, month=month, day=day) - timedelta(days=self.days)

    def __str__(self) -> str:
        if self.is_zero:
            return "0d"
        parts = []
        if self.years:
            parts.append(f"{self.years}y")
        if self.months:
            parts.append(f"{self.months}mo")
        if self.days:
            parts.append(f"{self.days}d")
        return "".join(parts)


# -- public model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    category: str
    period: Period
    legal_basis: str
    line: int | None = None
    default: bool = False  # True when it came from DEFAULT_RULES rather than the map

    @property
    def destroy_now(self) -> bool:
        return self.period.is_zero

    def retain_until(self, anchor: datetime) -> datetime:
        return self.period.add_to(anchor)


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
        anchor = _as_datetime(anchor)
        now = _as_datetime(now)
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


def _as_datetime(v: datetime | date) -> datetime:
    """SQLite hands back naive datetimes; the site stores UTC, so naive means UTC."""
    if not isinstance(v, datetime):
        v = datetime(v.year, v.month, v.day)
    return v if v.tzinfo is not None else v.replace(tzinfo=UTC)


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
        from sqlalchemy import MetaData

        md = MetaData()
        md.reflect(bind=engine, only=list(self.tables))
        return md

    # -- validation against the real schema ----------------------------------------------------

    def validate_against(self, engine: Any) -> None:
        """Check every table and column the map names exists in the real database, every
        column of a mapped table is accounted for, time columns are dates/times, and no
        unmapped table references a mapped one. Records the real foreign keys for
        :meth:`tables_in_dependency_order`."""
        from sqlalchemy import inspect
        from sqlalchemy import types as sqltypes

        insp = inspect(engine)
        existing = set(insp.get_table_names())
        cols: dict[str, dict[str, Any]] = {}
        for name in self.tables:
            if name not in existing:
                raise self.error(f"table {name!r} does not exist in the database", "tables", name)
            cols[name] = {c["name"]: c["type"] for c in insp.get_columns(name)}
        bad = non_transactional(engine, self.tables)
        if bad:
            raise self.error(refusal(bad), "tables", min(bad))

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
    from sqlalchemy import select

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


# -- loading -----------------------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _RuleSpec(_Spec):
    period: Any = None
    legal_basis: Any = None


class _ViaSpec(_Spec):
    table: str
    column: str
    parent_key: str | None = None


class _AgeSpec(_Spec):
    column: str
    after: Any = None


class _DormancySpec(_Spec):
    enabled: bool = False
    inactive_for: Any = "1y"
    last_active_column: str | None = None
    status_value: str = "dormant"
    advance_notice_days: int = Field(default=30, ge=0, le=365)


class _SubjectSpec(_Spec):
    table: str
    key: str = "id"
    status_column: str
    withdrawn_value: str = "withdrawn"
    withdrawn_at_column: str
    dormancy: _DormancySpec = Field(default_factory=_DormancySpec)


class _TableSpec(_Spec):
    key: str = "id"
    subject_column: str | None = None
    via: _ViaSpec | None = None
    columns: dict[str, list[str]] = Field(default_factory=dict)
    non_personal: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)
    purpose_end: list[str | dict[str, Any]] = Field(default_factory=lambda: ["withdrawal"])
    retain_from: str | None = None


class _MapSpec(_Spec):
    version: Literal[1] = 1
    subject: _SubjectSpec
    categories: list[str] = Field(default_factory=list)
    retention: dict[str, _RuleSpec | None] = Field(default_factory=dict)
    ignore_tables: list[str] = Field(default_factory=list)
    tables: dict[str, _TableSpec]


_constructor = SafeConstructor()


def _compose(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML keeping the line of every key and item (path tuple -> 1-based line)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise DataMapError(source, line, f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise DataMapError(source, None, f"not valid YAML: {exc}") from None
    marks: dict[tuple[Any, ...], int] = {}

    def build(node: yaml.Node, path: tuple[Any, ...]) -> Any:
        marks.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    raise DataMapError(source, knode.start_mark.line + 1, "keys must be plain")
                key = _constructor.construct_object(knode)
                if key in out:
                    raise DataMapError(source, knode.start_mark.line + 1, f"duplicate key {key!r}")
                marks[(*path, key)] = knode.start_mark.line + 1
                out[key] = build(vnode, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        return _constructor.construct_object(node)

    if root is None:
        raise DataMapError(source, None, "the file is empty")
    return build(root, ()), marks


def _pydantic_error(exc: ValidationError, source: str, marks: dict[tuple[Any, ...], int]) -> Any:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    line = None
    for n in range(len(loc), -1, -1):
        if loc[:n] in marks:
            line = marks[loc[:n]]
            break
    dotted = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "missing":
        parent = ".".join(str(p) for p in loc[:-1]) or "top level"
        msg = f"{parent}: missing required key {loc[-1]!r}"
    elif kind == "extra_forbidden":
        parent = ".".join(str(p) for p in loc[:-1]) or "top level"
        msg = f"{parent}: unknown key {loc[-1]!r}"
    else:
        msg = f"{dotted}: {err['msg'].removeprefix('Value error, ')}"
    return DataMapError(source, line, msg)


def parse_datamap(text: str, source: str = "<data map>") -> DataMap:
    """Validate a data map given as YAML text. ``source`` names it in error messages."""
    raw, marks = _compose(text, source)
    if not isinstance(raw, dict):
        raise DataMapError(source, 1, "the data map must be a mapping (subject:, tables:, ...)")
    try:
        spec = _MapSpec.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(exc, source, marks) from None
    return _build(spec, source, marks)


def _build(spec: _MapSpec, source: str, marks: dict[tuple[Any, ...], int]) -> DataMap:
    def err(message: str, *path: Any) -> DataMapError:
        for n in range(len(path), -1, -1):
            if path[:n] in marks:
                return DataMapError(source, marks[path[:n]], message)
        return DataMapError(source, None, message)

    def period(value: Any, *path: Any) -> Period:
        try:
            return Period.parse(value)
        except ValueError as exc:
            raise err(f"{'.'.join(map(str, path))}: {exc}", *path) from None

    custom = set()
    for i, c in enumerate(spec.categories):
        if c in KNOWN_CATEGORIES:
            raise err(
                f"category {c!r} is built in; do not declare it under categories:", "categories", i
            )
        if not re.fullmatch(r"[a-z][a-z0-9_]*", c):
            raise err(f"category name {c!r} must be lower_snake_case", "categories", i)
        custom.add(c)
    vocabulary = set(KNOWN_CATEGORIES) | custom

    rules: dict[str, Rule] = {}
    for cat, (p, basis) in DEFAULT_RULES.items():
        rules[cat] = Rule(cat, Period.parse(p), basis, None, default=True)
    for cat, rs in spec.retention.items():
        where = ("retention", cat)
        if cat not in vocabulary:
            raise err(
                f"unknown category {cat!r} in retention (known: {', '.join(sorted(vocabulary))}; "
                f"declare your own under categories:)",
                *where,
            )
        if rs is None or rs.period is None:
            raise err(
                f"retention rule {cat!r} has no period: give one such as 5y, 6mo, 30d or 0d "
                f"(destroy now); unbounded retention is refused",
                *where,
                "period",  # `period: null` points at its own line, a missing one at the rule
            )
        try:
            per = Period.parse(rs.period)
        except ValueError as exc:
            raise err(f"retention rule {cat!r}: {exc}", *where, "period") from None
        if not isinstance(rs.legal_basis, str) or not rs.legal_basis.strip():
            raise err(
                f"retention rule {cat!r} has no legal_basis (the law or internal policy that "
                f"sets its period)",
                *where,
            )
        rules[cat] = Rule(cat, per, rs.legal_basis.strip(), marks.get(where))

    s = spec.subject
    dormancy = Dormancy(
        enabled=s.dormancy.enabled,
        inactive_for=period(s.dormancy.inactive_for, "subject", "dormancy", "inactive_for"),
        last_active_column=s.dormancy.last_active_column,
        status_value=s.dormancy.status_value,
        advance_notice_days=s.dormancy.advance_notice_days,
    )
    if dormancy.enabled and not dormancy.last_active_column:
        raise err(
            "subject.dormancy is enabled but has no last_active_column", "subject", "dormancy"
        )
    if dormancy.enabled and dormancy.inactive_for.is_zero:
        raise err("subject.dormancy.inactive_for must be longer than 0", "subject", "dormancy")
    subject = Subject(
        table=s.table,
        key=s.key,
        status_column=s.status_column,
        withdrawn_value=s.withdrawn_value,
        withdrawn_at_column=s.withdrawn_at_column,
        dormancy=dormancy,
    )
    if s.table not in spec.tables:
        raise err(f"subject table {s.table!r} is not listed under tables:", "subject", "table")

    tables: dict[str, TableMap] = {}
    used: dict[str, tuple[Any, ...]] = {}
    for name, ts in spec.tables.items():
        base = ("tables", name)
        if ts.subject_column and ts.via:
            raise err(
                f"table {name!r} has both subject_column and via: give exactly one", *base, "via"
            )
        if not ts.subject_column and not ts.via:
            raise err(
                f"table {name!r} has no subject relation: give subject_column (the column "
                f"holding the member's {s.key}) or via: {{table, column}}",
                *base,
            )
        if name == s.table and ts.subject_column != s.key:
            raise err(
                f"subject table {name!r} must have subject_column: {s.key}",
                *base,
                "subject_column" if ts.subject_column else "via",
            )
        via = None
        if ts.via:
            if ts.via.table not in spec.tables:
                raise err(
                    f"table {name!r}: via table {ts.via.table!r} is not listed under tables:",
                    *base,
                    "via",
                    "table",
                )
            if ts.via.table == name:
                raise err(f"table {name!r}: via points at itself", *base, "via", "table")
            parent_key = ts.via.parent_key or spec.tables[ts.via.table].key
            via = Via(ts.via.table, ts.via.column, parent_key)
        columns: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for cat, cols in ts.columns.items():
            where = (*base, "columns", cat)
            if cat not in vocabulary:
                raise err(
                    f"unknown category {cat!r} on table {name!r} (known: "
                    f"{', '.join(sorted(vocabulary))}; declare your own under categories:)",
                    *where,
                )
            if cat not in rules:
                hint = (
                    " (counselling records need an operator-set period: internal policy, never "
                    "unbounded)"
                    if cat == "counselling"
                    else ""
                )
                raise err(
                    f"category {cat!r} has no retention rule: add retention.{cat} with a period "
                    f"and legal_basis{hint}",
                    *where,
                )
            if not cols:
                raise err(f"table {name!r} category {cat!r} lists no columns", *where)
            for i, c in enumerate(cols):
                if c in owner:
                    raise err(
                        f"column {name}.{c} is listed under both {owner[c]!r} and {cat!r}",
                        *where,
                        i,
                    )
                owner[c] = cat
            columns[cat] = tuple(cols)
            used.setdefault(cat, where)
        keys = {ts.key, ts.subject_column, ts.via.column if ts.via else None}
        for i, c in enumerate(ts.non_personal):
            if c in owner:
                raise err(
                    f"column {name}.{c} is listed under both {owner[c]!r} and non_personal",
                    *base,
                    "non_personal",
                    i,
                )
        for c in owner:
            if c in keys:
                raise err(
                    f"column {name}.{c} is a key/relation column and cannot hold a category",
                    *base,
                    "columns",
                    owner[c],
                )
        for i, c in enumerate(ts.files):
            if c not in owner:
                raise err(
                    f"file column {name}.{c} must also be listed under a category in columns:",
                    *base,
                    "files",
                    i,
                )
        purpose: list[PurposeEnd] = []
        for i, pe in enumerate(ts.purpose_end):
            where = (*base, "purpose_end", i)
            if isinstance(pe, str):
                if pe not in ("withdrawal", "dormancy"):
                    raise err(
                        f"unknown purpose end {pe!r} on table {name!r} (use withdrawal, "
                        f"dormancy or {{age: COLUMN}})",
                        *where,
                    )
                purpose.append(PurposeEnd(pe))  # type: ignore[arg-type]
                continue
            if list(pe) != ["age"]:
                bad = next((k for k in pe if k != "age"), next(iter(pe), ""))
                raise err(
                    f"unknown purpose end {bad!r} on table {name!r} (use withdrawal, dormancy "
                    f"or {{age: COLUMN}})",
                    *where,
                )
            age = pe["age"]
            try:
                age_spec = _AgeSpec(column=age) if isinstance(age, str) else _AgeSpec(**age)
            except (ValidationError, TypeError):
                raise err(
                    f"purpose end age on table {name!r} must be a column name or "
                    f"{{column: COLUMN, after: PERIOD}}",
                    *where,
                ) from None
            after = (
                period(age_spec.after, *where, "age", "after")
                if age_spec.after is not None
                else None
            )
            if after is None:
                longest = max(
                    (rules[c].period for c in columns), key=lambda p: p.approx_days, default=None
                )
                if longest is None or longest.is_zero:
                    raise err(
                        f"purpose end age on table {name!r} has no period: set after: or give "
                        f"the table a category with a retention period",
                        *where,
                    )
            elif after.is_zero:
                raise err(f"purpose end age on table {name!r}: after must be > 0", *where)
            purpose.append(PurposeEnd("age", age_spec.column, after))
        if not purpose:
            raise err(f"table {name!r} has an empty purpose_end", *base, "purpose_end")
        tables[name] = TableMap(
            name=name,
            key=ts.key,
            subject_column=ts.subject_column,
            via=via,
            columns=columns,
            non_personal=tuple(ts.non_personal),
            files=tuple(ts.files),
            purpose_end=tuple(purpose),
            retain_from=ts.retain_from,
            line=marks.get(base),
        )
    for cat in spec.retention:
        if cat in custom and cat not in used:
            raise err(f"category {cat!r} has a rule but no table uses it", "retention", cat)
    return DataMap(source, subject, rules, tables, tuple(spec.ignore_tables), marks)


def load_datamap(path: str | Path | None = None, engine: Any = None) -> DataMap:
    """Load and validate the data map: ``path``, else ``LIFECYCLE_DATA_MAP``, else the demo.

    With ``engine`` it is also checked against the real schema (:meth:`DataMap.validate_against`),
    which the engine must do before planning deletions so real foreign keys order them.
    """
    if path is None:
        from lifecycle.settings import get_settings

        path = get_settings().data_map or SHIPPED_DEMO_MAP
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataMapError(str(path), None, "file not found (check LIFECYCLE_DATA_MAP)") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise DataMapError(str(path), None, f"cannot read the file ({reason})") from None
    dm = parse_datamap(text, str(path))
    if engine is not None:
        dm.validate_against(engine)
    return dm


def describe(dm: DataMap) -> Iterable[str]:
    """Human-readable summary lines (table, categories, rule) for dry runs and docs."""
    for t in dm.tables_in_dependency_order():
        for cat in t.categories:
            r = t.retention_for(cat)
            yield f"{t.name}: {cat} -> {r.period} ({r.legal_basis})"
