"""The data map: which website tables and columns hold which personal data, and for how long.

The website's schema is not ours. An operator describes it in a YAML file (``LIFECYCLE_DATA_MAP``;
the demo counselling centre's map ships as ``lifecycle/datamap/maps/demo.yaml``). This module loads
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
relates to the member), or ``owner:`` (a meta row naming the member, a WooCommerce order's
``_customer_user``). :meth:`DataMap.member_expr` builds the SQL expression giving a row's
member id either way. A link column declared under ``text_ids`` (and an owner's value) holds
an integer id as text and is compared through a guarded cast (:mod:`lifecycle.datamap.links`).

*Withdrawal markers kept elsewhere.* ``subject.withdrawn`` may name a meta row of the member
(``wp_usermeta``) or ``lifecycle`` (the lifecycle's own ``lifecycle_withdrawals``):
:meth:`Subject.withdrawn_clause` and :meth:`Subject.withdrawn_at_col` read them as subqueries,
so every "is this member withdrawn, and when" reads the same marker.

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
access_log 3mo, everything else 0d = destroy without delay under PIPA 제21조①, within 5 days by
표준 개인정보 보호지침 제10조①); the map overrides them per category. ``counselling`` has no
default: the operator must set it, and no rule may be unbounded. What a period counts from (a
rule's ``from:``, :mod:`lifecycle.datamap.anchors`):
the purpose end; the record's own date (the table's ``retain_from`` column, e.g.
``payments.paid_at``: 5 years from the payment); or the tax filing deadline of the record's
date (국세기본법 제85조의3, per the map's ``business:``). A rule without ``from:`` counts from
the record's date on a table naming ``retain_from``, else from the purpose end; a NULL date
falls back to the purpose end. A table marked ``tax_evidence`` keeps each retained category
at least as long as the ``tax`` rule would keep the row. A consent-based rule (``consent:``)
keeps its category only for a member whose consent column is recorded; otherwise the
category is destroyed at the purpose end like a 0d one (:mod:`lifecycle.datamap.statutes`).

*Independent of withdrawal.* A table whose retained categories count from the record's date
(or its tax deadline) ends by age too: once every such category's period is over, the row's
purpose has ended, for an active member as for anyone (the sweep's age phase takes it). Until
then an active member's row stays live: the service still uses it. An explicit
``{age: ...}`` purpose end takes precedence over this implicit one.

*A child takes its parent's date.* A table reaching one parent through ``via`` (or a pattern
parent, through ``via`` with ``match``) with no date of its own (no ``retain_from``, no
explicit ``age``) counts its periods from the parent row's record date
(:attr:`TableMap.inherits_from`) and ends by age with that row: the sweep's age
batch of the parent takes its children in the same move, and they never keep it waiting.

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

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from sqlalchemy import MetaData, and_, case, func, inspect, literal, null, select, update
from sqlalchemy import types as sqltypes

from lifecycle.core.errors import UserError
from lifecycle.core.storage_engines import non_transactional, refusal
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.anchors import (
    PURPOSE_END,
    RECORD,
    TAX_DEADLINE,
    TaxProfile,
    tax_cutoff,
    tax_retain_until,
)
from lifecycle.datamap.consents import CONSENT_TABLE, ConsentPurpose
from lifecycle.datamap.consents import consented as consented
from lifecycle.datamap.entries import Where, scoped, where_clause
from lifecycle.datamap.identifiers import FlaggedCategory
from lifecycle.datamap.json_links import json_column_problem, json_member
from lifecycle.datamap.links import (
    LIFECYCLE_TABLE,
    UNIX,
    MetaMarker,
    Owner,
    coerce,
    is_int,
    is_text,
    link_eq,
    marker_at,
    marker_time,
    marker_withdrawn,
    record_marker,
    to_datetime,
)
from lifecycle.datamap.periods import Period, Rule
from lifecycle.datamap.withdrawn_rule import withdrawn as withdrawn


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
    """``column`` of the table references ``parent_key`` of mapped table ``table``.

    With ``match`` the parent is one of the tables a pattern expands to (``g5_write_*``): the
    row's ``match`` column names which (``bo_table = 'free'`` -> ``g5_write_free``);
    ``tables`` maps each such value to its table once the pattern is expanded.
    """

    table: str
    column: str
    parent_key: str
    match: str | None = None
    tables: tuple[tuple[str, str], ...] = ()
    # ``many: true``: ``parent_key`` is not unique; the row is the member's whom every parent
    # row naming its value belongs to, and nobody's when they name several or none.
    many: bool = False


@dataclass(frozen=True)
class MemberLink:
    """One column of a table that holds a member: the value of the subject table's
    ``member_key`` column (the key itself, or e.g. the login id ``mb_id``). In a table with
    several links, ``blank`` lists the columns cleared together with the link when that member
    leaves and another linked member stays (e.g. the sender's IP on a memo)."""

    column: str
    member_key: str
    blank: tuple[str, ...] = ()
    # ``also_names:`` only: cleared columns written with a declared value instead of blanked
    # (a NOT NULL integer link with no default, set to 0).
    values: tuple[tuple[str, Any], ...] = ()
    # ``also_names:`` only: the column lists several members, separated by this (a poll's
    # voters, ``kim01,lee_mh7,``); a leaver's entries are removed, the others kept
    # (lifecycle/datamap/member_lists.py).
    separator: str | None = None
    # ``also_names`` ``on_leave: delete``: the row goes when the member it names leaves (a
    # friend-list entry naming them is nothing without them).
    deletes: bool = False
    # ``link: {json: COLUMN, path: PATH}``: the member id is read at PATH inside the JSON text
    # of ``column`` (lifecycle.datamap.json_links), never written.
    json_path: str | None = None
    # ``also_names`` ``format:``: the column holds the member's id inside fixed text, this
    # template with its one ``{}`` standing for the id (Gnuboard5's recommender point row,
    # ``"{} 추천"``); rows whose column equals the template applied to a leaver are matched.
    template: str | None = None

    def expr(self, t: Any) -> Any:
        """The link's value in rows of ``t``: the column, or the id read from its JSON."""
        if self.json_path is not None:
            return json_member(t.c[self.column], self.json_path)
        return t.c[self.column]

    @property
    def cleared(self) -> tuple[str, ...]:
        """The columns cleared when this member leaves: the link, then ``blank``."""
        return (self.column, *self.blank)

    def _around(self) -> tuple[str, str]:
        """The template's text before and after its ``{}`` (the loader checked there is one)."""
        head, tail = (self.template or "{}").split("{}")
        return head, tail

    def spelled(self, value: Any) -> Any:
        """What the column holds for a member whose ``member_key`` is ``value``."""
        if self.template is None:
            return value
        head, tail = self._around()
        return f"{head}{value}{tail}"

    def spelled_sql(self, key: Any) -> Any:
        """SQL: :meth:`spelled` of the expression ``key``."""
        if self.template is None:
            return key
        head, tail = self._around()
        return func.concat(head, key, tail)

    def named_id(self, col: Any) -> Any:
        """SQL: the member id text inside ``col`` (NULL when it is not spelled by the
        template); the column itself for a plain link."""
        if self.template is None:
            return col
        head, tail = self._around()
        n = len(head) + len(tail)
        # Never a negative length (PostgreSQL refuses one; SQL does not promise the order in
        # which the conditions below are tested).
        inner = func.substr(col, len(head) + 1, func.greatest(func.char_length(col) - n, 0))
        # Compared back with the whole template: a value merely as long is no match.
        ok = and_(func.char_length(col) > n, self.spelled_sql(inner) == col)
        return case((ok, inner), else_=null())


@dataclass(frozen=True)
class Orphans:
    """A table's ``orphans:`` option: whether its link values naming no member are orphans
    (rows the site left when it deleted the member row itself), and which values name no
    member by design (guests, anonymous posts) so they never are. NULL, ``''`` and ``0`` never
    count; ``guests`` adds values, ``guests_below`` every value under it (``0``: negatives)."""

    enabled: bool = True
    guests: tuple[Any, ...] = ()
    guests_below: int | None = None


_FIELD_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\[:(\d+)\])?\}")


