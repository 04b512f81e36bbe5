"""Which link columns of a site's tables have no index the engine's statements can use.

Every sweep batch and withdrawal selects a member's rows by their link column (``mb_id``), and
a ``via`` table's rows by the column pointing at their parent (``wr_id``, after ``bo_table``
when the parent is chosen by ``match``). Without an index leading with that column, each such
statement reads the whole table: the sweep still works, but its cost grows with the table
times the number of batches. The same holds for the columns a destroyed file's path is looked
up by (:mod:`lifecycle.engine.shared_files`: does a live row still name it?): a file column,
or a path template's fields (``bo_table, bf_file`` of ``data/file/{bo_table}/{bf_file}``).
The site's schema is not ours, so this is advice (printed by `lifecycle datamap check`, with
the statement to run), never a refusal.

A text column holding an integer member id (a sessions table's VARCHAR ``user_id``) is compared
through a cast (:mod:`lifecycle.datamap.links`), which no index on the column serves: the
advice says so instead of proposing an index that would not help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect
from sqlalchemy import types as sqltypes

from lifecycle.datamap.links import is_int, is_text
from lifecycle.datamap.model import DataMap


@dataclass(frozen=True)
class MissingIndex:
    table: str
    columns: tuple[str, ...]
    # The column holds an integer id as text: compared through a cast, no index serves it.
    cast: bool = False
    # The columns a destroyed file's path is looked up by, rather than a member link.
    files: bool = False
    # The member is read at this path inside the column's JSON: no index serves it.
    json_path: str | None = None

    @property
    def name(self) -> str:
        return ("lc_" + "_".join(self.columns))[:64]

    def statement(self) -> str:
        cols = ", ".join(f"`{c}`" for c in self.columns)
        return f"CREATE INDEX `{self.name}` ON `{self.table}` ({cols})"

    def __str__(self) -> str:
        if self.json_path is not None:
            return (
                f"table {self.table} names its member inside the JSON of {self.columns[0]} "
                f"(path {self.json_path}), which no index serves: every withdrawal and sweep "
                "batch reads the whole table (a generated column holding the id, indexed, "
                "would be indexable)"
            )
        if self.cast:
            return (
                f"table {self.table} links through {', '.join(self.columns)}, text holding an "
                "integer id: it is compared through a cast, which no index serves, so every "
                "sweep batch reads the whole table (an integer column would be indexable)"
            )
        if self.files:
            return (
                f"table {self.table} has no index on ({', '.join(self.columns)}): every sweep "
                "batch that destroys a file reads the whole table to see whether another row "
                f"still names it; add one: {self.statement()}"
            )
        return (
            f"table {self.table} has no index on ({', '.join(self.columns)}): every sweep batch "
            f"reads the whole table to find its members' rows; add one: {self.statement()}"
        )


def _leading(insp: Any, table: str) -> list[tuple[str, ...]]:
    """The column lists of the table's primary key and indexes."""
    out: list[tuple[str, ...]] = []
    pk = insp.get_pk_constraint(table).get("constrained_columns") or []
    if pk:
        out.append(tuple(pk))
    for ix in insp.get_indexes(table):
        names = tuple(c for c in ix.get("column_names") or [] if c)
        if names:
            out.append(names)
    for uc in insp.get_unique_constraints(table):
        names = tuple(uc.get("column_names") or ())
        if names:
            out.append(names)
    return out


def missing_indexes(dm: DataMap, engine: Any) -> list[MissingIndex]:
    """Link and ``via`` columns of ``dm``'s tables (an expanded map) that lead no index."""
    insp = inspect(engine)
    existing = set(insp.get_table_names())
    out: list[MissingIndex] = []
    s = dm.subject
    wanted: dict[str, list[tuple[str, ...]]] = {}
    casts: list[MissingIndex] = []
    key_int = s.table in existing and _is_int(insp, s.table, s.key)
    for tm in dm.tables.values():
        name = tm.table  # entries sharing a table share its indexes
        if name not in existing:
            continue
        for lk in (*tm.links, *tm.also_names):
            if lk.separator is not None:
                continue  # a list is searched by containment: no index serves it
            if lk.json_path is not None:
                casts.append(MissingIndex(name, (lk.column,), cast=True, json_path=lk.json_path))
            elif (
                name != s.table
                and lk.member_key == s.key
                and key_int
                and _is_text(insp, name, lk.column)
            ):
                casts.append(MissingIndex(name, (lk.column,), cast=True))
            elif name != s.table or lk in tm.also_names:
                # (The members' own table too, where a column names another member: a
                # recommender's login id, found by value for every leaver.)
                wanted.setdefault(name, []).append((lk.column,))
            if lk.member_key != s.key:
                # The members' login ids are looked up by value.
                wanted.setdefault(s.table, []).append((lk.member_key,))
        if tm.via is not None:
            v = tm.via
            cols: tuple[str, ...] = (v.match, v.column) if v.match else (v.column,)
            parents = [tn for _v, tn in v.tables] if v.match else [v.table]
            if _is_text(insp, name, v.column) and any(
                p in existing and _is_int(insp, p, v.parent_key) for p in parents
            ):
                casts.append(MissingIndex(name, (v.column,), cast=True))
            else:
                wanted.setdefault(name, []).append(cols)
        o = tm.owner
        if o is not None and o.table in existing:
            # Owned rows are found by the meta key, then by the row's key.
            wanted.setdefault(o.table, []).extend([(o.key_column,), (o.column,)])
            if o.member_key == s.key and key_int and _is_text(insp, o.table, o.value):
                casts.append(MissingIndex(o.table, (o.value,), cast=True))
    files: dict[str, list[tuple[str, ...]]] = {}
    for tm in dm.tables.values():
        if tm.table not in existing:
            continue
        types = _types(insp, tm.table)
        for cols in [(c,) for c in tm.files] + [ft.fields for ft in tm.file_templates]:
            # A TEXT/BLOB column takes only a prefix index, which the advice cannot size.
            if cols and all(_indexable(types.get(c)) for c in cols):
                files.setdefault(tm.table, []).append(cols)
    for name in sorted(set(wanted) | set(files)):
        have = _leading(insp, name)
        for cols in dict.fromkeys(wanted.get(name, [])):
            # (match, column) is served by an index on the column alone too.
            if not any(ix[: len(c)] == c for ix in have for c in (cols, cols[-1:])):
                out.append(MissingIndex(name, cols))
        linked = {m.columns for m in out if m.table == name}
        for cols in dict.fromkeys(files.get(name, [])):
            if cols not in linked and not any(ix[: len(cols)] == cols for ix in have):
                out.append(MissingIndex(name, cols, files=True))
    return out + list(dict.fromkeys(casts))


def _indexable(kind: Any) -> bool:
    """A column a plain index takes whole: not TEXT/BLOB (those need a prefix length)."""
    if kind is None:
        return False
    if isinstance(kind, sqltypes.String | sqltypes.LargeBinary):
        return getattr(kind, "length", None) is not None and not isinstance(
            kind, sqltypes.Text | sqltypes.LargeBinary
        )
    return True


def _types(insp: Any, table: str) -> dict[str, Any]:
    return {c["name"]: c["type"] for c in insp.get_columns(table)}


def _is_text(insp: Any, table: str, column: str) -> bool:
    return is_text(_types(insp, table).get(column))


def _is_int(insp: Any, table: str, column: str) -> bool:
    return is_int(_types(insp, table).get(column))
