"""The outbox row's INSERT, written once, on a plain DB-API connection.

Every submitter runs this: the command line's submit path on its own psycopg or PyMySQL
connection (``lifecycle.cli.submit_plan``, which must not load SQLAlchemy), and the ORM callers
(``outbox.submit``: the console, the Python client, the rights' commands) on their session's
own driver connection, inside their transaction. The row is therefore the same whichever path
wrote it (tests/rights/test_lean_submit.py compares them column by column).

No SQLAlchemy here: the values are converted as its column types would (JSON text, naive
UTC text on SQLite; PyMySQL's encoder from ``mysql_conv`` turns aware times into UTC).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

# The columns a submit writes; the others keep their server defaults (NULL).
COLUMNS = (
    "kind",
    "member_id",
    "payload",
    "state",
    "idempotency_key",
    "attempts",
    "actor",
    "created_at",
    "updated_at",
    "requester_kind",
    "requester_name",
    "requester_contact",
    "verified_by",
    "due_at",
    "received_via",
)
# Who asked: the request's columns a caller may set (``Requester.columns``).
REQUESTER_COLUMNS = (
    "requester_kind",
    "requester_name",
    "requester_contact",
    "verified_by",
    "received_via",
    "actor",
)
FAMILIES = ("postgresql", "mysql", "sqlite")


def _param(family: str, name: str) -> str:
    # sqlite3 takes named parameters; psycopg and PyMySQL the pyformat style.
    return f":{name}" if family == "sqlite" else f"%({name})s"


def insert_sql(family: str) -> str:
    """The INSERT for ``family`` (see ``FAMILIES``). PostgreSQL and SQLite skip a row whose
    idempotency key exists and return nothing then; MySQL has no such clause that leaves other
    errors alone (INSERT IGNORE turns them into warnings), so :func:`insert_request` catches
    the duplicate there inside a savepoint."""
    if family not in FAMILIES:
        raise ValueError(f"no outbox INSERT for {family!r}")
    cols = ", ".join(COLUMNS)
    vals = ", ".join(_param(family, c) for c in COLUMNS)
    sql = f"INSERT INTO lifecycle_requests ({cols}) VALUES ({vals})"
    if family == "mysql":
        return sql
    return sql + " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"


def lookup_sql(family: str, *, lock: bool) -> str:
    sql = f"SELECT id FROM lifecycle_requests WHERE idempotency_key = {_param(family, 'key')}"
    if not lock or family == "sqlite":
        return sql
    # A locking read sees the winner's committed row even under REPEATABLE READ (MariaDB). A
    # shared one: InnoDB leaves every loser of the race holding a shared lock on the winner's
    # key (its failed duplicate check; rolling back to the savepoint keeps it), so FOR UPDATE
    # would make two losers wait on each other, and MariaDB breaks that deadlock by rolling
    # back a loser's whole transaction: the website's own work with it.
    return sql + (" LOCK IN SHARE MODE" if family == "mysql" else " FOR SHARE")


def row_values(
    kind: str,
    member_id: int,
    *,
    state: str,
    created_at: datetime,
    due_at: datetime,
    payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
    requester: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The new row's values, as the request model's defaults make them (a member's own
    request, checked by the site's login, by nobody in particular)."""
    values: dict[str, Any] = {
        "kind": kind,
        "member_id": member_id,
        "payload": payload,
        "state": state,
        "idempotency_key": idempotency_key,
        "attempts": 0,
        "actor": actor,
        "created_at": created_at,
        "updated_at": created_at,
        "requester_kind": "member",
        "requester_name": None,
        "requester_contact": None,
        "verified_by": "login",
        "due_at": due_at,
        "received_via": None,
    }
    for name, value in (requester or {}).items():
        if name not in REQUESTER_COLUMNS:
            raise ValueError(f"{name!r} is not a requester column")
        if name != "actor" or value is not None:  # no actor given keeps the submitter's
            values[name] = value
    if values["actor"]:
        values["actor"] = str(values["actor"])[:128]
    else:
        values["actor"] = None
    return values


def _bound(family: str, values: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(values)
    # What SQLAlchemy's JSON type writes, None included: the JSON text 'null', not SQL NULL.
    text = json.dumps(out["payload"])
    if family == "postgresql":
        from psycopg.types.json import Json  # the driver in use; its adapter is loaded already

        out["payload"] = Json(out["payload"], dumps=lambda _obj: text)
    else:
        out["payload"] = text
    if family == "sqlite":
        # SQLAlchemy's SQLite DATETIME text (the values are UTC already).
        for name in ("created_at", "updated_at", "due_at"):
            if out[name] is not None:
                out[name] = out[name].strftime("%Y-%m-%d %H:%M:%S.%f")
    return out


def lookup(dbapi_conn: Any, family: str, key: str, *, lock: bool) -> int | None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(lookup_sql(family, lock=lock), {"key": key})
        row = cur.fetchone()
    finally:
        cur.close()
    return int(row[0]) if row is not None else None


def insert_request(dbapi_conn: Any, family: str, values: Mapping[str, Any]) -> int:
    """Insert the request inside the connection's open transaction; returns its id.

    With an idempotency key a second submit returns the first request's id instead of creating
    another (the website may retry its own transaction), also when the two race: the loser
    gets the winner's id and the caller's transaction stays usable.
    """
    key = values.get("idempotency_key")
    if key is not None:
        existing = lookup(dbapi_conn, family, key, lock=False)
        if existing is not None:
            return existing
    params = _bound(family, values)
    cur = dbapi_conn.cursor()
    try:
        if family != "mysql":
            cur.execute(insert_sql(family), params)
            row = cur.fetchone()
            if row is not None:
                return int(row[0])
        else:
            from pymysql.err import IntegrityError  # the driver in use: loaded already

            # The savepoint opens before the row is written, so the unique-key violation of a
            # lost race rolls back only the savepoint, never the caller's transaction.
            cur.execute("SAVEPOINT lc_outbox_submit")
            try:
                cur.execute(insert_sql(family), params)
            except IntegrityError:
                cur.execute("ROLLBACK TO SAVEPOINT lc_outbox_submit")
                if key is None:
                    raise
            else:
                new_id = int(cur.lastrowid)  # read before the next statement resets it
                cur.execute("RELEASE SAVEPOINT lc_outbox_submit")
                return new_id
    finally:
        cur.close()
    if key is None:  # pragma: no cover - a conflict needs a key
        raise RuntimeError("outbox INSERT wrote no row")
    existing = lookup(dbapi_conn, family, key, lock=True)
    if existing is None:
        raise RuntimeError("outbox INSERT skipped a duplicate key that is not there")
    return existing
