"""Reading a data-map YAML file into a validated :class:`~lifecycle.datamap.model.DataMap`.

Every error is one line naming the file and the line (``demo.yaml:42: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor

from lifecycle.datamap import consents as consent_purposes
from lifecycle.datamap import identifiers
from lifecycle.datamap.anchors import (
    ANCHORS,
    PURPOSE_END,
    RECORD,
    TAX_DEADLINE,
    TaxProfile,
    parse_month_day,
)
from lifecycle.datamap.entries import check_entries, describe_where, parse_contact, parse_where
from lifecycle.datamap.guest_rows import describe as describe_guests
from lifecycle.datamap.guest_rows import identity_lists, match_identities
from lifecycle.datamap.identities import RULES as IDENTITY_RULES
from lifecycle.datamap.json_links import path_problem
from lifecycle.datamap.links import (
    LIFECYCLE_MARKER,
    UNIX,
    MetaMarker,
    Owner,
    check_format,
    describe_links,
)
from lifecycle.datamap.model import (
    DataMap,
    DataMapError,
    Dormancy,
    FileTemplate,
    MemberLink,
    Orphans,
    PurposeEnd,
    Subject,
    TableMap,
    Via,
)
from lifecycle.datamap.paths import MAX_DATAMAP_BYTES, map_path
from lifecycle.datamap.periods import (
    DEFAULT_ANCHORS,
    DEFAULT_RULES,
    KNOWN_CATEGORIES,
    Period,
    Rule,
)
from lifecycle.datamap.statutes import BY_ID, anchor_problem, check_rule

# -- loading -----------------------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _RuleSpec(_Spec):
    period: Any = None
    legal_basis: Any = None
    from_: Any = Field(default=None, alias="from")
    consent: str | None = None


class _BusinessSpec(_Spec):
    type: Literal["individual", "corporation"] = "individual"
    fiscal_year_end: str = "12-31"
    vat: bool = True
    faithful_filing: bool = False
    medical_institution: bool = False


class _ViaSpec(_Spec):
    table: str
    column: str
    parent_key: str | None = None
    match: str | None = None
    # parent_key need not be unique: the row is the member's whom every parent row naming
    # its value belongs to (lifecycle.engine.shared_parents).
    many: bool = False


class _LinkSpec(_Spec):
    column: str
    member_key: str | None = None
    blank: list[str] = Field(default_factory=list)


class _NamesSpec(_LinkSpec):
    # Cleared columns written with this value instead of blanked (a NOT NULL integer: 0).
    set: dict[str, int | str] = Field(default_factory=dict)
    # The column lists several members separated by this (a poll's voters, ``","``).
    list_: str | None = Field(default=None, alias="list")
    # delete: the row goes when the member it names leaves (a friend-list entry).
    on_leave: Literal["clear", "delete"] = "clear"
    # The column holds the member's id inside this text, ``{}`` standing for it ("{} 추천").
    format: str | None = None


class _FileSpec(_Spec):
    template: str
    category: str


class _MarkerSpec(_Spec):
    column: str
    format: str = "%Y%m%d"


class _MetaMarkerSpec(_Spec):
    """A withdrawal kept in a meta row of the member (wp_usermeta)."""

    table: str
    column: str
    key_column: str
    key: str
    value: str
    format: str = "%Y-%m-%d %H:%M:%S"


class _OwnerSpec(_Spec):
    """The row's member named in a meta row (a WooCommerce order's _customer_user)."""

    table: str
    column: str
    key_column: str
    key: str
    value: str
    member_key: str | None = None
    row_key: str | None = None
    # kind -> meta key: meta rows of the same table holding the row's identity (a guest
    # order's _billing_email), for match_identities.
    identities: dict[str, str] = Field(default_factory=dict)


class _DateSpec(_Spec):
    column: str
    format: str


class _ContactSpec(_Spec):
    email: str | None = None
    mobile: str | None = None


class _SiteSpec(_Spec):
    root: str


class _AgeSpec(_Spec):
    column: str
    after: Any = None
    format: str | None = None


class _DormancySpec(_Spec):
    enabled: bool = False
    inactive_for: Any = "1y"
    last_active_column: str | None = None
    status_value: str = "dormant"
    advance_notice_days: int = Field(default=30, ge=0, le=365)


class _SubjectSpec(_Spec):
    table: str
    key: str = "id"
    login_column: str | None = None
    status_column: str | None = None
    withdrawn_value: str = "withdrawn"
    withdrawn_at_column: str | None = None
    withdrawn: _MarkerSpec | _MetaMarkerSpec | Literal["lifecycle"] | None = None
    on_withdrawal: Literal["delete", "blank_and_keep"] = "delete"
    contact: _ContactSpec = Field(default_factory=_ContactSpec)
    dormancy: _DormancySpec = Field(default_factory=_DormancySpec)


class _OrphansSpec(_Spec):
    guests: list[int | str] = Field(default_factory=list)
    guests_below: int | None = None


def _default_purpose_end() -> list[str | dict[str, Any]]:
    return ["withdrawal"]


class _JsonLinkSpec(_Spec):
    # ``json:`` in the map (a BaseModel attribute is called so).
    column: str = Field(alias="json")
    path: str


class _TableSpec(_Spec):
    key: str | list[str] = "id"
    subject_column: str | None = None
    # The member's id read inside a JSON text column (lifecycle.datamap.json_links).
    link: _JsonLinkSpec | None = None
    member_key: str | None = None
    members: list[_LinkSpec] = Field(default_factory=list)
    # Columns naming a second member in rows another member owns (docs/datamap.md).
    also_names: list[_NamesSpec] = Field(default_factory=list)
    via: _ViaSpec | None = None
    owner: _OwnerSpec | None = None
    # Link columns holding the subject's integer key as text (a sessions table's VARCHAR).
    text_ids: list[str] = Field(default_factory=list)
    columns: dict[str, list[str]] = Field(default_factory=dict)
    non_personal: list[str] = Field(default_factory=list)
    files: list[str | _FileSpec] = Field(default_factory=list)
    purpose_end: list[str | dict[str, Any]] = Field(default_factory=_default_purpose_end)
    retain_from: str | _DateSpec | None = None
    tax_evidence: bool = False
    optional: bool = False
    # Columns holding the row's own member's identity (an order's email): kind -> column.
    identities: dict[str, str] = Field(default_factory=dict)
    # Several entries on one database table (lifecycle.datamap.entries).
    table: str | None = None
    where: dict[str, Any] | None = None
    # The member's own current contact held in this entry's rows (a billing_email meta row):
    # a correction of the member's contact writes it here too.
    contact: _ContactSpec | None = None
    # Rows with no member link belong to the member whose identity (of these kinds) they hold.
    match_identities: list[str] = Field(default_factory=list)
    # Matched identity columns holding a list of them (one recipient a line).
    identity_lists: list[str] = Field(default_factory=list)
    # false: never look for orphan rows here; or the link values that name no member by design.
    orphans: _OrphansSpec | bool = True


class _MapSpec(_Spec):
    version: Literal[1] = 1
    site: _SiteSpec | None = None
    business: _BusinessSpec = Field(default_factory=_BusinessSpec)
    subject: _SubjectSpec
    # A custom category, or {name: kind}: the built-in kind of record it is (contract,
    # payment, ...), which the statute a retention rule cites must cover.
    categories: list[str | dict[str, str]] = Field(default_factory=list)
    # 민감정보 (개인정보 보호법 제23조): destroyed at withdrawal unless a retention consent or
    # a statute covering that kind of record keeps it (lifecycle.datamap.consents).
    sensitive: list[str] = Field(default_factory=list)
    consents: dict[str, Any] = Field(default_factory=dict)
    retention: dict[str, _RuleSpec | None] = Field(default_factory=dict)
    ignore_tables: list[str] = Field(default_factory=list)
    # Tables of people other than members (the staff's accounts): table -> who handles them,
    # under which policy. The operator's statement, shown wherever coverage is reported.
    handled_elsewhere: dict[str, str] = Field(default_factory=dict)
    ignore_rows: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tables: dict[str, _TableSpec]
    unique_identifiers: dict[str, Any] = Field(default_factory=dict)


_constructor = SafeConstructor()


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases.

    An alias repeats a node by reference, so a few lines of nested aliases expand to billions of
    nodes when the tree is built ("billion laughs": > 60 s and 5 GB before). A data map has no
    use for them, so the first one is refused while parsing, before anything is expanded.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not allowed",
                # types-PyYAML: events carry the C parser's Mark too, which the error takes.
                event.start_mark,  # type: ignore[arg-type]
            )
        if getattr(event, "anchor", None) is not None:
            raise ComposerError(
                None, None, f"YAML anchors (&{event.anchor}) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)


def _compose(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML keeping the line of every key and item (path tuple -> 1-based line)."""
    if len(text) > MAX_DATAMAP_BYTES:
        raise DataMapError(source, None, _too_big(len(text)))
    try:
        root = yaml.compose(text, Loader=_PlainLoader)
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
    kinds: dict[str, str] = {}
    for i, item in enumerate(spec.categories):
        if isinstance(item, dict):
            if len(item) != 1:
                raise err("categories: an item is a name or {name: kind}", "categories", i)
            ((c, kind),) = item.items()
            if kind not in KNOWN_CATEGORIES:
                raise err(
                    f"category {c!r}: kind {kind!r} is not a built-in category (one of "
                    f"{', '.join(KNOWN_CATEGORIES)})",
                    "categories",
                    i,
                )
            kinds[c] = kind
        else:
            c = item
        if c in KNOWN_CATEGORIES:
            raise err(
                f"category {c!r} is built in; do not declare it under categories:", "categories", i
            )
        if not re.fullmatch(r"[a-z][a-z0-9_]*", c):
            raise err(f"category name {c!r} must be lower_snake_case", "categories", i)
        custom.add(c)
    vocabulary = set(KNOWN_CATEGORIES) | custom

    b = spec.business
    try:
        fye = parse_month_day(b.fiscal_year_end)
    except ValueError as exc:
        raise err(f"business.fiscal_year_end: {exc}", "business", "fiscal_year_end") from None
    business = TaxProfile(b.type, fye, b.vat, b.faithful_filing)
    operator = frozenset({"medical_institution"} if b.medical_institution else ())

    rules: dict[str, Rule] = {}
    for cat, (p, basis) in DEFAULT_RULES.items():
        per = Period.parse(p)
        ids: tuple[str, ...] = tuple(st.id for st in check_rule(cat, per, basis))
        rules[cat] = Rule(cat, per, basis, None, default=True, anchor=DEFAULT_ANCHORS.get(cat),
                          statutes=ids)  # fmt: skip
    for cat, rs in spec.retention.items():
        where: tuple[str | int, ...] = ("retention", cat)
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
        anchor = rs.from_
        if anchor is not None and anchor not in ANCHORS:
            raise err(
                f"retention rule {cat!r}: from: {anchor!r} is not one of {', '.join(ANCHORS)}",
                *where,
                "from",
            )
        basis = rs.legal_basis.strip() if isinstance(rs.legal_basis, str) else ""
        ids = ()
        if rs.consent is not None:
            if not rs.consent.strip():
                raise err(f"retention rule {cat!r}: consent: names no column", *where, "consent")
            if rs.consent in spec.consents:
                basis = basis or (
                    f"정보주체의 별도 보존 동의 (개인정보 보호법 제21조①, 제23조①1호; {rs.consent})"
                )
            basis = basis or f"정보주체의 별도 동의 (개인정보 보호법 제15조·제23조; {rs.consent})"
        elif not basis:
            raise err(
                f"retention rule {cat!r} has no legal_basis (a listed statute with its "
                "article, or consent: COLUMN for a consent-based period)",
                *where,
            )
        else:
            try:
                ids = tuple(st.id for st in check_rule(cat, per, basis, operator=operator,
                                                       kind=kinds.get(cat)))  # fmt: skip
            except ValueError as exc:
                raise err(str(exc), *where, "legal_basis") from None
            why = anchor and anchor_problem(cat, tuple(BY_ID[i] for i in ids), anchor)
            if why and not per.is_zero:
                raise err(why, *where, "from")
        rules[cat] = Rule(cat, per, basis, marks.get(where), anchor=anchor,
                          consent=rs.consent.strip() if rs.consent else None,
                          statutes=ids)  # fmt: skip

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
    if s.withdrawn is not None and (s.status_column or s.withdrawn_at_column):
        raise err(
            "subject: give either withdrawn: {column, format} (a marker column) or "
            "status_column with withdrawn_at_column, not both",
            "subject",
            "withdrawn",
        )
    if s.withdrawn is None and not (s.status_column and s.withdrawn_at_column):
        gap = "status_column" if not s.status_column else "withdrawn_at_column"
        raise err(
            f"subject: missing required key {gap!r} (or record withdrawal in a marker column: "
            "withdrawn: {column: COLUMN, format: '%Y%m%d'})",
            "subject",
        )
    if isinstance(s.withdrawn, _MetaMarkerSpec) and s.withdrawn.format != UNIX:
        why = check_format(s.withdrawn.format)
        if why:
            raise err(f"subject.withdrawn: {why}", "subject", "withdrawn", "format")
    if isinstance(s.withdrawn, _MarkerSpec):
        fmt = s.withdrawn.format
        if not (("%Y" in fmt or "%y" in fmt) and "%m" in fmt and "%d" in fmt):
            raise err(
                f"subject.withdrawn.format {fmt!r} is not a date format such as %Y%m%d (it "
                "needs the year, month and day)",
                "subject",
                "withdrawn",
                "format",
            )
        try:
            datetime(2024, 1, 31).strftime(s.withdrawn.format)
            datetime.strptime(datetime(2024, 1, 31).strftime(s.withdrawn.format),
                              s.withdrawn.format)  # fmt: skip
        except ValueError:
            raise err(
                f"subject.withdrawn.format {s.withdrawn.format!r} is not a date format such "
                "as %Y%m%d",
                "subject",
                "withdrawn",
                "format",
            ) from None
    if dormancy.enabled and not s.status_column:
        raise err(
            "subject.dormancy needs a status_column (where the site marks a member dormant)",
            "subject",
            "dormancy",
        )
    subject = Subject(
        table=s.table,
        key=s.key,
        status_column=s.status_column,
        withdrawn_value=s.withdrawn_value,
        withdrawn_at_column=s.withdrawn_at_column,
        dormancy=dormancy,
        login_column=s.login_column,
        marker_column=s.withdrawn.column if isinstance(s.withdrawn, _MarkerSpec) else None,
        marker_format=s.withdrawn.format if isinstance(s.withdrawn, _MarkerSpec) else "%Y%m%d",
        marker_store=_marker_store(s.withdrawn),
        keep_row=s.on_withdrawal == "blank_and_keep",
        email_column=s.contact.email,
        mobile_column=s.contact.mobile,
    )
    if s.table not in spec.tables:
        raise err(f"subject table {s.table!r} is not listed under tables:", "subject", "table")
    site_root = None
    if spec.site is not None:
        site_root = spec.site.root.strip()
        if not site_root.startswith("/") or ".." in site_root.split("/"):
            raise err("site.root must be an absolute path without '..'", "site", "root")
    subject_cols = {s.key, s.login_column} - {None}

    tables: dict[str, TableMap] = {}
    used: dict[str, tuple[Any, ...]] = {}
    for name, ts in spec.tables.items():
        base = ("tables", name)
        keys = (ts.key,) if isinstance(ts.key, str) else tuple(ts.key)
        if len(set(keys)) != len(keys) or "" in keys:
            raise err(f"table {name!r}: key must name distinct columns", *base, "key")
        if "*" in name and name.count("*") != 1:
            raise err(f"table pattern {name!r} may hold one '*' only", *base)
        relations = [k for k in ("subject_column", "link", "via", "members", "owner")
                     if getattr(ts, k)]  # fmt: skip
        if len(relations) > 1:
            raise err(
                f"table {name!r} has both {' and '.join(relations)}: give exactly one relation",
                *base,
                relations[1],
            )
        age_only = bool(ts.purpose_end) and all(isinstance(p, dict) for p in ts.purpose_end)
        # Rows no member owns that name members (a poll listing its voters): they stay, and a
        # leaver's name leaves them; nothing of theirs ends, so no purpose end and no category.
        named_only = not relations and not ts.match_identities and bool(ts.also_names)
        if named_only:
            if "purpose_end" in ts.model_fields_set and ts.purpose_end:
                raise err(f"table {name!r}: rows no member owns (only also_names:) stay; give "
                          "no purpose_end", *base, "purpose_end")  # fmt: skip
            if ts.columns:
                raise err(f"table {name!r}: rows no member owns (only also_names:) hold no "
                          "category: list their columns under non_personal or leave them "
                          "out", *base, "columns")  # fmt: skip
        if not relations and not age_only and not ts.match_identities and not named_only:
            raise err(
                f"table {name!r} has no subject relation: give subject_column (the column "
                f"holding the member's {s.key}), link: {{json: COLUMN, path: PATH}}, members: "
                "[...], via: {table, column} or "
                "owner: {table, column, key_column, key, value} (or match_identities: "
                "[email, ...] to find the member by an identity the rows hold, or end its rows "
                "by age only: purpose_end: [{age: COLUMN}])",
                *base,
            )
        if name == s.table and ts.subject_column != s.key:
            raise err(
                f"subject table {name!r} must have subject_column: {s.key}",
                *base,
                "subject_column" if ts.subject_column else "via",
            )
        if ts.member_key and not ts.subject_column:
            raise err(f"table {name!r}: member_key goes with subject_column", *base, "member_key")
        links: list[MemberLink] = []
        if ts.subject_column:
            links.append(MemberLink(ts.subject_column, ts.member_key or s.key))
        if ts.link:
            why = path_problem(ts.link.path)
            if why:
                raise err(f"table {name!r}: {why}", *base, "link", "path")
            if ts.match_identities or ts.text_ids or ts.also_names:
                raise err(
                    f"table {name!r}: a JSON link goes without match_identities, text_ids and "
                    "also_names",
                    *base,
                    "link",
                )
            links.append(MemberLink(ts.link.column, s.key, json_path=ts.link.path))
        for i, ml in enumerate(ts.members):
            links.append(MemberLink(ml.column, ml.member_key or s.key, tuple(ml.blank)))
            if ml.column in ml.blank:
                raise err(f"table {name!r}: {ml.column} is cleared anyway; do not list it under "
                          "blank:", *base, "members", i)  # fmt: skip
        for lk in links:
            if subject.login_is_contact and lk.member_key == s.login_column:
                raise err(
                    f"table {name!r}: member_key {lk.member_key!r} is the login and a contact "
                    "column a correction may change, which would cut the link: link by the "
                    f"subject's key ({s.key})",
                    *base,
                    "members" if ts.members else "member_key",
                )
            if lk.member_key not in subject_cols:
                raise err(
                    f"table {name!r}: member_key {lk.member_key!r} must be the subject's key "
                    f"or login_column ({', '.join(sorted(c for c in subject_cols if c))})",
                    *base,
                    "members" if ts.members else "member_key",
                )
        also = _also_names(ts, name, links, s, subject_cols, err, base)
        if len(links) == 1 and ts.members:
            raise err(f"table {name!r}: members: lists one column; use subject_column", *base,
                      "members")  # fmt: skip
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
            if ("*" in ts.via.table) != bool(ts.via.match):
                raise err(
                    f"table {name!r}: a via to a pattern table needs match: COLUMN (the column "
                    "naming which table), and match: only goes with a pattern",
                    *base,
                    "via",
                )
            pk = spec.tables[ts.via.table].key
            parent_key = ts.via.parent_key or (pk if isinstance(pk, str) else "")
            if not parent_key:
                raise err(f"table {name!r}: via to a composite-key table needs parent_key",
                          *base, "via")  # fmt: skip
            if ts.via.many and (ts.via.match or not (ts.retain_from or explicit_age_of(ts))):
                raise err(
                    f"table {name!r}: via with many: needs a date of its own (retain_from or "
                    "an age rule; several parent rows have no one date to inherit) and no "
                    "match:",
                    *base,
                    "via",
                    "many",
                )
            via = Via(ts.via.table, ts.via.column, parent_key, ts.via.match, many=ts.via.many)
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
                    " (counselling records are kept only under a listed statute or a recorded "
                    "separate consent: consent: COLUMN)"
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
        where_ = parse_where(ts.where, err, *base, "where")
        # A JSON link's column is the row's data (a session's), listed under a category; so is
        # a column naming a member inside text (also_names format:, a point row's action).
        rel_cols = {*keys, *(lk.column for lk in links if lk.json_path is None),
                    *(lk.column for lk in also if lk.template is None),
                    ts.via.column if ts.via else None,
                    ts.via.match if ts.via else None, *(c for c, _v in where_)}  # fmt: skip
        if name == s.table and not subject.login_is_contact:
            rel_cols.add(s.login_column)
        for i, c in enumerate(ts.non_personal):
            if c in owner:
                raise err(
                    f"column {name}.{c} is listed under both {owner[c]!r} and non_personal",
                    *base,
                    "non_personal",
                    i,
                )
        for c in owner:
            if c in rel_cols:
                raise err(
                    f"column {name}.{c} is a key/relation column and cannot hold a category",
                    *base,
                    "columns",
                    owner[c],
                )
        file_cols: list[str] = []
        templates: list[FileTemplate] = []
        for i, f in enumerate(ts.files):
            if isinstance(f, _FileSpec):
                if f.category not in columns:
                    raise err(
                        f"file template on {name!r}: category {f.category!r} is not one of the "
                        "table's categories",
                        *base,
                        "files",
                        i,
                    )
                ft = FileTemplate(f.template, f.category)
                if not ft.fields:
                    raise err(f"file template {f.template!r} names no {{column}}", *base,
                              "files", i)  # fmt: skip
                templates.append(ft)
            elif "{" in f:
                ft = FileTemplate(f, "")
                owned = next((owner[c] for c in ft.fields if c in owner), None)
                if owned is None:
                    raise err(
                        f"file template {f!r} on {name!r} uses no categorised column: write "
                        "{template: ..., category: ...}",
                        *base,
                        "files",
                        i,
                    )
                templates.append(FileTemplate(f, owned))
            elif f not in owner:
                raise err(
                    f"file column {name}.{f} must also be listed under a category in columns:",
                    *base,
                    "files",
                    i,
                )
            else:
                file_cols.append(f)
        purpose: list[PurposeEnd] = []
        formats: dict[str, str] = {}
        retain_from = ts.retain_from
        if isinstance(retain_from, _DateSpec):
            why = check_format(retain_from.format)
            if why:
                raise err(f"table {name!r}: retain_from: {why}", *base, "retain_from", "format")
            formats[retain_from.column] = retain_from.format
            retain_from = retain_from.column
        for i, pe in enumerate(() if named_only else ts.purpose_end):
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
            if age_spec.format is not None:
                why = check_format(age_spec.format)
                if why:
                    raise err(f"table {name!r}: age: {why}", *where, "age", "format")
                formats[age_spec.column] = age_spec.format
            purpose.append(PurposeEnd("age", age_spec.column, after))
        if not purpose and not named_only:
            raise err(f"table {name!r} has an empty purpose_end", *base, "purpose_end")
        for i, lk, field_ in [*((i, lk, "members") for i, lk in enumerate(links)),
                              *((i, lk, "also_names") for i, lk in enumerate(also))]:  # fmt: skip
            kept = [c for c in lk.blank if c in owner and not rules[owner[c]].period.is_zero]
            if kept:
                raise err(
                    f"table {name!r}: blank: column {kept[0]} is in category {owner[kept[0]]!r}, "
                    "which has a retention period; a cleared column is destroyed, so list only "
                    "columns of 0d categories under blank:",
                    *base,
                    field_,
                    i,
                )
        for i, lk in enumerate(also):
            if not lk.deletes:
                continue
            why = _why_not_deleted(name, ts, spec.tables, columns, rules, templates, file_cols)
            if why:
                raise err(f"table {name!r}: also_names {lk.column!r} deletes the row when that "
                          f"member leaves, but {why}", *base, "also_names", i)  # fmt: skip
        if not keys and not (
            ts.subject_column
            and all(rules[c].period.is_zero for c in columns)
            and not any(isinstance(p, dict) for p in ts.purpose_end)
            and not any(isinstance(f, _FileSpec) or "{" in f for f in ts.files)
        ):
            raise err(
                f"table {name!r} has no key: only a table whose rows are all destroyed (every "
                "category 0d, a subject_column, no age rule, no path templates) can do without",
                *base,
                "key",
            )
        _check_anchors(ts, name, columns, rules, err, s.table, _dated(spec.tables, name))
        identities = _identities(ts, name, owner, subject, err, base)
        owned_by = _owner(ts, name, keys, subject_cols, subject, err, base)
        held = owned_by.identities if owned_by is not None else ()
        matched = match_identities(ts.match_identities, identities, held, ts, name, err, base)
        lists = identity_lists(ts.identity_lists, matched, identities, keys, name, err, base)
        if name == s.table and subject.keep_row and not columns:
            raise err("subject table kept blank on withdrawal lists no personal columns", *base)
        tables[name] = TableMap(
            name=name,
            key=keys[0] if keys else "",
            subject_column=ts.subject_column,
            via=via,
            columns=columns,
            non_personal=tuple(ts.non_personal),
            files=tuple(file_cols),
            purpose_end=tuple(purpose),
            retain_from=retain_from,
            line=marks.get(base),
            keys=keys,
            links=tuple(links),
            also_names=also,
            file_templates=tuple(templates),
            optional=ts.optional,
            tax_evidence=ts.tax_evidence,
            identities=identities,
            table=ts.table or name,
            where=where_,
            contact=parse_contact(ts.contact, name, owner, subject, err, base),
            owner=owned_by,
            text_ids=_text_ids(ts, name, links, err, base),
            date_formats=tuple(formats.items()),
            match_identities=matched,
            identity_lists=lists,
            orphans=_orphans(ts.orphans),
        )
    ignore_rows = check_entries(spec.tables, tables, spec.ignore_rows, s.table, err)
    for cat in spec.retention:
        if cat in custom and cat not in used:
            raise err(f"category {cat!r} has a rule but no table uses it", "retention", cat)
    flags = identifiers.parse(spec.unique_identifiers, {c for c in used}, err)
    sensitive, purposes = _consents(spec, rules, tables, set(used), err)
    elsewhere = _handled_elsewhere(spec, tables, err)
    return DataMap(source, subject, rules, tables, tuple(spec.ignore_tables), marks, site_root,
                   business=business, operator=operator, identifiers=flags,
                   ignore_rows=ignore_rows, consents=purposes,
                   sensitive=sensitive, handled_elsewhere=elsewhere)  # fmt: skip


