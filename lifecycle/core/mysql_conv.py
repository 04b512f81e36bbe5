"""PyMySQL's connection set-up for the primary database: how dates and lists are converted.

Kept apart from ``dbkind`` (which needs SQLAlchemy) so that a command that only submits a
request opens a MySQL/MariaDB connection the same way without loading SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any


def _zero_date_aware(decode: Any) -> Any:
    def convert(value: Any) -> Any:
        raw = value.decode() if isinstance(value, bytes | bytearray) else value
        # MySQL/MariaDB allow '0000-00-00' as "no date" (PHP sites use it as a default);
        # PyMySQL hands such values back as strings, which no date arithmetic accepts.
        if isinstance(raw, str) and raw.startswith("0000-00-00"):
            return None
        return decode(value)

    return convert


def _encode_datetime(value: dt.datetime, mapping: Any = None) -> str:
    from pymysql.converters import escape_datetime

    # DATETIME has no time zone: lifecycle tables hold UTC wall-clock time (as on SQLite), so an
    # aware value is converted rather than having its offset silently dropped.
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return escape_datetime(value, mapping)


class SqlList:
    """Values rendered once as a MySQL list, ``('a','b')``, and bound as one parameter.

    A MariaDB sweep batch names the same 500 login ids in some thirty statements; as an
    expanding parameter, SQLAlchemy wrote a placeholder and PyMySQL escaped a value for each id
    of each statement. Rendered once, with the connection's own escaping (its character set
    and ``NO_BACKSLASH_ESCAPES``), the list goes into every statement as it is, through the
    encoder :func:`mysql_connect_args` registers. Use it on the connection that rendered it.
    """

    __slots__ = ("sql",)

    def __init__(self, dbapi_conn: Any, values: Iterable[Any]) -> None:
        escape = dbapi_conn.escape
        self.sql = "(" + ",".join([escape(v) for v in values]) + ")"
        # A connection made elsewhere (not through mysql_connect_args) learns the encoder here.
        dbapi_conn.encoders.setdefault(SqlList, _encode_sql_list)


class SqlRows(SqlList):
    """Rows rendered once as a MySQL ``VALUES`` list, ``(7,'h','/a'),(7,'h','/b')``, bound as
    one parameter: the same ``fixed`` values before ``values``' one value in each row.

    A sweep batch hands the shredder some 8,000 paths; as an executemany the driver escaped
    six values a row, five of them the same in every row. Here the fixed ones are escaped once.
    """

    __slots__ = ()

    def __init__(self, dbapi_conn: Any, fixed: Iterable[Any], values: Iterable[Any]) -> None:
        escape = dbapi_conn.escape
        head = "(" + "".join(escape(v) + "," for v in fixed)
        self.sql = ",".join([head + escape(v) + ")" for v in values])
        dbapi_conn.encoders.setdefault(SqlRows, _encode_sql_list)


def _encode_sql_list(value: SqlList, mapping: Any = None) -> str:
    return value.sql


def mysql_connect_args() -> dict[str, Any]:
    from pymysql import converters
    from pymysql.constants import FIELD_TYPE

    conv = dict(converters.conversions)
    for ft in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.DATE):
        conv[ft] = _zero_date_aware(conv[ft])
    conv[dt.datetime] = _encode_datetime
    conv[SqlList] = _encode_sql_list
    conv[SqlRows] = _encode_sql_list
    return {
        "conv": conv,
        # NOW()/CURRENT_TIMESTAMP in our statements mean UTC, like the values we bind.
        # MariaDB only (it alone runs /*M! ... */): an IN list of 1,000 values or more became
        # a join, which on a column where nearly every row holds one value
        # (g5_member.mb_recommend '', g5_point.po_rel_action) read the whole index in every
        # sweep batch. Such lists are also costed value by value (DIVE_MARK below).
        "init_command": "SET time_zone = '+00:00' /*M!100318 , "
        "in_predicate_conversion_threshold = 0 */",
    }


# Marks an IN list whose column may hold one value in nearly every row (a list of the other
# members a row names: a recommender, a memo-call sender). MariaDB costs a list longer than
# eq_range_index_dive_limit (200) from the column's statistics, which for such a column say
# each value matches the whole table, and planned a read of the whole index in every sweep
# batch, growing with the site; a statement carrying the mark runs with the limit off, each
# value looked up in the index (dive_marked). Not for every list: at 2,000 values a batch's
# other statements (login ids, parent keys: unique or nearly) paid the 2,000 extra index
# descents for nothing, up to 8x the statement (two lists under an OR).
DIVE_MARK = "/*lc:dive*/"
_DIVE_PREFIX = "SET STATEMENT eq_range_index_dive_limit = 0 FOR "


def dive_marked(statement: str) -> str:
    """``statement`` as MariaDB should run it: with the limit off if it carries the mark."""
    if DIVE_MARK in statement and not statement.startswith(_DIVE_PREFIX):
        return _DIVE_PREFIX + statement
    return statement
