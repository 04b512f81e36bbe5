"""Several entries of the data map on one physical table (``table:`` + ``where:``).

A WordPress ``wp_posts`` table holds orders, attachments and pages; ``wp_postmeta`` holds one
row per meta key. Each kind of row is its own map entry with its own link, categories,
retention and purpose end: the entry's name is its label (errors, ledger, archive records,
explain), ``table:`` the physical table, ``where:`` the discriminator condition (column ->
value or list of values) selecting the entry's rows. Entries on one table must be disjoint,
and rows no entry takes must be declared under ``ignore_rows:`` or are reported by
``datamap check`` (:func:`unmatched_rows`).

Pure SQL building and checks; no writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, not_, or_, select

# column -> the values that select a row (a row matches when every column holds one of its).
Where = tuple[tuple[str, tuple[Any, ...]], ...]

# Discriminator values shown in findings are the map's own vocabulary (post types, meta keys),
# never row data; still, cap their length and number so a finding stays one readable line.
_SHOWN_VALUE = 40
_SHOWN_VALUES = 10


def where_clause(where: Where, t: Any) -> Any:
    """The SQL condition selecting ``where``'s rows of table ``t`` (None: every row)."""
    if not where:
        return None
    conds = [
        t.c[col] == values[0] if len(values) == 1 else t.c[col].in_(list(values))
        for col, values in where
    ]
    return conds[0] if len(conds) == 1 else and_(*conds)


def scoped(where: Where, t: Any, cond: Any) -> Any:
    """``cond`` narrowed to ``where``'s rows of ``t`` (unchanged for a whole-table entry)."""
    clause = where_clause(where, t)
    return cond if clause is None else and_(clause, cond)


def disjoint(a: Where, b: Where) -> bool:
    """Whether no row can match both conditions: some column both name with no value in
    common. A whole-table entry (no condition) overlaps every other."""
    other = dict(b)
    return any(col in other and not set(vals) & set(other[col]) for col, vals in a)


def describe_where(where: Where) -> str:
    """``post_type in (shop_order, shop_order_refund)`` for explain and errors."""
    parts = []
    for col, vals in where:
        if len(vals) == 1:
            parts.append(f"{col} = {vals[0]!r}")
        else:
            parts.append(f"{col} in ({', '.join(repr(v) for v in vals)})")
    return " and ".join(parts)


@dataclass(frozen=True)
class Unmatched:
    """Rows of a shared table no entry takes and ``ignore_rows`` does not name."""

    table: str
    columns: tuple[str, ...]
    groups: tuple[tuple[tuple[Any, ...], int], ...]  # discriminator values -> rows

    @property
    def rows(self) -> int:
        return sum(n for _v, n in self.groups)

    def line(self) -> str:
        shown = []
        for values, n in self.groups[:_SHOWN_VALUES]:
            text = ", ".join(f"{c}={_short(v)}" for c, v in zip(self.columns, values, strict=True))
            shown.append(f"{text}: {n}")
        more = len(self.groups) - len(shown)
        tail = f"; and {more} more value(s)" if more > 0 else ""
        return (
            f"table {self.table}: {self.rows} row(s) are matched by no entry of the data map "
            f"({'; '.join(shown)}{tail}): map them in an entry, or list the values under "
            f"ignore_rows.{self.table}"
        )


def _short(v: Any) -> str:
    if v is None:
        return "NULL"
    text = str(v)
    return repr(text if len(text) <= _SHOWN_VALUE else text[:_SHOWN_VALUE] + "...")


def shared_tables(
    entries: Iterable[tuple[str, Where]], ignored: Mapping[str, Sequence[Where]]
) -> dict[str, list[Where]]:
    """physical table -> the conditions of its entries, for tables some entry narrows."""
    by: dict[str, list[Where]] = {}
    for table, where in entries:
        by.setdefault(table, []).append(where)
    out = {t: ws for t, ws in by.items() if any(ws)}
    for t in ignored:
        if t in by and t not in out:
            out[t] = by[t]
    return out


def unmatched_rows(
    conn: Any, t: Any, wheres: Sequence[Where], ignored: Sequence[Where]
) -> Unmatched | None:
    """Count the rows of ``t`` no condition in ``wheres`` or ``ignored`` takes, grouped by
    the discriminator columns (counts and map vocabulary only)."""
    conds = [where_clause(w, t) for w in (*wheres, *ignored)]
    if any(c is None for c in conds):
        return None  # a whole-table entry takes every row
    columns = tuple(dict.fromkeys(col for w in (*wheres, *ignored) for col, _v in w))
    # A NULL discriminator matches no IN list: coalesce the whole test to false.
    taken = or_(*conds)
    keys = [t.c[c] for c in columns]
    q = (
        select(*keys, func.count())
        .where(not_(func.coalesce(taken, False)))
        .group_by(*keys)
        .order_by(func.count().desc())
    )
    groups = tuple((tuple(r[:-1]), int(r[-1])) for r in conn.execute(q))
    if not groups:
        return None
    return Unmatched(t.name, columns, groups)