def _handled_elsewhere(
    spec: _MapSpec, tables: dict[str, TableMap], err: Callable[..., DataMapError]
) -> dict[str, str]:
    """``handled_elsewhere:`` checked: every table has a reason, and none is also mapped or
    ignored (a table is accounted for one way only, so no report can say two things of it)."""
    out: dict[str, str] = {}
    mapped = {*tables, *(t.table for t in tables.values())}
    for name, reason in spec.handled_elsewhere.items():
        if not reason.strip():
            raise err(
                f"handled_elsewhere: table {name!r} needs a reason (who handles it, under which "
                "policy)",
                "handled_elsewhere",
                name,
            )
        both = sorted(m for m in mapped if fnmatchcase(m, name) or fnmatchcase(name, m))
        if both:
            raise err(
                f"handled_elsewhere: table {name!r} is also mapped under tables: ({both[0]}); "
                "a table is either mapped or handled elsewhere",
                "handled_elsewhere",
                name,
            )
        ignored = [i for i in spec.ignore_tables if fnmatchcase(i, name) or fnmatchcase(name, i)]
        if ignored:
            raise err(
                f"handled_elsewhere: table {name!r} is also under ignore_tables: ({ignored[0]}); "
                "list it in one place only",
                "handled_elsewhere",
                name,
            )
        out[name] = reason.strip()
    return out


