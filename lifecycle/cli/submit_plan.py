"""`lifecycle withdraw MEMBER_ID` the short way: the website's submit, on the plain drivers.

The website runs the command for every withdrawal, and its time went mostly to loading the
libraries the command talks through (SQLAlchemy and its ORM, pydantic-settings, Typer and every
command's module: README, "The submit path"), not to the work. So once the full command has run
on a site, it leaves a *submit plan* in ``VAR_DIR/cache/submit-plan.json``: the statements it
needs, written for the primary's server from the data map's ``subject:`` section, and the
connection parameters of both databases (never a password). The console script
(``lifecycle.cli.entry``) then runs ``withdraw MEMBER_ID`` with this module alone, on psycopg or
PyMySQL: the same member row lock, the same outbox INSERT (``outbox_sql``), the same access-log
entry with the same hash chain (``access_entry``), the same output.

The plan is used only when nothing it was made from changed: every ``LIFECYCLE_*`` variable and
the ``.env`` file (so the settings it relies on were validated by the full command), the map
file's bytes, and the code (the lifecycle's version and these modules' files). Anything else,
and every case but the plain one, is handed to the full command before anything is written: a
login id, an email or a mobile number as MEMBER_ID, any option (``--wait``, a guardian), a
registered operator list, a member already marked withdrawn or with a request open, an unknown
member, an archive without its pseudonym key, a server error. The full command then says what it
always said, in its own words. The plan is a cache: deleting it costs one slow submit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle import __version__
from lifecycle.cli.operator import claimed_name, unlogged_warning
from lifecycle.core import settings_env
from lifecycle.core.errors import LifecycleError
from lifecycle.core.private_file import read_own_json, write_own
from lifecycle.datamap.withdrawn_rule import withdrawn
from lifecycle.requests import outbox_sql
from lifecycle.vault import access_entry, crypto
from lifecycle.vault.chain import entry_hash

if TYPE_CHECKING:
    from lifecycle.datamap.model import Subject

PLAN_FILE = "submit-plan.json"
# Bumped when the plan's layout changes.
PLAN_FORMAT = 1
ACTION = "withdraw (request)"
SUBMITTED = "withdrawal request {request_id} for member {member_id} submitted"
# The code a plan was made by: the plan is not trusted once any of these files changed.
_CODE_FILES = (
    "cli/submit_plan.py",
    "cli/withdraw.py",
    "cli/operator.py",
    "core/settings.py",
    "core/settings_env.py",
    "core/mysql_conv.py",
    "core/private_file.py",
    "requests/outbox.py",
    "requests/outbox_sql.py",
    "requests/deadlines.py",
    "rights/intake.py",
    "vault/access_entry.py",
    "vault/accesslog.py",
    "vault/chain.py",
    "vault/crypto.py",
    "vault/keystore.py",
)
_PKG = Path(__file__).resolve().parent.parent


def _code_stamp() -> str:
    h = hashlib.sha256(f"{PLAN_FORMAT}\0{__version__}\0{sys.version_info[:2]}".encode())
    files = [_PKG / f for f in _CODE_FILES] + sorted((_PKG / "datamap").glob("*.py"))
    for src in files:
        try:
            st = src.stat()
        except OSError:
            h.update(f"\0{src}:missing".encode())
            continue
        h.update(f"\0{src}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()


def _plan_path() -> Path:
    return settings_env.var_dir() / "cache" / PLAN_FILE


def plan_stamp(map_bytes: bytes) -> str:
    """What a plan is valid for: the settings' sources, the map's bytes, the code."""
    h = hashlib.sha256()
    for part in (settings_env.environment_stamp(), _code_stamp()):
        h.update(part.encode() + b"\0")
    h.update(hashlib.sha256(map_bytes).digest())
    return h.hexdigest()


# -- the short way -------------------------------------------------------------------------------


def plain_withdraw_args(argv: list[str]) -> tuple[str, str] | None:
    """``(operator, MEMBER_ID)`` when ``argv`` is ``[--operator NAME] withdraw MEMBER_ID`` and
    nothing else; None for any other command line."""
    operator = ""
    rest = list(argv)
    if len(rest) >= 2 and rest[0] == "--operator":
        operator, rest = rest[1], rest[2:]
    if len(rest) != 2 or rest[0] != "withdraw" or rest[1].startswith("-"):
        return None
    return operator, rest[1]


def _read_plan() -> dict[str, Any] | None:
    # Statements are run from it: only this OS user's own, unwritable by others.
    return read_own_json(_plan_path(), PLAN_FORMAT)


def _master_key() -> bytes:
    literal = os.environ.get(settings_env.ENV_PREFIX + "MASTER_KEY")
    if literal is not None:
        return settings_env.decode_master_key(literal)
    named = os.environ.get(settings_env.ENV_PREFIX + "MASTER_KEY_FILE")
    path = Path(named) if named else settings_env.default_master_key_file(settings_env.var_dir())
    # A missing file is the full command's to report (or, embedded, to create).
    return settings_env.read_master_key_file(path)


def _password(params: dict[str, Any]) -> str | None:
    url = os.environ.get(params["url_variable"], "")
    return settings_env.connect_params(url)["password"]  # type: ignore[return-value]


def connect_plain(params: dict[str, Any]) -> Any:
    if params["family"] == "mysql":
        import pymysql  # only a MySQL/MariaDB site's submit needs it

        from lifecycle.core.mysql_conv import mysql_connect_args

        return pymysql.connect(
            host=params["host"] or "localhost",
            port=params["port"] or 3306,
            user=params["user"],
            password=_password(params) or "",
            database=params["database"],
            **params["query"],
            **mysql_connect_args(),
        )
    import psycopg  # a PostgreSQL primary or archive: imported once a plan is in hand

    return psycopg.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=_password(params),
        dbname=params["database"],
        **params["query"],
    )


def _ref_for(plan: dict[str, Any], archive: Any, member_id: int) -> str | None:
    """The member's keyed pseudonym, or None when the archive cannot give it as it is (no key
    yet, another master key, no access-log head): the full command handles those."""
    master = _master_key()
    with archive.cursor() as cur:
        cur.execute(plan["ref_key_sql"], {"name": plan["ref_key_name"]})
        row = cur.fetchone()
        cur.execute(plan["head_exists_sql"], {"id": access_entry.HEAD_ID})
        head = cur.fetchone()
    archive.rollback()
    if row is None or head is None or row[1] != crypto.master_key_id(master):
        return None
    return crypto.subject_ref(crypto.unwrap_key(master, bytes(row[0])), member_id)


def _submit(plan: dict[str, Any], primary: Any, member_id: int, actor: str) -> int | None:
    """The withdrawal in one primary transaction, committed; None (rolled back) for any case
    the full command must answer."""
    with contextlib.closing(primary.cursor()) as cur:
        cur.execute(plan["operators_sql"])
        if cur.fetchone() is not None:
            return None  # a register of operators: the full command checks this OS account
        # The withdrawal's transaction starts at the member's lock, as the full command's
        # does (on MariaDB a plain read fixes the transaction's snapshot).
        primary.rollback()
        cur.execute(plan["lock_sql"], {"id": member_id})
        row = cur.fetchone()
        if row is None:
            return None
        state, at = row
        marked = withdrawn(state, plan["withdrawn_value"], marker=False)
        if marked or at is not None:
            return None  # marked by the site already: the full command decides what is left
        cur.execute(plan["open_sql"], {"id": member_id, **plan["open_params"]})
        if cur.fetchone() is not None:
            return None
        now = datetime.now(UTC)
        marks = {"id": member_id, "at": now, "status": plan["withdrawn_value"]}
        cur.execute(plan["update_sql"], marks)
    values = outbox_sql.row_values(
        "withdrawal",
        member_id,
        state=plan["received_state"],
        created_at=now,
        due_at=now + timedelta(days=plan["due_days"]),
        actor=actor,
    )
    request_id = outbox_sql.insert_request(primary, plan["primary"]["family"], values)
    primary.commit()
    return request_id


def _log(plan: dict[str, Any], archive: Any, actor: str, ref: str, request_id: int) -> None:
    """The access-log entry ``accesslog.record`` writes, in an archive transaction of its own."""
    log_entry(plan, archive, actor, "destroy", ACTION, subject_ref=ref, request_id=request_id)


def log_entry(
    plan: dict[str, Any],
    archive: Any,
    actor: str,
    kind: str,
    action: str,
    *,
    subject_ref: str | None = None,
    request_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """One entry as ``accesslog.record`` writes it, committed, with the statements of
    :func:`access_log_sql` in ``plan``; False (nothing written) when the log has no head yet."""
    from psycopg.types.json import Json  # the archive's driver, loaded by its connection

    with archive.cursor() as cur:
        cur.execute(plan["head_lock_sql"], {"id": access_entry.HEAD_ID})
        head = cur.fetchone()
        if head is None:
            archive.rollback()
            return False
        seq, prev = head
        fields = access_entry.entry_fields(
            int(seq), actor, kind, action, subject_ref=subject_ref, request_id=request_id,
            details=details, occurred_at=datetime.now(UTC),
        )  # fmt: skip
        digest = entry_hash(prev, fields, access_entry.HASHED)
        cur.execute(
            plan["entry_sql"],
            {**fields, "details": Json(fields["details"]), "prev_hash": prev, "hash": digest},
        )
        cur.execute(
            plan["head_sql"],
            {"id": access_entry.HEAD_ID, "seq": fields["seq"], "hash": digest,
             "at": fields["occurred_at"]},
        )  # fmt: skip
    archive.commit()
    return True


def run(argv: list[str]) -> int | None:
    """Submit ``withdraw MEMBER_ID`` the short way and return the exit status, or None (having
    written nothing) when the full command must run it."""
    args = plain_withdraw_args(argv)
    if args is None:
        return None
    text = args[1].strip()
    if not text.isdigit() or len(text) > 18 or int(text) <= 0:
        return None  # the full command refuses it in its own words
    member_id = int(text)
    plan = _read_plan()
    if plan is None:
        return None
    try:
        map_bytes = Path(plan["map_path"]).read_bytes()
        if plan.get("stamp") != plan_stamp(map_bytes):
            return None
        actor = claimed_name(args[0]) or access_entry.os_user()
    except (OSError, LifecycleError):
        return None
    primary = archive = None
    try:
        try:
            archive = connect_plain(plan["archive"])
            ref = _ref_for(plan, archive, member_id)
            if ref is None:
                return None
            primary = connect_plain(plan["primary"])
            request_id = _submit(plan, primary, member_id, actor)
        except Exception:
            # Nothing was committed: the full command runs it and reports any error itself.
            return None
        if request_id is None:
            return None
        try:
            _log(plan, archive, actor, ref, request_id)
        except Exception as exc:
            # The request is committed, as the full command's would be by now: say so and go on.
            print(unlogged_warning(ACTION, exc), file=sys.stderr)
        print(SUBMITTED.format(request_id=request_id, member_id=member_id))
        return 0
    finally:
        for conn in (primary, archive):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.rollback()
                with contextlib.suppress(Exception):
                    conn.close()


# -- the plan, made by the full command ----------------------------------------------------------


def store_plan(subject: Subject) -> None:
    """Leave the plan for the next `lifecycle withdraw MEMBER_ID` (see the module docstring)
    after the full command submitted one; nothing when the site does not fit the short way.
    A cache only: any failure here is silent and costs the next submit its full start."""
    with contextlib.suppress(Exception):
        plan = _make_plan(subject)
        if plan is not None:
            _write_plan(plan)


def db_params(which: str, settings: Any) -> dict[str, Any] | None:
    from sqlalchemy.engine import make_url

    from lifecycle.core import dbkind

    url = make_url(settings.sqlalchemy_url(which))
    variable = f"{settings_env.ENV_PREFIX}{which.upper()}_DATABASE_URL"
    family = url.get_backend_name()
    family = "mysql" if family in dbkind.MYSQL_BACKENDS else family
    if family not in ("postgresql", "mysql") or (which == "archive" and family != "postgresql"):
        return None
    query = {k: v for k, v in url.query.items() if isinstance(v, str)}
    if len(query) != len(url.query) or (family == "mysql" and set(query) - {"charset"}):
        return None  # options the short way does not pass on as SQLAlchemy's dialect does
    # The password is read from the variable at each submit, never stored here: the variable
    # must hold this URL, and the light parser must read the password as SQLAlchemy does.
    raw = os.environ.get(variable)
    if raw is None or settings_env.connect_params(raw)["password"] != url.password:
        return None
    return {
        "family": family,
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "database": url.database,
        "query": query,
        "url_variable": variable,
    }


def _make_plan(subject: Subject) -> dict[str, Any] | None:
    # The full command's libraries, loaded already when it calls this.
    from lifecycle.core.db import engine
    from lifecycle.core.settings import get_settings
    from lifecycle.datamap.paths import map_path
    from lifecycle.requests.deadlines import deadline_days
    from lifecycle.vault.keystore import REF_KEY_NAME
    from models.guards import AccessLogHead, Operator
    from models.requests import OPEN_STATES, RequestState
    from models.vault import ArchiveSecret

    if subject.marker_store is not None or subject.marker_column:
        # A withdrawal marker (Gnuboard's mb_leave_date) comes with a login id, which the full
        # command resolves; only a status column with its date is written the short way.
        return None
    if subject.login_column and not subject.login_is_contact:
        return None  # digits may be a login id: the full command resolves MEMBER_ID
    settings = get_settings()
    primary, archive = db_params("primary", settings), db_params("archive", settings)
    if primary is None or archive is None:
        return None
    path = map_path()
    map_bytes = path.read_bytes()
    q = engine("primary").dialect.identifier_preparer.quote
    table, key = q(subject.table), q(subject.key)
    status, at_col = subject.status_column, subject.withdrawn_at_column
    assert status is not None and at_col is not None  # the loader requires both without a marker
    sets = f"{q(status)} = %(status)s, {q(at_col)} = %(at)s"
    states = [s.value for s in OPEN_STATES]
    state_params = {f"s{i}": s for i, s in enumerate(states)}
    requests = "lifecycle_requests"
    head = AccessLogHead.__tablename__
    return {
        "format": PLAN_FORMAT,
        "stamp": plan_stamp(map_bytes),
        "map_path": str(path),
        "primary": primary,
        "archive": archive,
        "operators_sql": f"SELECT 1 FROM {Operator.__tablename__} LIMIT 1",
        "lock_sql": (
            f"SELECT {q(status)}, {q(at_col)} FROM {table} WHERE {key} = %(id)s FOR UPDATE"
        ),
        "withdrawn_value": subject.withdrawn_value,
        "update_sql": f"UPDATE {table} SET {sets} WHERE {key} = %(id)s",
        "open_sql": (
            f"SELECT id FROM {requests} WHERE member_id = %(id)s AND kind = 'withdrawal' "
            f"AND state IN ({', '.join(f'%({p})s' for p in state_params)}) LIMIT 1"
        ),
        "open_params": state_params,
        "received_state": RequestState.RECEIVED.value,
        "due_days": deadline_days("withdrawal"),
        "ref_key_name": REF_KEY_NAME,
        "ref_key_sql": (
            f"SELECT wrapped_key, master_key_id FROM {ArchiveSecret.__tablename__} "
            "WHERE name = %(name)s"
        ),
        "head_exists_sql": f"SELECT 1 FROM {head} WHERE id = %(id)s",
        **access_log_sql(),
    }


def access_log_sql() -> dict[str, str]:
    """The archive's access-log statements of :func:`log_entry` (PostgreSQL)."""
    from models.guards import AccessLogEntry, AccessLogHead

    head, entry = AccessLogHead.__tablename__, AccessLogEntry.__tablename__
    columns = (*access_entry.HASHED, "prev_hash", "hash")
    return {
        "head_lock_sql": f"SELECT seq, hash FROM {head} WHERE id = %(id)s FOR UPDATE",
        "entry_sql": (
            f"INSERT INTO {entry} ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'%({c})s' for c in columns)})"
        ),
        "head_sql": (
            f"UPDATE {head} SET seq = %(seq)s, hash = %(hash)s, updated_at = %(at)s "
            "WHERE id = %(id)s"
        ),
    }


def _write_plan(plan: dict[str, Any]) -> None:
    write_own(_plan_path(), json.dumps(plan).encode(), ".submit-plan-")
