"""Links and dates the way real platforms store them, without changing their tables.

- **Text-held integer ids.** A sessions table holding the member id as VARCHAR, a meta row
  holding it in ``meta_value``: such a column is compared with an integer key through a
  guarded cast (:func:`as_int`): text that is not a plain positive integer (``''``, ``'0'``,
  ``'abc'``, ``'042'``) names no member and never raises an SQL error. The cast is on the
  text side, so that comparison cannot use an index on the text column.
- **An owner named in a meta row** (:class:`Owner`): a legacy WooCommerce order is a
  ``wp_posts`` row whose author is the administrator; its customer is the ``wp_postmeta`` row
  ``(post_id = the order, meta_key = '_customer_user', meta_value = '42')``.
- **Withdrawal markers kept elsewhere** (:class:`MetaMarker`, :data:`LIFECYCLE_MARKER`): in a
  meta row of the member (``wp_usermeta``), or in the lifecycle's own table
  ``lifecycle_withdrawals`` for platforms with nowhere to put one.
- **Dates that are not date columns** (:func:`to_datetime`, :func:`db_cutoff`): Unix seconds
  in an INT/BIGINT column (``format: unix``) or text in a strftime format (``%Y%m%d``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, and_, case, cast, column, exists, func, literal, null, select
from sqlalchemy import table as table_clause
from sqlalchemy import types as sqltypes

from lifecycle.core.timeutil import as_utc

# A text value that names a member: a positive integer without a leading zero, at most 18
# digits (BIGINT). Anything else is no member (a guest's '0', an empty string, garbage).
INT_TEXT = "^[1-9][0-9]{0,17}$"

UNIX = "unix"
LIFECYCLE_MARKER = "lifecycle"
LIFECYCLE_TABLE = "lifecycle_withdrawals"


def is_text(t: Any) -> bool:
    return isinstance(t, sqltypes.String | sqltypes.Enum)


def is_int(t: Any) -> bool:
    if isinstance(t, sqltypes.Integer):
        return True
    return isinstance(t, sqltypes.Numeric) and getattr(t, "scale", None) in (0, None)


def as_int(col: Any) -> Any:
    """``col`` (text) as a BIGINT, NULL where it does not hold a plain positive integer: the
    CASE guards the CAST, so PostgreSQL never raises and MariaDB never warns (a warning in a
    DELETE's WHERE is an error in strict mode)."""
    return case((col.regexp_match(INT_TEXT), cast(col, BigInteger)), else_=null())


def member_id(value: Any) -> Any:
    """A link's value as the member id it names: text holding a plain positive integer is
    that integer, other text (a guest's '0' or '') none; anything else is itself."""
    if isinstance(value, str):
        return int(value) if re.fullmatch(INT_TEXT, value) else None
    return value


def coerce(col: Any, like: Any) -> Any:
    """``col`` made comparable with a column of type ``like``: a text column compared with an
    integer one is read through :func:`as_int`; anything else is itself."""
    if is_text(getattr(col, "type", None)) and is_int(like):
        return as_int(col)
    return col


def link_eq(a: Any, b: Any) -> Any:
    """``a = b`` for two link columns, casting whichever side holds an integer as text."""
    return coerce(a, b.type) == coerce(b, a.type)


@dataclass(frozen=True)
class Owner:
    """A row's member named in a meta row: the row of ``table`` whose ``column`` holds this
    row's ``row_key`` and whose ``key_column`` equals ``key`` holds, in ``value``, the
    subject's ``member_key`` (its integer key unless said otherwise). ``identities``: (kind,
    meta key) of the meta rows of the same table holding the row's identity, which a row naming
    no member is matched by (a guest order's ``_billing_email``; ``match_identities:``)."""

    table: str
    column: str
    key_column: str
    key: str
    value: str
    member_key: str
    row_key: str
    identities: tuple[tuple[str, str], ...] = ()

    def rows(self, m: Any) -> Any:
        """The meta rows of this kind (``m``: the meta table or an alias of it)."""
        return m.c[self.key_column] == self.key


@dataclass(frozen=True)
class MetaMarker:
    """A withdrawal recorded in a meta row of the member: the row of ``table`` whose
    ``column`` holds the member's key and ``key_column`` equals ``key``, with the time in
    ``value`` (``format``: strftime, or ``unix``). A non-empty value means withdrawn."""

    table: str
    column: str
    key_column: str
    key: str
    value: str
    format: str


def _meta(marker: MetaMarker) -> Any:
    return table_clause(
        marker.table, column(marker.column), column(marker.key_column), column(marker.value)
    ).alias()


def _lifecycle() -> Any:
    return table_clause(LIFECYCLE_TABLE, column("member_id"), column("withdrawn_at")).alias()


def marker_withdrawn(store: MetaMarker | str, key: Any) -> Any:
    """The member whose key is ``key`` has a withdrawal recorded in ``store``."""
    if isinstance(store, MetaMarker):
        m = _meta(store)
        v = m.c[store.value]
        return exists().where(
            m.c[store.column] == key, m.c[store.key_column] == store.key, v.is_not(None), v != ""
        )
    w = _lifecycle()
    return exists().where(w.c.member_id == key)


def marker_at(store: MetaMarker | str, key: Any) -> Any:
    """The recorded withdrawal's raw value (see :func:`marker_time`), a scalar subquery."""
    if isinstance(store, MetaMarker):
        m = _meta(store)
        return (
            select(func.max(m.c[store.value]))
            .where(m.c[store.column] == key, m.c[store.key_column] == store.key)
            .scalar_subquery()
        )
    w = _lifecycle()
    return select(func.max(w.c.withdrawn_at)).where(w.c.member_id == key).scalar_subquery()


def marker_time(store: MetaMarker | str, value: Any) -> datetime | None:
    if isinstance(store, MetaMarker):
        return to_datetime(value, store.format)
    return as_utc(value) if isinstance(value, datetime) else None


def record_marker(conn: Any, store: MetaMarker | str, member_id: int, when: datetime) -> None:
    """Record that ``member_id`` withdrew at ``when`` in ``store`` (replacing a blank one)."""
    if isinstance(store, MetaMarker):
        m = table_clause(store.table, column(store.column), column(store.key_column),
                         column(store.value))  # fmt: skip
        mine = and_(m.c[store.column] == member_id, m.c[store.key_column] == store.key)
        conn.execute(m.delete().where(mine))
        conn.execute(
            m.insert().values(
                {store.column: member_id, store.key_column: store.key,
                 store.value: from_datetime(when, store.format)}
            )
        )  # fmt: skip
        return
    w = table_clause(LIFECYCLE_TABLE, column("member_id"), column("withdrawn_at"))
    if conn.execute(select(w.c.member_id).where(w.c.member_id == member_id)).first() is None:
        conn.execute(w.insert().values(member_id=member_id, withdrawn_at=as_utc(when)))


def forget_markers(conn: Any, store: MetaMarker | str | None, ids: list[Any]) -> None:
    """Drop the withdrawal markers of members whose own row was deleted: a site that hands
    a deleted member's id out again (an AUTO_INCREMENT reset by a restart) must not find its
    new member withdrawn."""
    ids = sorted({i for i in ids if i is not None})
    if store is None or not ids:
        return
    if isinstance(store, MetaMarker):
        m = table_clause(store.table, column(store.column), column(store.key_column))
        for i in range(0, len(ids), 500):
            conn.execute(
                m.delete().where(m.c[store.column].in_(ids[i : i + 500]),
                                 m.c[store.key_column] == store.key)
            )  # fmt: skip
        return
    w = table_clause(LIFECYCLE_TABLE, column("member_id"))
    for i in range(0, len(ids), 500):
        conn.execute(w.delete().where(w.c.member_id.in_(ids[i : i + 500])))


# -- dates held as numbers or text -------------------------------------------------------------

_SORTABLE = re.compile(r"%[YmdHMS]")


def check_format(fmt: str) -> str | None:
    """Why ``fmt`` cannot be a record date's format, or None. A strftime format must hold
    the year, month and day, in that order and before any time fields, with nothing but
    fixed separators: such text sorts as its dates do, so a cut-off compares in SQL."""
    if fmt == UNIX:
        return None
    fields = _SORTABLE.findall(fmt)
    rest = _SORTABLE.sub("", fmt)
    order = ["%Y", "%m", "%d", "%H", "%M", "%S"]
    if fields[:3] != order[:3] or fields != order[: len(fields)] or "%" in rest:
        return (
            f"format {fmt!r} is not unix nor a strftime format listing %Y, %m, %d (then "
            "optionally %H, %M, %S) in that order with fixed separators"
        )
    try:
        sample = datetime(2024, 1, 31, 5, 6, 7).strftime(fmt)
        datetime.strptime(sample, fmt)
    except ValueError:
        return f"format {fmt!r} does not read back what it writes"
    return None


def to_datetime(value: Any, fmt: str | None) -> datetime | None:
    """A stored date as a UTC datetime (None: no date, or one that does not parse)."""
    if value is None or value == "":
        return None
    if fmt is None:
        return as_utc(value) if isinstance(value, datetime) else value
    if fmt == UNIX:
        try:
            n = int(value)
        except (TypeError, ValueError):
            return None
        return datetime.fromtimestamp(n, UTC) if n > 0 else None
    try:
        return as_utc(datetime.strptime(str(value).strip(), fmt))
    except ValueError:
        return None


def from_datetime(when: datetime, fmt: str) -> Any:
    if fmt == UNIX:
        return int(as_utc(when).timestamp())
    return as_utc(when).strftime(fmt)


def db_cutoff(col: Any, cutoff: datetime, fmt: str | None) -> Any:
    """``col`` holds a date before ``cutoff``, compared in the column's own representation
    (so an index on it serves the comparison), exactly: a text date stands for the start of
    its day (or second), which is before ``cutoff`` unless ``cutoff`` falls on that start."""
    cutoff = as_utc(cutoff)
    if fmt is None:
        floor = datetime(1000, 1, 1, tzinfo=cutoff.tzinfo)
        # MySQL's zero date sorts before every cut-off but holds no date: such a row stays.
        return and_(col < cutoff, col >= floor)
    if fmt == UNIX:
        return and_(col < math.ceil(cutoff.timestamp()), col > 0)
    text = cutoff.strftime(fmt)
    start = to_datetime(text, fmt)
    below = col <= literal(text) if start is not None and start < cutoff else col < literal(text)
    return and_(below, col >= literal(datetime(1000, 1, 1).strftime(fmt)))


def describe_links(dm: Any) -> Iterable[str]:
    """``datamap explain`` lines for where withdrawals are kept, meta owners and dates held
    as numbers or text (``dm``: a DataMap)."""
    sub = dm.subject
    store = sub.marker_store
    if isinstance(store, MetaMarker):
        yield (
            f"{sub.table}: withdrawn when a {store.table} row with {store.column} = the "
            f"member's {sub.key} and {store.key_column} = '{store.key}' holds a value in "
            f"{store.value} ({_fmt_text(store.format)}); `lifecycle withdraw` writes it"
        )
    elif store == LIFECYCLE_MARKER:
        yield (
            f"{sub.table}: withdrawn when {LIFECYCLE_TABLE} holds the member's {sub.key} "
            "(the lifecycle's own table; `lifecycle withdraw` writes it)"
        )
    for t in dm.tables_in_dependency_order():
        o = t.owner
        if o is not None:
            yield (
                f"{t.name}: member named in {o.table}.{o.value} (its {sub.table}.{o.member_key}) "
                f"where {o.key_column} = '{o.key}' and {o.column} = {t.name}.{o.row_key}; a "
                "value that is no positive integer ('0', '') names no member (a guest)"
            )
            for kind, key in o.identities:
                yield (
                    f"{t.name}: holds its {kind} in {o.table}.{o.value} where {o.key_column} = "
                    f"'{key}' and {o.column} = {t.name}.{o.row_key}"
                )
        if not (t.links or t.via or t.owner or t.match_identities) and t.also_names:
            yield f"{t.name}: rows no member owns; they stay, only the members they name leave them"
        for lk in t.also_names:
            if lk.separator is not None:
                yield (
                    f"{t.name}: lists members in {lk.column} (their {sub.table}.{lk.member_key}, "
                    f"separated by {lk.separator!r}); when one leaves their entries are removed "
                    "and the others kept; no index serves the search (the table is read whole); "
                    "their access package holds the row's key and their entry"
                )
                continue
            if lk.deletes:
                yield (
                    f"{t.name}: also names a member in {lk.column} (their {sub.table}."
                    f"{lk.member_key}); when that member leaves the row is deleted (it is its "
                    "owner's, with nothing kept); their access package holds that column only"
                )
                continue
            given = dict(lk.values)
            how = ", ".join(
                f"{c} set to {given[c]!r}" if c in given else f"{c} blanked" for c in lk.cleared
            )
            spelled = f", written {lk.template!r}" if lk.template is not None else ""
            yield (
                f"{t.name}: also names a member in {lk.column} (their {sub.table}.{lk.member_key}"
                f"{spelled}); when that member leaves the row stays for its owner with {how}; "
                "their access package holds those columns only"
            )
        for col in t.text_ids:
            yield (
                f"{t.name}: {col} holds the integer id as text, compared through a guarded cast "
                "(no index serves it; text that is no positive integer names no member)"
            )
        for col, fmt in t.date_formats:
            yield f"{t.name}: date {col} held as {_fmt_text(fmt)}, compared in that form"


def _fmt_text(fmt: str) -> str:
    return "Unix seconds" if fmt == UNIX else f"text {fmt}"