# -- loading (called by lifecycle.datamap.loader; errors through its ``err``) ------------------

_SCALAR = (str, int)


def parse_where(spec: Mapping[str, Any] | None, err: Any, *path: Any) -> Where:
    """``{post_type: [shop_order, shop_order_refund]}`` -> ``(("post_type", (...)),)``."""
    if spec is None:
        return ()
    if not spec:
        raise err("where: names no column (give column: value or column: [values])", *path)
    out: list[tuple[str, tuple[Any, ...]]] = []
    for col, raw in spec.items():
        values = raw if isinstance(raw, list) else [raw]
        if not values or any(isinstance(v, bool) or not isinstance(v, _SCALAR) for v in values):
            raise err(
                f"where: {col} must be a text or integer value or a non-empty list of them",
                *path,
                col,
            )
        out.append((col, tuple(dict.fromkeys(values))))
    return tuple(out)


def check_entries(
    specs: Mapping[str, Any],
    tables: Mapping[str, Any],
    ignore_rows: Mapping[str, Mapping[str, Any]],
    subject_table: str,
    err: Any,
) -> dict[str, tuple[Where, ...]]:
    """Entries sharing a table have disjoint conditions; the members' table is one entry;
    ``ignore_rows`` names shared tables with conditions no entry overlaps. Returns
    ``ignore_rows`` parsed (physical table -> its conditions)."""
    subject_physical = tables[subject_table].table
    seen: dict[str, list[Any]] = {}
    for name, tm in tables.items():
        base = ("tables", name)
        spec = specs[name]
        if "*" in name and (spec.table is not None or spec.where is not None):
            raise err(f"table pattern {name!r} cannot have table: or where:", *base)
        if name == subject_table and (tm.where or tm.table != name):
            raise err(
                f"subject table {name!r} is the whole members' table: no table: or where:",
                *base,
                "where" if tm.where else "table",
            )
        if tm.table == subject_physical and name != subject_table:
            raise err(
                f"entry {name!r}: table {tm.table} is the members' table, which is one entry",
                *base,
                "table",
            )
        for other in seen.get(tm.table, []):
            if not disjoint(tm.where, other.where):
                raise err(
                    f"entries {other.name!r} and {name!r} may both take rows of table "
                    f"{tm.table}: give them where: conditions on a common column with no "
                    "value in common",
                    *base,
                    "where" if spec.where is not None else "table",
                )
        seen.setdefault(tm.table, []).append(tm)
    out: dict[str, tuple[Where, ...]] = {}
    for table, cond in ignore_rows.items():
        path = ("ignore_rows", table)
        where = parse_where(cond, err, *path)
        entries = seen.get(table)
        if not entries:
            raise err(
                f"ignore_rows: table {table} is not mapped by any entry (a table no entry "
                "maps goes under ignore_tables:)",
                *path,
            )
        for tm in entries:
            if not disjoint(where, tm.where):
                raise err(
                    f"ignore_rows: the rows of {table} it names may be rows of entry "
                    f"{tm.name!r}: give a condition with no value in common with its where:",
                    *path,
                )
        out[table] = (where,)
    return out


def parse_contact(
    spec: Any, name: str, owner: Mapping[str, str], subject: Any, err: Any, base: tuple[Any, ...]
) -> tuple[tuple[str, str], ...]:
    """An entry's ``contact: {email: meta_value}``: its rows hold the member's own current
    email (or mobile), which a correction of the member's contact rewrites."""
    if spec is None:
        return ()
    if name == subject.table:
        raise err(f"table {name!r}: the members' contact goes under subject.contact", *base,
                  "contact")  # fmt: skip
    theirs = {"email": subject.email_column, "mobile": subject.mobile_column}
    out: list[tuple[str, str]] = []
    for kind in ("email", "mobile"):
        col = getattr(spec, kind)
        if col is None:
            continue
        where = (*base, "contact", kind)
        if theirs[kind] is None:
            raise err(
                f"table {name!r}: contact.{kind} needs subject.contact.{kind} (the member's "
                "own column a correction sets)",
                *where,
            )
        if col not in owner:
            raise err(
                f"table {name!r}: contact column {col!r} must also be listed under a category",
                *where,
            )
        out.append((kind, col))
    return tuple(out)