@dataclass(frozen=True)
class FileTemplate:
    """A file path built from a row: ``data/file/{bo_table}/{bf_file}``, ``{mb_id[:2]}`` takes
    the first two characters. Relative results resolve against the site's install directory."""

    template: str
    category: str

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        # Cached: the sweep parses every destroyed path of a batch against every template.
        return tuple(dict.fromkeys(m.group(1) for m in _FIELD_RE.finditer(self.template)))

    def render(self, values: Mapping[str, Any]) -> str | None:
        """The path, or None when a field it needs is empty (no file for this row)."""
        missing = False

        def sub(m: re.Match[str]) -> str:
            nonlocal missing
            v = values.get(m.group(1))
            if v is None or v == "":
                missing = True
                return ""
            text = str(v)
            return text[: int(m.group(2))] if m.group(2) else text

        out = _FIELD_RE.sub(sub, self.template)
        return None if missing else out

    def parse(self, path: str) -> dict[str, str] | None:
        """The field values a rendered ``path`` was made from, or None if it does not fit.

        A sliced field (``{mb_id[:2]}``) only checks its prefix against the whole field; a
        template whose field appears only sliced cannot be parsed back (None).
        """
        pattern, slices, complete = _template_pattern(self.template)
        hit = pattern.fullmatch(path)
        if hit is None or not complete:
            return None
        values = {f: hit.group(f) for f in self.fields}
        if any(not values[name].startswith(hit.group(g)) for g, name in slices):
            return None
        return values