def _consents(
    spec: _MapSpec, rules: dict[str, Rule], tables: dict[str, TableMap], used: set[str], err: Any
) -> tuple[frozenset[str], dict[str, consent_purposes.ConsentPurpose]]:
    """``sensitive:`` and ``consents:``, and what every rule keeping a sensitive category or
    naming a consent purpose must satisfy (lifecycle.datamap.consents)."""
    for i, c in enumerate(spec.sensitive):
        if c not in used:
            raise err(f"sensitive: category {c!r} is held by no table", "sensitive", i)
    sensitive = frozenset(spec.sensitive)
    purposes = consent_purposes.parse(spec.consents, sensitive, used, err)
    for cat, rule in rules.items():
        where = ("retention", cat)
        p = purposes.get(rule.consent or "")
        if p is not None and (p.kind != "retention" or cat not in p.categories):
            raise err(
                f"retention rule {cat!r}: consent: {p.name} is not a retention consent "
                f"covering {cat!r} (kind: retention, categories: [{cat}])",
                *where,
                "consent",
            )
        if cat not in sensitive or rule.period.is_zero or p is not None or rule.statutes:
            continue
        raise err(
            f"retention rule {cat!r}: sensitive data (민감정보, 개인정보 보호법 제23조) is "
            "destroyed at withdrawal unless a separate retention consent (consent: PURPOSE of "
            "kind retention) or a statute covering it keeps it",
            *where,
            "consent" if rule.consent else "period",
        )
    for p in purposes.values():
        for cat in p.destroys:
            for t in tables.values():
                if cat in t.columns and (
                    any(c in t.columns[cat] for c in t.files)
                    or any(ft.category == cat for ft in t.file_templates)
                ):
                    raise err(
                        f"consents.{p.name}: category {cat!r} names files on {t.name}; a "
                        "consent withdrawal clears columns and rows, not files",
                        "consents",
                        p.name,
                    )
    return sensitive, purposes


