"""Rows with no member link that belong to the member whose identity they hold.

A guest order (``mb_id`` empty), a guest review or a newsletter table holding only an address
is still a member's personal data when it carries that member's email or mobile number. A
table says so with ``match_identities: [email, mobile]``, naming kinds of its ``identities:``
declaration: at withdrawal, in the sweep and in an access package, its rows whose link is empty
(NULL, ``''`` or ``0``; every row of a table with no link at all) are the member's when one of
those columns, in canonical form (:mod:`lifecycle.datamap.identities`), equals the member's.

Both sides are compared in canonical form, the row's in SQL and the member's in Python, so
``Kim@Example.COM `` finds ``kim@example.com`` and ``+82 10 1234 5678`` finds
``010-1234-5678``. An identity a member who is still with the site also holds names nobody for
sure: rows holding it are left for either, and counted (:mod:`lifecycle.engine.guests`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Integer, String, Text, and_, any_, bindparam, false, func, or_, true
from sqlalchemy.dialects.postgresql import ARRAY

from lifecycle.datamap.identities import (
    RULES,
    IdentityKind,
    mobile_forms,
    normalise,
    sql_normalised,
)
from lifecycle.datamap.model import DataMap, TableMap

# How the one line saying that guest rows were left starts (a withdrawal that completed keeps
# it as its note, and `lifecycle status` lists such requests).
GUEST_NOTE = "guest rows left because a member still with the site shares"


def match_identities(
    kinds: Sequence[str],
    identities: tuple[tuple[str, str], ...],
    held: tuple[tuple[str, str], ...],
    ts: Any,
    name: str,
    err: Any,
    base: tuple[Any, ...],
) -> tuple[str, ...]:
    """The loader's check of ``match_identities:`` (each a kind the table's ``identities:``
    declares; a table linking by one ``subject_column`` or by nothing), or, on a table with
    ``owner:``, a kind its owner's meta rows hold (``held``, from ``owner.identities``)."""
    where = (*base, "match_identities")
    declared = dict(identities)
    if len(set(kinds)) != len(kinds):
        raise err(f"table {name!r}: match_identities lists a kind twice", *where)
    if ts.owner is not None:
        in_meta = dict(held)
        for kind in kinds:
            if kind not in in_meta:
                raise err(
                    f"table {name!r}: match_identities names {kind!r}, which the owner's meta "
                    f"rows do not hold (give owner.identities: {{{kind}: META_KEY}})",
                    *where,
                )
        return tuple(kinds)
    for kind in kinds:
        if kind not in declared:
            raise err(
                f"table {name!r}: match_identities names {kind!r}, which the table's "
                f"identities: does not declare (give identities: {{{kind}: COLUMN}})",
                *where,
            )
    if kinds and (ts.via or ts.members):
        raise err(
            f"table {name!r}: match_identities goes with subject_column or with no relation "
            "(a row reached through via: or members: is never a guest's)",
            *where,
        )
    return tuple(kinds)


def identity_lists(
    columns: Sequence[str],
    matched: tuple[str, ...],
    identities: tuple[tuple[str, str], ...],
    keys: Sequence[str],
    name: str,
    err: Any,
    base: tuple[Any, ...],
) -> tuple[str, ...]:
    """The loader's check of ``identity_lists:`` (matched identity columns holding a list)."""
    where = (*base, "identity_lists")
    cols = {col for kind, col in identities if kind in matched}
    for c in columns:
        if c not in cols:
            raise err(
                f"table {name!r}: identity_lists names {c!r}, which is no column of an identity "
                "listed under match_identities:",
                *where,
            )
    if columns and not keys:
        raise err(f"table {name!r}: identity_lists needs a key (rows are taken by key)", *where)
    return tuple(dict.fromkeys(columns))


# One entry of a list: a line, or a comma- or semicolon-separated item; ``Name <addr>`` is addr.
_ITEMS = re.compile(r"[\r\n,;]+")
_ANGLE = re.compile(r"<([^<>]*)>")


def listed(kind: IdentityKind, value: Any) -> set[str]:
    """The canonical identities of ``kind`` a list value holds (``"Kim <a@b.kr>\nc@d.kr"``)."""
    if not isinstance(value, str):
        return set()
    out: set[str] = set()
    for item in _ITEMS.split(value):
        m = _ANGLE.search(item)
        canonical = normalise(kind, m.group(1) if m else item)
        if canonical is not None:
            out.add(canonical)
    return out


