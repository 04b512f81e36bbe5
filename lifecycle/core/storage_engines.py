"""MySQL/MariaDB tables the engine touches must be transactional (InnoDB).

The engine deletes a member's rows, archives what the law keeps and writes the ledger's outbox
in one transaction, rolled back whole if anything fails. A MyISAM table (Gnuboard5 and many
PHP packages still create them) ignores the rollback: its rows would be deleted while the
archive copy was never committed. Such a table is refused before any work, with the statement
that converts it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, text

from lifecycle.core.dbkind import is_mysql
from lifecycle.core.errors import UserError

TRANSACTIONAL = {"INNODB"}


def non_transactional(engine: Engine, tables: Iterable[str]) -> dict[str, str]:
    """``{table: engine name}`` of the given tables that are not InnoDB (MySQL family only)."""
    if not is_mysql(engine):
        return {}
    wanted = sorted(set(tables))
    if not wanted:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, engine FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
            )
        ).all()
    found = {str(name): str(eng or "") for name, eng in rows}
    return {t: found[t] for t in wanted if t in found and found[t].upper() not in TRANSACTIONAL}


def alter_statements(bad: dict[str, str]) -> str:
    return " ".join(f"ALTER TABLE `{t}` ENGINE=InnoDB;" for t in sorted(bad))


def refusal(bad: dict[str, str]) -> str:
    """One line naming the tables and the statements to run."""
    names = ", ".join(f"{t} ({e or 'unknown engine'})" for t, e in sorted(bad.items()))
    return (
        f"table(s) {names} are not transactional, so a failed step could not be rolled back; "
        f"convert them first: {alter_statements(bad)}"
    )


def require_transactional(engine: Engine, tables: Iterable[str]) -> None:
    bad = non_transactional(engine, tables)
    if bad:
        raise UserError(refusal(bad))