def _also_names(
    ts: _TableSpec,
    name: str,
    links: list[MemberLink],
    s: Any,
    subject_cols: set[Any],
    err: Any,
    base: tuple[Any, ...],
) -> tuple[MemberLink, ...]:
    """``also_names: [{column, member_key, blank, set}]``: a second member named in rows
    another member owns; cleared (never taken) when that member leaves."""
    out: list[MemberLink] = []
    taken = {lk.column for lk in links} | ({ts.via.column} if ts.via else set())
    keys = {ts.key} if isinstance(ts.key, str) else set(ts.key)
    for i, ns in enumerate(ts.also_names):
        where = (*base, "also_names", i)
        if name == s.table and (
            ns.on_leave == "delete" or ns.list_ is not None or ns.format is not None
        ):
            # Another member's own row is never deleted, and a list or template there has no
            # case yet.
            raise err(f"table {name!r}: on the members' table also_names only clears a column "
                      "(no on_leave: delete, no list:, no format:)", *where)  # fmt: skip
        if ns.format is not None and ns.format.count("{}") != 1:
            raise err(f"table {name!r}: also_names format: {ns.format!r} must hold exactly one "
                      "{} (where the member's id stands)", *where, "format")  # fmt: skip
        if ns.format is not None and (ns.list_ is not None or ns.on_leave == "delete"):
            raise err(f"table {name!r}: also_names {ns.column!r} has format: and takes no "
                      "list: or on_leave: delete", *where)  # fmt: skip
        if ns.column in taken:
            raise err(f"table {name!r}: also_names column {ns.column!r} is already a link of "
                      "the table (or named twice)", *where)  # fmt: skip
        taken.add(ns.column)
        member_key = ns.member_key or s.key
        if member_key not in subject_cols:
            raise err(
                f"table {name!r}: member_key {member_key!r} must be the subject's key or "
                f"login_column ({', '.join(sorted(c for c in subject_cols if c))})",
                *where,
            )
        if ns.column in ns.blank:
            raise err(f"table {name!r}: {ns.column} is cleared anyway; do not list it under "
                      "blank:", *where)  # fmt: skip
        bad = [c for c in ns.blank if c in keys or c in taken]
        if bad:
            raise err(f"table {name!r}: also_names blank: {bad[0]!r} is a key or link column; "
                      "it cannot be cleared", *where)  # fmt: skip
        if ns.list_ is not None:
            # Other members' entries stay: nothing else of the row is the leaver's alone.
            if not ns.list_.strip() or ns.list_ != ns.list_.strip():
                raise err(f"table {name!r}: also_names list: give the separator, e.g. \",\"",
                          *where, "list")  # fmt: skip
            if ns.blank or ns.set:
                raise err(f"table {name!r}: also_names {ns.column!r} is a list: only the "
                          "leaver's entries are removed, so it takes no blank: or set:",
                          *where)  # fmt: skip
        if ns.on_leave == "delete" and (ns.blank or ns.set or ns.list_ is not None):
            raise err(f"table {name!r}: also_names {ns.column!r} deletes the row when that "
                      "member leaves: it takes no blank:, set: or list:", *where)  # fmt: skip
        cleared = (ns.column, *ns.blank)
        stray = [c for c in ns.set if c not in cleared]
        if stray:
            raise err(f"table {name!r}: also_names set: {stray[0]!r} is neither the column nor "
                      "listed under blank:", *where)  # fmt: skip
        out.append(MemberLink(ns.column, member_key, tuple(ns.blank), tuple(ns.set.items()),
                              ns.list_, ns.on_leave == "delete",
                              template=ns.format))  # fmt: skip
    return tuple(out)


