"""Which identity-matched columns (``match_identities:``) no index serves.

Guest rows are found by the canonical form of a column (``lower(trim(od_email))``, the digits
of ``od_hp``), computed in SQL. On PostgreSQL an index on that very expression serves the
lookup; an index on the plain column does not. MariaDB and MySQL 8 cannot use an index for a
function of a column here, so there the table's member link is what narrows the read to the
rows that name no member (its index is advised by :mod:`lifecycle.datamap.indexes`), and a
table matched by identity alone is read whole by every withdrawal and every sweep batch that
has a member to look for. Advice for `lifecycle datamap check`, never a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from lifecycle.datamap.guest_rows import matched_columns
from lifecycle.datamap.model import DataMap

# The canonical expression as PostgreSQL prints it in an index definition, and as we create it.
_PG_SEEN = {
    "email": ("lower(trim(both from {col}))",),
    # A varchar column is cast to text in the definition; a text column is not.
    "mobile": (
        "regexp_replace(({col})::text, '[^0-9]'::text, ''::text, 'g'::text)",
        "regexp_replace({col}, '[^0-9]'::text, ''::text, 'g'::text)",
    ),
}
_PG_MAKE = {
    "email": "lower(trim({col}))",
    "mobile": "regexp_replace({col}, '[^0-9]', '', 'g')",
}


@dataclass(frozen=True)
class IdentityGap:
    table: str
    column: str
    kind: str
    statement: str | None  # the CREATE INDEX to run, None where no index can serve
    listed: bool = False  # an ``identity_lists`` column: searched by containment

    def __str__(self) -> str:
        if self.listed:
            return (
                f"table {self.table} lists {self.kind} values in {self.column} "
                "(identity_lists): no index serves the search, so every withdrawal and sweep "
                "batch reads the whole table"
            )
        if self.statement is None:
            return (
                f"table {self.table} is matched by {self.kind} alone ({self.column}, no member "
                "link): MariaDB/MySQL cannot index its canonical form, so every withdrawal and "
                "sweep batch reads the whole table"
            )
        return (
            f"table {self.table}: no index on the canonical {self.kind} of {self.column}: "
            f"finding guest rows reads the whole table; add one: {self.statement}"
        )


def _squash(sql: str) -> str:
    return " ".join(sql.lower().replace('"', "").split())


def _pg_definitions(conn: Any, table: str) -> list[str]:
    rows = conn.execute(
        text("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND "
             "tablename = :t"),
        {"t": table},
    )  # fmt: skip
    return [_squash(r[0]) for r in rows]


def identity_gaps(dm: DataMap, engine: Any) -> list[IdentityGap]:
    """Identity-matched columns of ``dm``'s tables (an expanded map) no index serves."""
    out: list[IdentityGap] = []
    pg = engine.dialect.name == "postgresql"
    wanted: dict[tuple[str, str], str] = {}  # (table, column) -> kind
    s = dm.subject
    for tm in dm.tables.values():
        for kind, col in matched_columns(tm):
            if col in tm.identity_lists:
                out.append(IdentityGap(tm.name, col, kind, None, listed=True))
                continue
            if pg:
                wanted[(tm.name, col)] = kind
                theirs = s.email_column if kind == "email" else s.mobile_column
                if theirs:
                    # Who else holds a value found in guest rows: looked up in the members'.
                    wanted[(s.table, theirs)] = kind
            elif not tm.links:
                out.append(IdentityGap(tm.name, col, kind, None))
    if not wanted:
        return out
    with engine.connect() as conn:
        existing = {
            r[0]
            for r in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            )
        }
        defs = {t: _pg_definitions(conn, t) for t, _c in wanted if t in existing}
    for (table, col), k in sorted(wanted.items()):
        if table not in defs:
            continue
        seen = [_squash(f.format(col=col)) for f in _PG_SEEN[k]]
        if any(form in d for d in defs[table] for form in seen):
            continue
        name = f"lc_{table}_{col}_canonical"[:63]
        expr = _PG_MAKE[k].format(col=f'"{col}"')
        out.append(IdentityGap(table, col, k, f'CREATE INDEX "{name}" ON "{table}" (({expr}))'))
    return out