def identity_listed(kind: IdentityKind, col: Any, dialect: str, canonical: Iterable[str]) -> Any:
    """``col`` may list one of ``canonical``: a containment test that narrows the read (no
    index serves it); :func:`listed` decides on each row found."""
    values = sorted(set(canonical))
    if not values:
        return false()
    if kind == "mobile":
        # The digits after the leading 0: found in 010…, 8210… and +82.10… alike.
        expr = sql_normalised(kind, col, dialect)
        return or_(*(expr.contains(v[1:], autoescape=True) for v in values))
    low = func.lower(col)
    return or_(*(low.contains(v, autoescape=True) for v in values))


def matched_columns(tm: TableMap) -> list[tuple[IdentityKind, str]]:
    """``(kind, column)`` of the identities ``tm`` finds its guest rows by in its own columns
    (none for a table with ``owner:``: see :func:`matched_meta`)."""
    if tm.owner is not None:
        return []
    declared = dict(tm.identities)
    return [(k, declared[k]) for k in tm.match_identities]  # type: ignore[misc]


def matched_meta(tm: TableMap) -> list[tuple[IdentityKind, str]]:
    """``(kind, meta key)`` of the identities an ``owner:`` table finds its guest rows by:
    held in its owner's meta rows of that key."""
    if tm.owner is None:
        return []
    held = dict(tm.owner.identities)
    return [(k, held[k]) for k in tm.match_identities]  # type: ignore[misc]


def link_empty(tm: TableMap, t: Any) -> Any:
    """The row names no member: its link is NULL, ``''`` or ``0`` (always, with no link)."""
    if not tm.links:
        return true()
    col = t.c[tm.links[0].column]
    empty = [col.is_(None)]
    if isinstance(col.type, String):
        empty.append(col == "")
    elif isinstance(col.type, Integer):
        empty.append(col == 0)
    return or_(*empty)


def stored_digits(values: Iterable[str]) -> list[str]:
    """What a canonical mobile number's digits may read in a row (``010…``, ``8210…``)."""
    return sorted({f for v in values for f in mobile_forms(v)})


def identity_in(kind: IdentityKind, col: Any, dialect: str, canonical: Iterable[str]) -> Any:
    """``col``, in canonical form, is one of ``canonical`` (one IN list)."""
    values = sorted(set(canonical))
    if not values:
        return false()
    if kind == "mobile":
        values = stored_digits(values)
    return among(sql_normalised(kind, col, dialect), values, dialect)


def among(expr: Any, values: Sequence[Any], dialect: str, type_: Any = None) -> Any:
    """``expr IN values``: on PostgreSQL one array parameter (= ANY), which an index on
    ``expr`` serves like an IN list; a batch's hundreds of values as separate parameters cost
    more to render and send than the statement takes to run."""
    if dialect == "postgresql":
        arr = bindparam(
            None, value=list(values), type_=ARRAY(type_ if type_ is not None else Text())
        )
        return expr == any_(arr)
    return expr.in_(list(values))


def guest_where(tm: TableMap, t: Any, dialect: str, canonical: dict[str, Iterable[str]]) -> Any:
    """Guest rows of ``tm`` holding one of ``canonical`` (kind -> canonical values); for a
    list column, rows that may list one (:func:`identity_listed`)."""
    conds = [
        (identity_listed if col in tm.identity_lists else identity_in)(
            kind, t.c[col], dialect, canonical.get(kind, ())
        )
        for kind, col in matched_columns(tm)
    ]
    return and_(link_empty(tm, t), or_(*conds)) if conds else false()


def describe(dm: DataMap, tm: TableMap) -> list[str]:
    """`datamap explain`'s lines for the table's matching rules."""
    if not tm.match_identities:
        return []
    s = dm.subject
    o = tm.owner
    if o is not None:
        return [
            f"{tm.name}: rows whose owner {o.table} row ({o.key_column} = '{o.key}') names no "
            f"member belong to the member whose {kind} they hold: {o.table}.{o.value} where "
            f"{o.key_column} = '{key}' = {s.table}."
            f"{s.email_column if kind == 'email' else s.mobile_column}, both {RULES[kind]}; "
            "not taken when a member still with the site holds it too"
            for kind, key in matched_meta(tm)
        ]
    link = (
        f"rows whose {tm.links[0].column} is empty (NULL, '' or 0)"
        if tm.links
        else "every row (the table has no member link)"
    )
    out = []
    for kind, col in matched_columns(tm):
        theirs = s.email_column if kind == "email" else s.mobile_column
        holds = (
            f"{col} lists {s.table}.{theirs} (one a line, or separated by , or ;; `Name <addr>` "
            "counts as addr)"
            if col in tm.identity_lists
            else f"{col} = {s.table}.{theirs}"
        )
        out.append(
            f"{tm.name}: {link} belong to the member whose {kind} they hold: {holds}, both "
            f"{RULES[kind]}; not taken when a member still with the site holds it too"
        )
    return out