def _why_not_deleted(
    name: str,
    ts: _TableSpec,
    specs: dict[str, _TableSpec],
    columns: dict[str, tuple[str, ...]],
    rules: dict[str, Any],
    templates: list[FileTemplate],
    file_cols: list[str],
) -> str | None:
    """Why rows of ``name`` cannot be deleted when a member they name leaves (None: they can):
    the row is its owner's, so nothing of it may be kept or hang off it."""
    kept = [c for c in columns if not rules[c].period.is_zero]
    if kept:
        return f"category {kept[0]!r} has a retention period (only 0d categories can go)"
    if templates or file_cols:
        return "it names files (their owner's)"
    child = next((n for n, t in specs.items() if t.via and t.via.table == name), None)
    if child:
        return f"table {child!r} reaches it via:"
    if not (ts.subject_column or ts.members or ts.via or ts.owner):
        return "no member owns it"
    return None


def _text_ids(
    ts: _TableSpec, name: str, links: list[MemberLink], err: Any, base: tuple[Any, ...]
) -> tuple[str, ...]:
    """``text_ids: [user_id]``: link columns that hold an integer id as text."""
    link_cols = (
        {lk.column for lk in links}
        | {ns.column for ns in ts.also_names}
        | ({ts.via.column} if ts.via else set())
    )
    for i, c in enumerate(ts.text_ids):
        if c not in link_cols:
            raise err(
                f"table {name!r}: text_ids lists {c!r}, which is not a link column of the table "
                "(subject_column, members: or via: column)",
                *base,
                "text_ids",
                i,
            )
    return tuple(ts.text_ids)


