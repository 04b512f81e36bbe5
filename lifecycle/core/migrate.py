"""Programmatic Alembic for both databases (no alembic.ini needed by operators)."""

from __future__ import annotations

import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

import models
from lifecycle.core.db import Which, engine, is_postgres
from lifecycle.core.dbkind import is_mysql

MIGRATIONS = Path(models.__file__).parent / "migrations"
# Any constant works; it only has to be the same for every `lifecycle db upgrade` process.
_ADVISORY_LOCK = 0x11FEC7C1


def alembic_config(which: Which) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / which))
    cfg.set_main_option("sqlalchemy.url", str(engine(which).url).replace("%", "%%"))
    return cfg


def upgrade(which: Which, revision: str = "heads") -> None:
    """Apply migrations; running it again (even concurrently on PostgreSQL) is a no-op."""
    eng = engine(which)
    with eng.begin() as conn:
        if is_postgres(eng):
            # Two containers starting at once must not both create the same tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK})
        elif is_mysql(eng):
            # MySQL DDL commits implicitly, so the lock is the session's, released below.
            conn.execute(text("SELECT GET_LOCK(:k, 600)"), {"k": f"lifecycle-migrate-{which}"})
            # Our tables need transactions and row locks whatever the server's default engine.
            conn.execute(text("SET SESSION default_storage_engine = InnoDB"))
        try:
            cfg = alembic_config(which)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        finally:
            if is_mysql(eng):
                conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": f"lifecycle-migrate-{which}"})


def upgrade_all() -> None:
    for which in ("primary", "archive"):
        upgrade(which)


def current_heads(which: Which) -> set[str]:

    from_env = {"primary": "lifecycle_alembic_version", "archive": "archive_alembic_version"}
    with engine(which).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": from_env[which]})
        return set(ctx.get_current_heads())


# A table missing: PostgreSQL's undefined_table, MySQL/MariaDB's ER_NO_SUCH_TABLE, SQLite's text.
_MISSING_TABLE = re.compile(
    r'relation "([^"]+)" does not exist|Table \'([^\']+)\' doesn\'t exist|no such table: (\S+)'
)


def missing_table(exc: BaseException) -> str | None:
    """The table a database error says does not exist (None for any other error).

    A command run before `lifecycle db upgrade` fails this way; table names are schema, never
    personal data, so the name may be shown.
    """
    orig = getattr(exc, "orig", None) or exc
    m = _MISSING_TABLE.search(str(orig).splitlines()[0] if str(orig) else "")
    if m is None:
        return None
    return next(g for g in m.groups() if g).rsplit(".", 1)[-1]
