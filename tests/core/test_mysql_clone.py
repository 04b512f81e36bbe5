"""The per-test MariaDB primary is the migrated template exactly: same tables, keys, checks,
foreign keys with their ON DELETE rules, and rows."""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url

from tests.helpers import mysql_connect


def _schema(db: str) -> dict[str, tuple[str, list[str]]]:
    conn = mysql_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
            out = {}
            for t, _kind in sorted(cur.fetchall()):
                cur.execute(f"SHOW CREATE TABLE `{t}`")
                ddl = re.sub(r" AUTO_INCREMENT=\d+", "", cur.fetchone()[1])
                cur.execute(f"SELECT * FROM `{t}`")
                out[t] = (ddl, sorted(map(repr, cur.fetchall())))
            return out
    finally:
        conn.close()


def test_the_clone_is_the_template(mysql_template: tuple[str, str], mysql_primary: str) -> None:
    template = _schema(mysql_template[0])
    clone = _schema(str(make_url(mysql_primary).database))
    assert "lifecycle_shred_items" in template and "lifecycle_alembic_version" in template
    assert template["lifecycle_alembic_version"][1], "the template's migration revision is a row"
    assert clone == template
    assert "ON DELETE CASCADE" in clone["lifecycle_shred_items"][0]