def _marker_store(spec: Any) -> MetaMarker | str | None:
    if isinstance(spec, _MetaMarkerSpec):
        return MetaMarker(spec.table, spec.column, spec.key_column, spec.key, spec.value,
                          spec.format)  # fmt: skip
    return LIFECYCLE_MARKER if spec == LIFECYCLE_MARKER else None


def _owner(
    ts: _TableSpec,
    name: str,
    keys: tuple[str, ...],
    subject_cols: set[Any],
    subject: Subject,
    err: Any,
    base: tuple[Any, ...],
) -> Owner | None:
    """``owner: {table, column, key_column, key, value}``: the meta row naming the member."""
    o = ts.owner
    if o is None:
        return None
    member_key = o.member_key or subject.key
    if member_key not in subject_cols:
        raise err(
            f"table {name!r}: owner.member_key {member_key!r} must be the subject's key or "
            "login_column",
            *base,
            "owner",
        )
    row_key = o.row_key or (keys[0] if len(keys) == 1 else "")
    if not row_key:
        raise err(f"table {name!r}: owner on a composite-key table needs row_key", *base,
                  "owner")  # fmt: skip
    if o.table == (ts.table or name):
        raise err(f"table {name!r}: owner names its own table", *base, "owner", "table")
    held: list[tuple[str, str]] = []
    if o.identities and row_key not in keys:
        raise err(
            f"table {name!r}: owner.identities needs the owner's row_key to be the table's key",
            *base,
            "owner",
            "identities",
        )
    for kind, key in o.identities.items():
        where = (*base, "owner", "identities", kind)
        theirs = {"email": subject.email_column, "mobile": subject.mobile_column}
        if kind not in theirs:
            raise err(f"table {name!r}: unknown identity {kind!r} (known: email, mobile)", *where)
        if theirs[kind] is None:
            raise err(
                f"table {name!r}: owner.identities.{kind} needs subject.contact.{kind} (the "
                "member table's column to compare it with)",
                *where,
            )
        if not key or key == o.key:
            raise err(
                f"table {name!r}: owner.identities.{kind} must name a meta key other than the "
                f"owner's own ({o.key!r})",
                *where,
            )
        held.append((kind, key))
    return Owner(o.table, o.column, o.key_column, o.key, o.value, member_key, row_key,
                 tuple(held))  # fmt: skip


