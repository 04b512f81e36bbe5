"""A member named inside a JSON value: ``link: {json: data, path: customer_id}``.

OpenCart's ``oc_session`` names its customer only in the JSON of ``data``
(``{"customer_id": 42, ...}``). Rather than ask the operator to ALTER the site's table for a
generated column, the map reads the path in SQL (:class:`json_member`):

- MariaDB/MySQL: ``JSON_UNQUOTE(JSON_EXTRACT(data, '$.customer_id'))`` behind ``JSON_VALID``
  (MariaDB's JSON functions warn on malformed text, and a warning in a DELETE's WHERE is an
  error in strict mode);
- PostgreSQL: ``data::jsonb #>> '{customer_id}'``; the column must be ``json`` or ``jsonb``
  (``datamap check`` refuses text there: PostgreSQL 15 has no test of JSON validity that
  could guard the cast, and a cast of malformed text raises);

then the guarded integer cast of text-held ids (:func:`lifecycle.datamap.links.as_int`): a value
that is not a plain positive integer (``0``, ``"abc"``, an object, a missing key, malformed
JSON) names no member and never raises.

What it costs: no index serves an expression inside a JSON value, so every withdrawal and
sweep batch reads the table whole (one scan per batch, bounded by the table's size);
``datamap check`` says so in a warning line for each such table. A site with a large table of
that kind can still add the generated column and index it, and link by that column instead.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import BigInteger
from sqlalchemy import types as sqltypes
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from lifecycle.datamap.links import INT_TEXT

# A path of plain member names, dotted for nesting (customer.id): inlined into SQL.
PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,7}$")


def path_problem(path: str) -> str | None:
    if not PATH.match(path):
        return (
            f"link.path {path!r} must be member names separated by dots (customer_id, customer.id)"
        )
    return None


def json_column_problem(dialect: str, kind: Any) -> str | None:
    """Why a column of type ``kind`` cannot hold a JSON link on this database (None: it can)."""
    if isinstance(kind, sqltypes.JSON) or type(kind).__name__.upper() in ("JSON", "JSONB"):
        return None
    if dialect == "postgresql":
        return (
            "a JSON link on PostgreSQL needs a json or jsonb column (malformed text could not "
            "be told apart without an error)"
        )
    if not isinstance(kind, sqltypes.String):
        return "a JSON link needs a text or JSON column"
    return None


class json_member(FunctionElement[int]):
    """The member id a JSON text column holds at ``path`` (NULL: none)."""

    type = BigInteger()
    name = "lc_json_member"
    inherit_cache = True

    def __init__(self, col: Any, path: str) -> None:
        assert PATH.match(path)
        self.path = path
        super().__init__(col)


def _col(element: json_member, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(next(iter(element.clauses)), **kw))


@compiles(json_member, "mysql")
@compiles(json_member, "mariadb")
def _mysql(element: json_member, compiler: Any, **kw: Any) -> str:
    col = _col(element, compiler, **kw)
    value = f"JSON_UNQUOTE(JSON_EXTRACT({col}, '$.{element.path}'))"
    return (
        f"(CASE WHEN JSON_VALID({col}) THEN (CASE WHEN {value} REGEXP '{INT_TEXT}' "
        f"THEN CAST({value} AS SIGNED) END) END)"
    )


@compiles(json_member, "postgresql")
def _pg(element: json_member, compiler: Any, **kw: Any) -> str:
    col = _col(element, compiler, **kw)
    value = f"(CAST({col} AS JSONB) #>> '{{{','.join(element.path.split('.'))}}}')"
    return f"(CASE WHEN {value} ~ '{INT_TEXT}' THEN CAST({value} AS BIGINT) END)"


@compiles(json_member)
def _sqlite(element: json_member, compiler: Any, **kw: Any) -> str:
    col = _col(element, compiler, **kw)
    value = f"CAST(json_extract({col}, '$.{element.path}') AS TEXT)"
    return (
        f"(CASE WHEN json_valid({col}) THEN (CASE WHEN {value} REGEXP '{INT_TEXT}' "
        f"THEN CAST({value} AS INTEGER) END) END)"
    )
