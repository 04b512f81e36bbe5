"""Files another live row still names: they are kept, not shredded, when one row naming them goes.

Sites store one upload under several rows (a post copied to another board, an order line and a
review naming the same picture, two members' attachments pointing at one file after a copy). A
row that goes takes its reference with it, but the file belongs to every row naming it: the
shredder gets it only once no live row of any mapped table names it any more. The check runs in
the move's own primary transaction, after its DELETEs and blanks, so the rows this move takes no
longer count and a row another transaction adds afterwards sees a file that is still there.

Both ways a map names a file are searched: file columns (the stored value, raw or resolved
against the site root) and path templates (the path is parsed back into the template's fields,
and the rows holding those field values are looked up).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, not_, or_, select, true, tuple_

from lifecycle.core import dbkind
from lifecycle.engine.context import EngineContext


@dataclass
class Referenced:
    """Paths still named by live rows, with where (``table.column`` or ``table:template``)."""

    where: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, path: str, place: str) -> None:
        self.where[path].add(place)

    @property
    def places(self) -> list[str]:
        return sorted({p for ps in self.where.values() for p in ps})


def still_referenced(paths: Iterable[str], ctx: EngineContext, conn: Connection) -> Referenced:
    """Which of ``paths`` (as the rows held them) a live row of a mapped table still names.

    Runs in ``conn``'s transaction (the move's, after its DELETEs and blanks).
    """
    dm = ctx.datamap
    wanted = list(dict.fromkeys(p for p in paths if p))
    found = Referenced()
    if not wanted:
        return found
    # A column may hold the path as the site wrote it or already resolved: look up both forms.
    resolved = {dm.resolve_path(p): p for p in wanted}
    lookup = list(dict.fromkeys([*wanted, *resolved]))
    step = dbkind.in_chunk(conn)
    for tm in ctx.ordered_tables:
        if not tm.files and not tm.file_templates:
            continue
        t = ctx.table(tm.name)
        # A withdrawn member's kept row (blank_and_keep keeps the login id a template may use)
        # names nothing any more: only other rows count.
        live: ColumnElement[bool] = true()
        if tm.name == dm.subject.table:
            gone = dm.subject.withdrawn_clause(t)
            live = or_(not_(gone), gone.is_(None))
        # Only the entry's rows name files (another meta key's value is not a path).
        live = tm.scoped(t, live)
        for col in tm.files:
            for i in range(0, len(lookup), step):
                names = lookup[i : i + step]
                rows = conn.execute(
                    select(t.c[col]).where(t.c[col].in_(names), live).group_by(t.c[col])
                ).all()
                for (value,) in rows:
                    text = str(value)
                    original = text if text in wanted else resolved.get(dm.resolve_path(text))
                    if original is not None:
                        found.add(original, f"{tm.name}.{col}")
        # Templates built from the same columns (a member's icon and image, both by login id)
        # share one lookup: a statement per batch less for each.
        by_fields: dict[tuple[str, ...], list[Any]] = defaultdict(list)
        for ft in tm.file_templates:
            by_fields[ft.fields].append(ft)
        for fields, templates in by_fields.items():
            keys_of: list[tuple[Any, dict[tuple[str, ...], list[str]]]] = []
            for ft in templates:
                keys: dict[tuple[str, ...], list[str]] = defaultdict(list)
                for p in wanted:
                    parsed = ft.parse(p)
                    if parsed is not None:
                        keys[tuple(parsed[f] for f in fields)].append(p)
                keys_of.append((ft, keys))
            # Bound as the columns' own types: an integer field parsed from a path is text.
            every = dict.fromkeys(key for _ft, keys in keys_of for key in keys)
            kinds = _kinds(t, fields)
            items = [k for k in (_typed(kinds, key) for key in every) if k is not None]
            cols = tuple_(*(t.c[f] for f in fields))
            for i in range(0, len(items), step):
                chunk = items[i : i + step]
                cond = (
                    cols.in_(chunk)
                    if len(fields) > 1
                    else t.c[fields[0]].in_([k[0] for k in chunk])
                )
                hits = conn.execute(
                    select(*(t.c[f] for f in fields), func.count())
                    .where(cond, live)
                    .group_by(*(t.c[f] for f in fields))
                ).all()
                for hit in hits:
                    key = tuple(str(v) for v in hit[: len(fields)])
                    for ft, keys in keys_of:
                        for p in keys.get(key, ()):
                            found.add(p, f"{tm.name}:{ft.template}")
    return found


def _kinds(t: Any, fields: tuple[str, ...]) -> list[type]:
    """The Python type of each field's column (str when the type does not say): looked up once
    per lookup, as SQLAlchemy's ``python_type`` costs tens of microseconds a call."""
    out: list[type] = []
    for f in fields:
        try:
            out.append(t.c[f].type.python_type)
        except NotImplementedError:
            out.append(str)
    return out


def _typed(kinds: list[type], key: tuple[str, ...]) -> tuple[Any, ...] | None:
    """``key`` in the columns' Python types; None when a value cannot be one (no such row)."""
    out: list[Any] = []
    for kind, v in zip(kinds, key, strict=True):
        if kind is int:
            if not v.isdigit():
                return None
            out.append(int(v))
        else:
            out.append(v)
    return tuple(out)