def _identities(
    ts: _TableSpec,
    name: str,
    owner: dict[str, str],
    subject: Subject,
    err: Any,
    base: tuple[Any, ...],
) -> tuple[tuple[str, str], ...]:
    """``identities: {email: od_email, mobile: od_hp}``: columns that hold the identity of the
    row's own member, checked against the member table's contact columns (linkage)."""
    contact = {"email": subject.email_column, "mobile": subject.mobile_column}
    out: list[tuple[str, str]] = []
    for kind, col in ts.identities.items():
        where = (*base, "identities", kind)
        if kind not in contact:
            raise err(f"table {name!r}: unknown identity {kind!r} (known: email, mobile)", *where)
        if contact[kind] is None:
            raise err(
                f"table {name!r}: identities.{kind} needs subject.contact.{kind} (the member "
                "table's column to compare it with)",
                *where,
            )
        if col not in owner:
            raise err(
                f"table {name!r}: identity column {col!r} must also be listed under a category",
                *where,
            )
        out.append((kind, col))
    return tuple(out)


def _check_anchors(
    ts: _TableSpec,
    name: str,
    columns: dict[str, tuple[str, ...]],
    rules: dict[str, Rule],
    err: Any,
    subject_table: str,
    dated: bool,
) -> None:
    """What each retained category of a table counts from must exist and suit its law.
    ``dated``: the table has a record date, its own or its parent's (:func:`_dated`)."""
    base = ("tables", name)
    for cat in columns:
        rule = rules[cat]
        if rule.period.is_zero:
            continue
        anchor = rule.anchor or (RECORD if dated else PURPOSE_END)
        if anchor != PURPOSE_END and not dated:
            raise err(
                f"table {name!r}: category {cat!r} counts from {anchor}, which needs the "
                "record's date: give the table retain_from: COLUMN (or hang it off a dated "
                "parent through via:)",
                *base, "columns", cat,
            )  # fmt: skip
        why = anchor_problem(cat, tuple(BY_ID[i] for i in rule.statutes), anchor)
        if why:
            raise err(f"table {name!r}: {why}", *base, "columns", cat)
        if anchor != PURPOSE_END and name == subject_table:
            raise err(
                f"subject table {name!r} cannot count a period from its own date (the member "
                "row would expire while the member is still with the site)",
                *base, "retain_from",
            )  # fmt: skip
    if ts.tax_evidence:
        # A via child with no date of its own takes its parent's, and with it the tax period
        # (an order's lines are the order's evidence: archived as long as the order).
        if not dated:
            raise err(
                f"table {name!r}: tax_evidence needs retain_from: COLUMN (the record's date, "
                "whose tax period sets the deadline), or a via parent whose date it inherits",
                *base,
                "tax_evidence",
            )
        if rules["tax"].period.is_zero or rules["tax"].consent:
            raise err(
                f"table {name!r}: tax_evidence needs a tax rule with a period",
                *base,
                "tax_evidence",
            )
        if rules["tax"].anchor not in (None, TAX_DEADLINE):
            raise err(
                f"table {name!r}: tax_evidence needs the tax rule to count from "
                "tax_filing_deadline",
                *base,
                "tax_evidence",
            )


