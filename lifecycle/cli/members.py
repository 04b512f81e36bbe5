"""What the operator typed as MEMBER_ID, turned into the lifecycle's member id, one way for every
command (`withdraw`, `correct`, `access`, `erase`, `suspend`, `consent withdraw`, `archive
retrieve`, ...).

With a data map that names the site's own login column (Gnuboard's ``mb_id``), MEMBER_ID is that
login id (``lee_mh7``), looked up in the member table; otherwise it is the numeric member key.
Bad input is refused in one line before anything is written.
"""

from __future__ import annotations

HELP = "The member's id: the site's own (e.g. lee_mh7) when the map names a login_column."


def parse_member_id(raw: str) -> int:
    # The one rule lives with the intake; imported here so `lifecycle --help` skips SQLAlchemy.
    from lifecycle.rights.intake import parse_member_id as parse

    return parse(raw)


def member_id_from(raw: str) -> int:
    """The member id for MEMBER_ID as typed (see the module docstring)."""
    from lifecycle.datamap.current import current_datamap

    subject = current_datamap().subject
    # Bad input is refused before any server is asked, unless the map has login ids.
    if not subject.login_column:
        return parse_member_id(raw)
    from lifecycle.core.db import check_reachable, engine
    from lifecycle.rights.intake import resolve_member, subject_table

    check_reachable("primary")
    # One query on the member table (no reflection, no engine): the command stays quick.
    with engine("primary").connect() as conn:
        return resolve_member(subject, subject_table(subject), conn, raw)