@functools.lru_cache(maxsize=256)
def _template_pattern(template: str) -> tuple[re.Pattern[str], tuple[tuple[str, str], ...], bool]:
    """The regular expression parsing paths of ``template`` back, its sliced groups (group,
    field), and whether every field appears whole. Built once per template: the sweep parses
    every destroyed file path against every template (thousands a batch)."""
    out: list[str] = []
    pos = 0
    slices: list[tuple[str, str]] = []
    seen: set[str] = set()
    names: list[str] = []
    for m in _FIELD_RE.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name, width = m.group(1), m.group(2)
        names.append(name)
        if width:
            group = f"s{len(slices)}"
            slices.append((group, name))
            out.append(f"(?P<{group}>[^/]{{1,{int(width)}}})")
        elif name in seen:
            out.append(f"(?P={name})")
        else:
            out.append(f"(?P<{name}>[^/]+)")
            seen.add(name)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out)), tuple(slices), seen >= set(names)


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
    """The members' table. ``key`` is an integer column (the lifecycle's member id in every
    request, restriction and notice); ``login_column`` is the site's own member id (e.g.
    ``mb_id``), which ``lifecycle withdraw`` accepts. Withdrawal is either ``status_column ==
    withdrawn_value`` with ``withdrawn_at_column``, or a non-empty ``marker_column`` holding
    the day as text in ``marker_format`` (``mb_leave_date``, ``%Y%m%d``). With ``keep_row`` a
    withdrawn member's row stays, every personal column blanked, so the login id stays
    reserved."""

    table: str
    key: str
    status_column: str | None
    withdrawn_value: str
    withdrawn_at_column: str | None
    dormancy: Dormancy
    login_column: str | None = None
    marker_column: str | None = None
    marker_format: str = "%Y%m%d"
    keep_row: bool = False
    email_column: str | None = None
    mobile_column: str | None = None
    # A withdrawal kept outside the members' table (lifecycle.datamap.links): a meta row of
    # the member, or "lifecycle" (the lifecycle's own lifecycle_withdrawals table).
    marker_store: MetaMarker | str | None = None

    @property
    def login_is_contact(self) -> bool:
        """The login is the member's email (or mobile) column itself (OpenCart, WooCommerce):
        it holds a category and a correction may change it (lifecycle.datamap.logins)."""
        return self.login_column is not None and self.login_column in (
            self.email_column,
            self.mobile_column,
        )

    def withdrawn_clause(self, t: Any) -> Any:
        if self.marker_store is not None:
            return marker_withdrawn(self.marker_store, t.c[self.key])
        if self.marker_column:
            c = t.c[self.marker_column]
            return and_(c.is_not(None), c != "")
        return t.c[self.status_column] == self.withdrawn_value

    def withdrawn_at_col(self, t: Any) -> Any:
        if self.marker_store is not None:
            return marker_at(self.marker_store, t.c[self.key])
        return t.c[self.marker_column or self.withdrawn_at_column]

    def state_expr(self, t: Any) -> Any:
        """What :meth:`is_withdrawn` reads: the status or marker column, or (a marker kept
        elsewhere) :meth:`withdrawn_at_col`."""
        if self.marker_store is not None:
            return self.withdrawn_at_col(t)
        return t.c[self.state_column]

    def is_withdrawn(self, status_or_marker: Any) -> bool:
        """From the value of :meth:`state_expr` (a marker's value, or the status column)."""
        marker = bool(self.marker_column) or self.marker_store is not None
        return withdrawn(status_or_marker, self.withdrawn_value, marker=marker)

    @property
    def state_column(self) -> str:
        """The column saying whether a member withdrew (status, or the marker); a marker kept
        elsewhere has none (see :meth:`state_expr`)."""
        return self.marker_column or self.status_column  # type: ignore[return-value]

    def withdrawn_at(self, value: Any) -> datetime | None:
        """When the member withdrew, from :meth:`withdrawn_at_col`'s value (None: unknown)."""
        if value is None or value == "":
            return None
        if self.marker_store is not None:
            return marker_time(self.marker_store, value)
        if self.marker_column:
            try:
                return as_utc(datetime.strptime(str(value).strip(), self.marker_format))
            except ValueError:
                return None  # a marker the site wrote in another form: withdrawn, time unknown
        return as_utc(value)

    def record_withdrawal(self, conn: Any, t: Any, member_id: int, when: datetime) -> None:
        """Mark ``member_id`` withdrawn at ``when`` wherever the map keeps it: the members'
        row ``t`` (a status or marker column), a meta row, or ``lifecycle_withdrawals``."""
        if self.marker_store is not None:
            record_marker(conn, self.marker_store, member_id, when)
            return
        conn.execute(update(t).where(t.c[self.key] == member_id).values(self.withdraw_values(when)))

    def withdraw_values(self, when: datetime) -> dict[str, Any]:
        """The site's own way of recording that the member withdrew at ``when``, in the
        members' row (empty for a marker kept elsewhere: see ``links.record_marker``)."""
        if self.marker_store is not None:
            return {}
        if self.marker_column:
            return {self.marker_column: when.strftime(self.marker_format)}
        # The loader requires both columns of a subject without a marker.
        assert self.status_column is not None and self.withdrawn_at_column is not None
        return {self.status_column: self.withdrawn_value, self.withdrawn_at_column: when}


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
    key: str  # the first key column (the only one unless ``keys`` is composite)
    subject_column: str | None
    via: Via | None
    columns: dict[str, tuple[str, ...]]  # category -> columns, in map order
    non_personal: tuple[str, ...]
    files: tuple[str, ...]
    purpose_end: tuple[PurposeEnd, ...]
    retain_from: str | None
    line: int | None
    _map: DataMap = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    keys: tuple[str, ...] = ()  # every key column (bo_table, wr_id, bf_no)
    # The member columns: one for ``subject_column`` (holding the subject's ``member_key``),
    # several for ``members:`` (a memo's sender and recipient); empty for via / age-only.
    links: tuple[MemberLink, ...] = ()
    # ``also_names:``: columns naming a second member in rows another member owns (a
    # notification's sender). They never select a row to take; when that member leaves, the
    # link and its ``blank`` columns are cleared and the row stays for its owner.
    also_names: tuple[MemberLink, ...] = ()
    file_templates: tuple[FileTemplate, ...] = ()
    optional: bool = False  # a module the site may not have installed (the shop)
    pattern: str | None = None  # the map's ``g5_write_*`` this table was expanded from
    # Its rows are tax evidence: every retained category is kept at least as long as the
    # ``tax`` rule keeps a record of that date (payments that a tax return relies on).
    tax_evidence: bool = False
    # (kind, column): columns holding the identity of the row's own member (an order's email),
    # which the linkage check compares with the member the row is linked to.
    identities: tuple[tuple[str, str], ...] = ()
    # The physical table (``table:``; the entry's name by default) and the condition on its
    # discriminator columns selecting this entry's rows (``where:``; empty: every row). See
    # lifecycle.datamap.entries.
    table: str = ""
    where: Where = ()
    # (kind, column): the member's own current email/mobile held in this entry's rows,
    # written by a correction of the member's contact (lifecycle.rights.contact_rows).
    contact: tuple[tuple[str, str], ...] = ()
    # The row's member named in a meta row (a WooCommerce order's _customer_user).
    owner: Owner | None = None
    # (column, format) of date columns holding Unix seconds or strftime text.
    date_formats: tuple[tuple[str, str], ...] = ()
    # Link columns declared to hold an integer id as text (compared through a guarded cast).
    text_ids: tuple[str, ...] = ()

    def date_format(self, column: str | None) -> str | None:
        """``unix`` or a strftime format for a date column held so, else None."""
        return dict(self.date_formats).get(column) if column else None

    def as_date(self, column: str | None, value: Any) -> datetime | None:
        """A stored value of date column ``column`` as a datetime (None: no date)."""
        return to_datetime(value, self.date_format(column))

    # Kinds of ``identities`` by which rows with no member link are found as a member's
    # (``match_identities:``, lifecycle/datamap/guest_rows.py).
    match_identities: tuple[str, ...] = ()
    # Identity columns holding a list (a mail log's recipients, one ``Name <addr>`` a line):
    # a row is matched by any identity in the list, not by its whole value.
    identity_lists: tuple[str, ...] = ()
    orphans: Orphans = field(default_factory=Orphans)

    def __post_init__(self) -> None:
        if not self.keys and self.key:
            self.keys = (self.key,)
        if not self.table:
            self.table = self.name

    def scope(self, t: Any) -> Any:
        """The SQL condition selecting this entry's rows of ``t`` (None: every row)."""
        return where_clause(self.where, t)

    def scoped(self, t: Any, cond: Any) -> Any:
        """``cond`` narrowed to this entry's rows of ``t``."""
        return scoped(self.where, t, cond)

    @property
    def composite(self) -> bool:
        return len(self.keys) > 1

    @property
    def member_key(self) -> str | None:
        """The subject-table column a single member link holds (None: not a direct link)."""
        return self.links[0].member_key if len(self.links) == 1 else None

    @property
    def direct_by_key(self) -> bool:
        """Rows hold the member's integer key itself in one column."""
        return (
            self.subject_column is not None
            and len(self.links) == 1
            and self.links[0].member_key == self._map.subject.key
        )

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
        out = list(self.keys)
        rel = [
            self.subject_column,
            *(lk.column for lk in self.links if lk.json_path is None),
            # An id inside text (also_names format:) is the row's data, not what finds it.
            *(lk.column for lk in self.also_names if lk.template is None),
            self.via.column if self.via else None,
            self.via.match if self.via else None,
            *(c for c, _v in self.where),  # the kind of row (post_type), not its data
        ]
        for c in rel:
            if c and c not in out:
                out.append(c)
        return out

    @property
    def blank_columns(self) -> tuple[str, ...]:
        """Columns cleared with a link (several-member tables), all links included."""
        out: dict[str, None] = {}
        for lk in (*self.links, *self.also_names):
            if lk.separator is not None:
                continue  # a list is never blanked, only a leaver's entries leave it
            out[lk.column] = None
            out.update(dict.fromkeys(lk.blank))
        return tuple(out)

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

    # -- anchors: what each category's period counts from -------------------------------------

    def anchor_of(self, category: str) -> str:
        """``purpose_end``, ``record`` or ``tax_filing_deadline`` for this table's category."""
        rule = self._map.rule(category)
        if rule.anchor:
            return rule.anchor
        return RECORD if self.record_source else PURPOSE_END

    @property
    def inherits_from(self) -> TableMap | None:
        """The parent whose record date this table's rows take, or None.

        A table reaching one parent through ``via`` with no date of its own (no
        ``retain_from``, no explicit ``age``) is part of its parent's record (an order's lines
        and addresses): its periods count from the parent row's date, and it ends by age with
        the parent row, in the same move."""
        parents = self.inherited_parents
        return parents[0][1] if parents else None

    @property
    def inherited_parents(self) -> list[tuple[str | None, TableMap]]:
        """``(match value, parent)`` of every table whose rows this table's rows take their
        record date from (:attr:`inherits_from`): one parent, or with ``via.match`` each table
        the pattern expanded to (``bo_table = 'free'`` -> ``g5_write_free``), which share
        their map entry and so their record date."""
        via = self.via
        if self.retain_from or self.age is not None or via is None or via.many:
            return []
        if via.match is None:
            named: list[tuple[str | None, str]] = [(None, via.table)]
        elif via.tables:
            named = [(v, tn) for v, tn in via.tables]
        else:
            named = [(None, via.table)]  # before the pattern is expanded: its own entry
        out = [(v, self._map.tables[tn]) for v, tn in named if tn in self._map.tables]
        return [(v, p) for v, p in out if p.record_source is not None]

    @property
    def record_source(self) -> tuple[str, str] | None:
        """``(table, column)`` holding this table's record date: its own ``retain_from``, or
        the one it inherits (see :attr:`inherits_from`); None: it has none."""
        if self.retain_from:
            return self.name, self.retain_from
        parent = self.inherits_from
        return parent.record_source if parent is not None else None

    @property
    def age_root(self) -> TableMap | None:
        """The ancestor whose age batches take this inheriting table's rows (None: not
        inheriting)."""
        parent = self.inherits_from
        if parent is None:
            return None
        return parent.age_root or parent

    def until_of(self, category: str, ended: datetime, record: datetime | None) -> datetime:
        """Until when a row keeps ``category``: ``ended`` is its purpose end, ``record`` its
        record date (its ``retain_from`` value, or its parent's for a table inheriting it;
        NULL: the purpose end stands in for it)."""
        rule = self._map.rule(category)
        ended = as_utc(ended)
        date_ = as_utc(record) if record is not None else ended
        anchor = self.anchor_of(category)
        if anchor == TAX_DEADLINE:
            until = tax_retain_until(date_, rule.period, self._map.business)
        elif anchor == RECORD:
            until = rule.period.add_to(date_)
        else:
            until = rule.period.add_to(ended)
        if self.tax_evidence and not rule.period.is_zero:
            tax = self._map.rule("tax")
            until = max(until, tax_retain_until(date_, tax.period, self._map.business))
        return until

    @property
    def record_anchored(self) -> list[str]:
        """Retained categories whose period runs from the row's own date (or its tax deadline):
        they end the row by age, whether or not its member is still with the site."""
        if not self.record_source:
            return []
        return [
            c
            for c in self.columns
            if not self._map.rule(c).period.is_zero and self.anchor_of(c) != PURPOSE_END
        ]

    @property
    def age_column(self) -> str | None:
        """The column rows expire by (an explicit age rule, else the record's date when some
        category counts from it); None: rows end only with their member."""
        if self.age is not None:
            return self.age[0]
        if self.inherits_from is not None:
            return None  # its rows go with their parent's (see inherits_from)
        return self.retain_from if self.record_anchored else None

    @property
    def expires_by_age(self) -> bool:
        return self.age_column is not None

    def age_cutoff(self, now: datetime) -> datetime:
        """Rows whose :attr:`age_column` is before this have reached their purpose end."""
        if self.age is not None:
            return self.age[1].subtract_from(now)
        cuts = []
        biz = self._map.business
        for cat in self.record_anchored:
            rule = self._map.rule(cat)
            if self.anchor_of(cat) == TAX_DEADLINE:
                cuts.append(tax_cutoff(now, rule.period, biz))
            else:
                cuts.append(rule.period.subtract_from(as_utc(now)))
            if self.tax_evidence:
                cuts.append(tax_cutoff(now, self._map.rule("tax").period, biz))
        return min(cuts)

    def age_ended_at(self, value: Any) -> datetime:
        """When the purpose of a row whose :attr:`age_column` holds ``value`` ended (a
        datetime, or Unix seconds / text in the column's ``format``)."""
        at = self.as_date(self.age_column, value)
        assert at is not None  # the age selection takes only rows holding a date
        if self.age is not None:
            return self.age[1].add_to(as_utc(at))
        return max(self.until_of(c, at, at) for c in self.record_anchored)

    @property
    def consent_columns(self) -> dict[str, str]:
        """category -> the subject-table column recording the consent it is kept under."""
        out = {}
        for cat in self.columns:
            col = self._map.rule(cat).consent
            if col:
                out[cat] = col
        return out

    def plan_row(
        self,
        purpose_ended_at: datetime,
        now: datetime,
        retain_from_value: datetime | None = None,
        consent: Mapping[str, Any] | None = None,
    ) -> RowPlan:
        """Decide one row's fate. ``retain_from_value`` is the row's ``retain_from`` column (if
        the table has one; NULL there falls back to the purpose end); ``consent`` the member's
        consent columns (a consent-based category without consent is destroyed)."""
        now = as_utc(now)
        retain_from_value = self.as_date(self.retain_from, retain_from_value)
        parts: list[ArchivePart] = []
        destroyed: list[str] = []
        carried = tuple(self.carried_columns)
        consent = consent or {}
        for cat, cols in self.columns.items():
            rule = self._map.rule(cat)
            if rule.consent and not consented(consent.get(rule.consent)):
                destroyed.append(cat)
                continue
            until = self.until_of(cat, purpose_ended_at, retain_from_value)
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
        site_root: str | None = None,
        notes: tuple[str, ...] = (),
        identifiers: Mapping[str, FlaggedCategory] | None = None,
        business: TaxProfile | None = None,
        operator: frozenset[str] = frozenset(),
        ignore_rows: Mapping[str, tuple[Where, ...]] | None = None,
        consents: Mapping[str, ConsentPurpose] | None = None,
        sensitive: frozenset[str] = frozenset(),
        handled_elsewhere: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        self.subject = subject
        self.rules = rules
        self.tables = tables
        self.ignore_tables = ignore_tables
        # table (or pattern) -> the operator's reason it is handled outside the lifecycle
        # (``handled_elsewhere:``): people other than members, such as the staff.
        self.handled_elsewhere: dict[str, str] = dict(handled_elsewhere or {})
        # physical table -> conditions of rows no entry maps, on purpose (``ignore_rows:``).
        self.ignore_rows: dict[str, tuple[Where, ...]] = dict(ignore_rows or {})
        self._marks = marks
        self.site_root = site_root
        # What expanding against a live database found worth saying (missing optional tables).
        self.notes = notes
        # Categories holding unique identifiers (고유식별정보), see lifecycle.datamap.identifiers.
        self.identifiers: dict[str, FlaggedCategory] = dict(identifiers or {})
        self.business = business or TaxProfile()
        self.operator = operator  # what the operator is (medical_institution), for statutes
        # The purposes the site asks consent for, and the sensitive categories (민감정보):
        # lifecycle.datamap.consents.
        self.consents: dict[str, ConsentPurpose] = dict(consents or {})
        self.sensitive = sensitive
        # Real foreign keys between mapped tables: (child, child columns, parent, parent cols).
        self.foreign_keys: list[tuple[str, tuple[str, ...], str, tuple[str, ...]]] = []
        # child -> parents it must be deleted before; reflection adds real foreign keys.
        self._edges: dict[str, set[str]] = {name: set() for name in tables}
        for t in tables.values():
            t._map = self
            if t.via and t.via.tables:
                self._edges[t.name].update(tn for _v, tn in t.via.tables)
            elif t.via:
                self._edges[t.name].add(t.via.table)
            elif t.name != subject.table:
                self._edges[t.name].add(subject.table)
        self.tables_in_dependency_order()  # raises on a cycle in the declared relations

    @property
    def patterns(self) -> list[str]:
        return [n for n in self.tables if "*" in n]

    def expand(self, live_tables: Iterable[str]) -> DataMap:
        """This map with every pattern (``g5_write_*``) replaced by the live tables it matches
        and optional tables the site lacks left out (named in :attr:`notes`).

        Run at every use against the live database, so a board added after the map was
        written is covered. Tables named explicitly are never claimed by a pattern.
        """
        live = set(live_tables)
        explicit = {n for n in self.tables if "*" not in n}
        tables: dict[str, TableMap] = {}
        notes: list[str] = []
        for name, tm in self.tables.items():
            if "*" in name:
                hits = sorted(n for n in live if fnmatchcase(n, name) and n not in explicit)
                for h in hits:
                    tables[h] = replace(tm, name=h, table=h, pattern=name)
                if not hits:
                    notes.append(f"{self._where('tables', name)}: pattern {name} matches no table")
            elif tm.table not in live and tm.optional:
                notes.append(
                    f"{self._where('tables', name)}: optional table {name} is not in the "
                    "database (module not installed); skipped"
                )
            else:
                tables[name] = replace(tm)
        for name, tm in list(tables.items()):
            via = tm.via
            if via is None:
                continue
            if "*" in via.table:
                head, _star, tail = via.table.partition("*")
                opts = tuple(
                    (tn[len(head) : len(tn) - len(tail)], tn)
                    for tn, t in tables.items()
                    if t.pattern == via.table
                )
                tables[name] = replace(tm, via=replace(via, tables=opts))
            elif via.table not in tables:
                del tables[name]
                notes.append(
                    f"{self._where('tables', tm.pattern or name)}: table {name} skipped: its "
                    f"parent {via.table} is not in the database"
                )
        out = DataMap(self.source, self.subject, self.rules, tables, self.ignore_tables,
                      self._marks, self.site_root, tuple(notes), identifiers=self.identifiers,
                      business=self.business, operator=self.operator,
                      ignore_rows=self.ignore_rows, consents=self.consents,
                      sensitive=self.sensitive,
                      handled_elsewhere=self.handled_elsewhere)  # fmt: skip
        return out

    def handled_elsewhere_reason(self, table: str) -> str | None:
        """The operator's reason ``table`` is handled outside the lifecycle, or None."""
        for name, reason in self.handled_elsewhere.items():
            if fnmatchcase(table, name):
                return reason
        return None

    def _where(self, *path: Any) -> str:
        line = self.line_of(*path)
        return f"{self.source}:{line}" if line else self.source

    # -- lookups -------------------------------------------------------------------------------

    def table(self, name: str) -> TableMap:
        return self.tables[name]

    def physical(self, name: str) -> str:
        """The database table of entry ``name`` (a name no entry has: itself)."""
        tm = self.tables.get(name)
        return tm.table if tm is not None else name

    @property
    def physical_tables(self) -> list[str]:
        """Every database table some entry maps, once each, in map order."""
        return list(dict.fromkeys(t.table for t in self.tables.values()))

    def entries_on(self, table: str) -> list[TableMap]:
        """The entries mapping rows of database table ``table``."""
        return [t for t in self.tables.values() if t.table == table]

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

    def resolve_path(self, path: str) -> str:
        """A file path from the site: relative ones are under the site's install directory."""
        if path.startswith("/") or not self.site_root:
            return path
        return self.site_root.rstrip("/") + "/" + path

    def file_columns(self) -> list[tuple[str, str]]:
        """``(table, column)`` of every column holding a managed file's path."""
        return [(t.name, c) for t in self.tables.values() for c in t.files]

    def line_of(self, *path: Any) -> int | None:
        """The map's line for a key path, e.g. ``line_of("tables", "payments")``."""
        if len(path) >= 2 and path[0] == "tables" and path[1] in self.tables:
            pattern = self.tables[path[1]].pattern
            if pattern:
                path = ("tables", pattern, *path[2:])
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

        A link holding the subject key: the column itself. A link holding another subject
        column (the login id ``mb_id``): the key of the member row with that value. Via: the
        member of the parent row whose ``parent_key`` equals this row's ``column`` (a scalar
        subquery per hop; with ``match`` a CASE over the boards). Several links: the first
        that names a member. No relation (rows ending by age only): NULL.
        """
        return self._member_of(self.tables[table], metadata.tables[self.physical(table)], metadata)

    def link_expr(self, link: MemberLink, col: Any, metadata: Any) -> Any:
        s = self.subject
        st = metadata.tables[s.table]
        col = link.named_id(col)
        if link.member_key == s.key:
            return coerce(col, st.c[s.key].type)
        st = st.alias()
        return select(st.c[s.key]).where(link_eq(st.c[link.member_key], col)).scalar_subquery()

    def owner_expr(self, tm: TableMap, t: Any, metadata: Any) -> Any:
        """The member a meta row names as the owner of each row of ``tm`` (NULL: none, a
        guest). MIN: a row with two such meta rows still yields one member."""
        o = tm.owner
        assert o is not None
        s = self.subject
        m = metadata.tables[o.table].alias()
        st = metadata.tables[s.table].alias()
        value = m.c[o.value]
        mine = and_(link_eq(m.c[o.column], t.c[o.row_key]), o.rows(m))
        if o.member_key == s.key:
            return select(func.min(coerce(value, st.c[s.key].type))).where(mine).scalar_subquery()
        return (
            select(func.min(st.c[s.key]))
            .where(mine, link_eq(st.c[o.member_key], value))
            .scalar_subquery()
        )

    def _member_of(self, tm: TableMap, t: Any, metadata: Any) -> Any:
        if tm.name == self.subject.table:
            return t.c[self.subject.key]
        if tm.links:
            exprs = [self.link_expr(lk, lk.expr(t), metadata) for lk in tm.links]
            if len(exprs) == 1:
                return exprs[0]
            return case(*((e.is_not(None), e) for e in exprs), else_=null())
        if tm.owner is not None:
            return self.owner_expr(tm, t, metadata)
        if tm.via is None:
            return null()
        via = tm.via

        def through(parent_name: str) -> Any:
            ptm = self.tables[parent_name]
            parent = metadata.tables[ptm.table].alias()
            inner = self._member_of(ptm, parent, metadata)
            hit = ptm.scoped(parent, link_eq(parent.c[via.parent_key], t.c[via.column]))
            if via.many:
                # One member only: every parent row naming the value names that member.
                one = and_(func.min(inner) == func.max(inner), func.count() == func.count(inner))
                return (
                    select(case((one, func.min(inner)), else_=null())).where(hit).scalar_subquery()
                )
            return select(inner).where(hit).scalar_subquery()

        if via.match is None:
            return through(via.table)
        if not via.tables:
            return null()
        return case(
            *((t.c[via.match] == literal(value), through(tn)) for value, tn in via.tables),
            else_=null(),
        )

    def reflect(self, engine: Any) -> Any:
        """A MetaData holding the mapped tables, reflected from the real database."""

        md = MetaData()
        live = set(inspect(engine).get_table_names())
        physical = self.physical_tables
        extra = [n for n in self.side_tables if n in live and n not in physical]
        md.reflect(bind=engine, only=[*physical, *extra])
        return md

    @property
    def side_tables(self) -> list[str]:
        """Tables the map reads without mapping them: owners' and markers' meta tables."""
        out = [t.owner.table for t in self.tables.values() if t.owner is not None]
        if isinstance(self.subject.marker_store, MetaMarker):
            out.append(self.subject.marker_store.table)
        return list(dict.fromkeys(out))

    # -- validation against the real schema ----------------------------------------------------

    def validate_against(self, engine: Any, collect: list[DataMapError] | None = None) -> None:
        """Check the map against the real database: every table and column it names exists,
        every column of a mapped table is accounted for, time columns are dates/times, keys are
        unique (a primary key or unique index), link columns have the type of what they point
        at, and no unmapped table references a mapped one or holds a member-like column.
        Records the real foreign keys for :meth:`tables_in_dependency_order`.

        Raises the first problem, or with ``collect`` appends every problem to it. Call it on
        an :meth:`expand`-ed map (patterns resolved).
        """

        problems: list[DataMapError] = []

        def fail(message: str, *path: Any) -> None:
            problems.append(self.error(message, *path))

        insp = inspect(engine)
        existing = set(insp.get_table_names())
        # Keyed by entry: several entries may share one database table (``table:``).
        cols: dict[str, dict[str, Any]] = {}
        reflected: dict[str, dict[str, Any]] = {}
        info: dict[str, dict[str, Any]] = {}  # table -> column -> the reflected column
        for name, tm in self.tables.items():
            if "*" in name:
                fail(f"pattern {name} was not expanded against the database", "tables", name)
                continue
            if tm.table not in existing:
                fail(f"table {tm.table!r} does not exist in the database", "tables", name)
                continue
            if tm.table not in reflected:
                info[tm.table] = {c["name"]: c for c in insp.get_columns(tm.table)}
                reflected[tm.table] = {c: v["type"] for c, v in info[tm.table].items()}
            cols[name] = reflected[tm.table]
        transactional = list(reflected)
        for name in self.side_tables:
            if name in existing and name not in cols:
                cols[name] = {c["name"]: c["type"] for c in insp.get_columns(name)}
        bad = non_transactional(engine, transactional)
        if bad:
            fail(refusal(bad), "tables", min(bad))

        def need(
            table: str, column: str | None, *path: Any, time: bool = False, fmt: str | None = None
        ) -> bool:
            if column is None or table not in cols:
                return False
            if column not in cols[table]:
                fail(f"column {table}.{column} does not exist in the database", *path)
                return False
            ct = cols[table][column]
            if time and fmt == UNIX and not is_int(ct):
                fail(f"column {table}.{column} is not an integer column (format: unix)", *path)
                return False
            if time and fmt not in (None, UNIX) and not is_text(ct):
                fail(f"column {table}.{column} is not a text column (format: {fmt})", *path)
                return False
            if time and fmt is None and not isinstance(ct, sqltypes.Date | sqltypes.DateTime):
                fail(f"column {table}.{column} is not a date/time column", *path)
                return False
            return True

        def compatible(
            a: tuple[str, str], b: tuple[str, str], *path: Any, as_text: bool = False
        ) -> None:
            ta, tb = cols[a[0]][a[1]], cols[b[0]][b[1]]
            ka, kb = _type_kind(ta), _type_kind(tb)
            # An integer id held as text links through a guarded cast (lifecycle.datamap.links)
            # where the map says so: a login id mapped to the integer key by mistake would
            # otherwise match no member at all, silently.
            if ka == "text" and kb == "integer" and as_text:
                return
            if ka != kb:
                hint = (
                    " (if it holds the integer id as text, list it under text_ids:)"
                    if ka == "text" and kb == "integer"
                    else ""
                )
                fail(
                    f"{a[0]}.{a[1]} ({ka}) cannot hold {b[0]}.{b[1]} ({kb}): link columns must "
                    f"have compatible types{hint}",
                    *path,
                )

        s = self.subject
        st = s.table
        if st in cols:
            if need(st, s.key, "subject", "key") and _type_kind(cols[st][s.key]) != "integer":
                fail(
                    f"subject key {st}.{s.key} is not an integer column: the lifecycle needs an "
                    "integer member id (e.g. an AUTO_INCREMENT column), a site with only a "
                    "string key cannot be served",
                    "subject",
                    "key",
                )
            need(st, s.login_column, "subject", "login_column")
            need(st, s.status_column, "subject", "status_column")
            need(st, s.withdrawn_at_column, "subject", "withdrawn_at_column", time=True)
            need(st, s.marker_column, "subject", "withdrawn", "column")
            mk = s.marker_store
            if isinstance(mk, MetaMarker):
                if mk.table not in existing:
                    fail(f"table {mk.table!r} does not exist in the database", "subject",
                         "withdrawn", "table")  # fmt: skip
                for c in (mk.column, mk.key_column, mk.value):
                    need(mk.table, c, "subject", "withdrawn")
                if need(mk.table, mk.value, "subject", "withdrawn") and not (
                    is_text(cols[mk.table][mk.value]) or mk.format == UNIX
                ):
                    fail(f"column {mk.table}.{mk.value} is not a text column", "subject",
                         "withdrawn", "value")  # fmt: skip
            elif mk is not None and LIFECYCLE_TABLE not in existing:
                fail(
                    f"table {LIFECYCLE_TABLE} does not exist in the primary database: run "
                    "`lifecycle db upgrade`",
                    "subject",
                    "withdrawn",
                )
            need(st, s.email_column, "subject", "contact", "email")
            need(st, s.mobile_column, "subject", "contact", "mobile")
            if s.dormancy.last_active_column:
                need(
                    st,
                    s.dormancy.last_active_column,
                    "subject",
                    "dormancy",
                    "last_active_column",
                    time=True,
                )
        for cat in self.categories_in_use():
            # A consent-based rule reads its member's consent from the members' table (or,
            # naming a purpose, from where the purpose says).
            if self.rules[cat].consent not in self.consents:
                need(st, self.rules[cat].consent, "retention", cat, "consent")
        for cp in self.consents.values():
            need(st, cp.column, "consents", cp.name, "column")
            need(st, cp.date_column, "consents", cp.name, "date_column")
        if any(cp.column is None for cp in self.consents.values()) and (
            CONSENT_TABLE not in existing
        ):
            fail(
                f"table {CONSENT_TABLE} does not exist in the primary database (consent "
                "purposes kept by the lifecycle need it): run `lifecycle db upgrade`",
                "consents",
            )
        for name, t in self.tables.items():
            if name not in cols:
                continue
            base = ("tables", name)
            keys_ok = all([need(name, k, *base, "key") for k in t.keys])
            for col, _values in t.where:
                need(name, col, *base, "where", col)
            if keys_ok and t.keys and not _declared_unique(insp, t.table, t.keys):
                fail(
                    f"key ({', '.join(t.keys)}) of {name} is not a primary key or unique index: "
                    "rows could not be told apart (give the table's real unique key)",
                    *base,
                    "key",
                )
            # Text keys (a session id) are batched by key range too, in the database's own
            # order (lifecycle.engine.text_keys); a composite key has no single order.
            if t.expires_by_age and (t.composite or (
                keys_ok and _type_kind(cols[name][t.key]) not in ("integer", "text")
            )):  # fmt: skip
                fail(
                    f"table {name} ends by age but its key is not one integer or text column "
                    "(the sweep batches such tables by key range)",
                    *base,
                    "purpose_end",
                )
            for i, lk in enumerate(t.links):
                if len(t.links) > 1:
                    where: tuple[Any, ...] = (*base, "members", i)
                elif ("tables", t.pattern or name, "member_key") in self._marks:
                    where = (*base, "member_key")
                else:
                    where = (*base, "subject_column")
                if lk.json_path is not None:
                    where = (*base, "link")
                ok = need(name, lk.column, *where)
                if ok and lk.json_path is not None:
                    why = json_column_problem(engine.dialect.name, cols[name][lk.column])
                    if why:
                        fail(f"column {name}.{lk.column}: {why}", *where)
                elif need(st, lk.member_key, *where) and ok and st in cols:
                    compatible((name, lk.column), (st, lk.member_key), *where,
                               as_text=lk.column in t.text_ids)  # fmt: skip
                for c in lk.blank:
                    need(name, c, *where)
            for i, lk in enumerate(t.also_names):
                where = (*base, "also_names", i)
                ok = need(name, lk.column, *where)
                # A list, or an id inside text, is text whatever it names (checked below).
                plain = not lk.separator and lk.template is None
                if need(st, lk.member_key, *where) and ok and st in cols and plain:
                    compatible((name, lk.column), (st, lk.member_key), *where,
                               as_text=lk.column in t.text_ids)  # fmt: skip
                for c in lk.blank:
                    need(name, c, *where)
                rc = info.get(t.table, {}).get(lk.column)
                if lk.template is not None and rc is not None and not is_text(rc["type"]):
                    fail(f"column {name}.{lk.column} holds a member inside text (also_names "
                         "format:) but is not text", *where)  # fmt: skip
                if lk.separator is not None:
                    if rc is not None and not is_text(rc["type"]):
                        fail(f"column {name}.{lk.column} lists members (also_names list:) but "
                             "is not text", *where)  # fmt: skip
                    continue
                if lk.deletes:
                    continue  # the row goes: nothing is cleared
                given = dict(lk.values)
                for c in lk.cleared:
                    rc = info.get(t.table, {}).get(c)
                    if rc is None or c in given or rc["nullable"] or is_text(rc["type"]):
                        continue
                    if rc.get("default") is None:
                        fail(
                            f"column {name}.{c} cannot be cleared (NOT NULL, not text, no "
                            f"default): give it a value under also_names set: ({c}: 0)",
                            *where,
                        )
            if t.via:
                v = t.via
                ok = need(name, v.column, *base, "via", "column")
                need(name, v.match, *base, "via", "match")
                parents = [tn for _v, tn in v.tables] if v.match else [v.table]
                for parent in parents:
                    if parent not in cols:
                        continue
                    if need(parent, v.parent_key, *base, "via", "parent_key") and ok:
                        compatible((name, v.column), (parent, v.parent_key), *base, "via",
                                   as_text=v.column in t.text_ids)  # fmt: skip
                        ptm = self.tables[parent]
                        ptable = ptm.table
                        if not v.many and not _declared_unique(insp, ptable, (v.parent_key,)) \
                                and not (v.match and ptm.keys == (v.parent_key,)):  # fmt: skip
                            fail(
                                f"via parent_key {parent}.{v.parent_key} is not unique: a row "
                                "could reach several members",
                                *base,
                                "via",
                                "parent_key",
                            )
            for cat, cs in t.columns.items():
                for i, c in enumerate(cs):
                    need(name, c, *base, "columns", cat, i)
            for i, c in enumerate(t.non_personal):
                need(name, c, *base, "non_personal", i)
            for i, ft in enumerate(t.file_templates):
                for f in ft.fields:
                    need(name, f, *base, "files", i)
            need(name, t.retain_from, *base, "retain_from", time=True,
                 fmt=t.date_format(t.retain_from))  # fmt: skip
            for i, p in enumerate(t.purpose_end):
                need(name, p.column, *base, "purpose_end", i, time=True,
                     fmt=t.date_format(p.column))  # fmt: skip
            if t.owner is not None:
                o = t.owner
                if o.table not in existing:
                    fail(f"table {o.table!r} does not exist in the database", *base, "owner")
                ok = need(name, o.row_key, *base, "owner")
                for c in (o.column, o.key_column, o.value):
                    need(o.table, c, *base, "owner")
                if ok and need(o.table, o.column, *base, "owner"):
                    compatible((o.table, o.column), (name, o.row_key), *base, "owner",
                               as_text=True)  # fmt: skip
                if need(o.table, o.value, *base, "owner") and need(st, o.member_key, *base,
                                                                   "owner"):  # fmt: skip
                    # A meta row's value is text by nature: the owner form declares it.
                    compatible((o.table, o.value), (st, o.member_key), *base, "owner",
                               as_text=True)  # fmt: skip
            declared = set(t.carried_columns) | set(t.personal_columns)
            if name == st:
                declared |= {c for c in (s.status_column, s.withdrawn_at_column, s.marker_column,
                                         s.login_column) if c}  # fmt: skip
            missing = [c for c in cols[name] if c not in declared]
            if missing:
                # An entry sharing its table: every kind of row carries every column.
                entry = f" entry {name}" if t.table != name else ""
                fail(
                    f"column {t.table}.{missing[0]} is not in the data map{entry}: list it "
                    f"under a category in `columns:` or under `non_personal:`",
                    *base,
                )
            for fk in insp.get_foreign_keys(t.table):
                referred = fk.get("referred_table")
                if referred == t.table:
                    continue
                for parent in (p.name for p in self.entries_on(referred)):
                    self._edges[name].add(parent)
                    self.foreign_keys.append((name, tuple(fk["constrained_columns"]), parent,
                                              tuple(fk["referred_columns"])))  # fmt: skip
        member_like = _member_like_names(s)
        mapped = set(self.physical_tables)
        for other in sorted(existing - mapped):
            if (
                any(fnmatchcase(other, ig) for ig in self.ignore_tables)
                or self.handled_elsewhere_reason(other) is not None
                or other.startswith(("lifecycle_", "alembic_version"))
            ):
                continue
            for fk in insp.get_foreign_keys(other):
                if fk.get("referred_table") in mapped:
                    fail(
                        f"table {other!r} references mapped table {fk['referred_table']!r} but "
                        f"is not in the data map: map it, or list it under `ignore_tables:`",
                        "tables",
                    )
                    break
            else:
                hits = [c["name"] for c in insp.get_columns(other) if c["name"] in member_like]
                if hits:
                    fail(
                        f"table {other!r} has member-like column {hits[0]} but no map entry "
                        "covers it: map it, or list it under `ignore_tables:`",
                        "tables",
                    )
        if collect is not None:
            collect.extend(problems)
        elif problems:
            raise problems[0]
        self.tables_in_dependency_order()


def _type_kind(t: Any) -> str:
    """A coarse type class for link compatibility: values compare equal across it."""
    if isinstance(t, sqltypes.Integer):
        return "integer"
    if isinstance(t, sqltypes.Numeric):
        return "integer" if getattr(t, "scale", None) in (0, None) else "number"
    if isinstance(t, sqltypes.String | sqltypes.Enum):
        return "text"
    if isinstance(t, sqltypes.DateTime | sqltypes.Date):
        return "time"
    return type(t).__name__.lower()


def _declared_unique(insp: Any, table: str, columns: Iterable[str]) -> bool:
    """A primary key or unique index/constraint whose columns all lie within ``columns``."""
    want = set(columns)
    pk = insp.get_pk_constraint(table).get("constrained_columns") or []
    if pk and set(pk) <= want:
        return True
    for uc in insp.get_unique_constraints(table):
        if uc.get("column_names") and set(uc["column_names"]) <= want:
            return True
    for ix in insp.get_indexes(table):
        names = [c for c in ix.get("column_names") or [] if c]
        if ix.get("unique") and names and set(names) <= want:
            return True
    return False


def _member_like_names(s: Subject) -> set[str]:
    """Column names that, in a table the map does not cover, say "this row is a member's"."""
    names = {"member_id", "mb_id", "user_id"}
    # A login that is the email is no link: plenty of tables hold an address of someone.
    login = None if s.login_is_contact else s.login_column
    for c in (login, s.key if s.key != "id" else None):
        if c:
            names.add(c)
    return names