def explicit_age_of(ts: _TableSpec) -> bool:
    return any(isinstance(pe, dict) and "age" in pe for pe in ts.purpose_end)


def _dated(specs: dict[str, _TableSpec], name: str) -> bool:
    """The table has a record date: its own ``retain_from``, or, reaching one parent through
    ``via`` with no date of its own (no ``retain_from``, no explicit ``age``), its parent's
    (:attr:`TableMap.inherits_from` says the same of the built map)."""
    seen: set[str] = set()
    while name in specs and name not in seen:
        seen.add(name)
        ts = specs[name]
        if ts.retain_from:
            return True
        # A pattern parent (``g5_write_*``): its tables share one entry and one record date.
        if ts.via is None or explicit_age_of(ts) or ts.via.many:
            return False
        name = ts.via.table
    return False


def load_datamap(path: str | Path | None = None, engine: Any = None) -> DataMap:
    """Load and validate the data map: ``path``, else ``LIFECYCLE_DATA_MAP``, else the demo.

    With ``engine`` it is also checked against the real schema (:meth:`DataMap.validate_against`),
    which the engine must do before planning deletions so real foreign keys order them.
    """
    path = map_path(path)
    try:
        size = path.stat().st_size
        if size > MAX_DATAMAP_BYTES:
            raise DataMapError(str(path), None, _too_big(size))
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


def _too_big(size: int) -> str:
    return f"the file is {size} bytes; a data map over {MAX_DATAMAP_BYTES} bytes is refused"


def describe(dm: DataMap) -> Iterable[str]:
    """Human-readable summary lines (table, categories, rule) for dry runs and docs."""
    for table, reason in dm.handled_elsewhere.items():
        yield f"{table}: handled elsewhere: {reason} (handled_elsewhere, not by the lifecycle)"
    for table, conds in dm.ignore_rows.items():
        for w in conds:
            yield f"{table}: rows where {describe_where(w)} are ignored (ignore_rows)"
    yield from describe_links(dm)
    for t in dm.tables_in_dependency_order():
        if t.where or t.table != t.name:
            only = f" where {describe_where(t.where)}" if t.where else ""
            yield f"{t.name}: rows of table {t.table}{only}"
        for lk in t.links:
            if lk.json_path is not None:
                yield (
                    f"{t.name}: member read from the JSON of {lk.column} at {lk.json_path} "
                    f"(a plain positive integer, else no member; no index serves it)"
                )
        for kind, column in t.contact:
            s = dm.subject
            theirs = s.email_column if kind == "email" else s.mobile_column
            yield f"{t.name}: the member's {kind} in {column}, corrected with {s.table}.{theirs}"
        after = next((p.after for p in t.purpose_end if p.kind == "age" and p.after), None)
        if after is not None and t.age is not None:
            # Else the categories' lines say it: their periods count from the record's date.
            yield f"{t.name}: purpose ends by age, {after} after {t.age[0]}"
        for cat in t.categories:
            r = t.retention_for(cat)
            # Tax evidence is kept to the later of its own rule and the tax rule: say both.
            tax = dm.rule("tax") if t.tax_evidence and not r.period.is_zero else None
            also = f", at least {tax.period} from {TAX_DEADLINE} as tax evidence" if tax else ""
            src = t.record_source
            anchor = t.anchor_of(cat)
            if t.inherits_from is not None and src is not None and anchor != PURPOSE_END:
                also = f" (inherits {src[0]}.{src[1]}){also}"
            yield (
                f"{t.name}: {cat} -> {r.period} from {anchor}{also} [{r.basis_ref}] "
                f"({r.legal_basis})"
            )
        for kind, column in t.identities:
            theirs = dm.subject.email_column if kind == "email" else dm.subject.mobile_column
            yield (
                f"{t.name}: identity {kind} in {column}, compared with {dm.subject.table}."
                f"{theirs} ({IDENTITY_RULES[kind]})"  # type: ignore[index]
            )
        yield from describe_guests(dm, t)


def _orphans(spec: bool | _OrphansSpec) -> Orphans:
    if isinstance(spec, bool):
        return Orphans(enabled=spec)
    return Orphans(guests=tuple(spec.guests), guests_below=spec.guests_below)
