"""What the operator typed as MEMBER_ID, turned into the lifecycle's member id, one way for every
command (`withdraw`, `correct`, `access`, `erase`, `suspend`, `consent withdraw`, `archive
retrieve`, ...).

With a data map that names the site's own login column (Gnuboard's ``mb_id``), MEMBER_ID is that
login id (``lee_mh7``), looked up in the member table; otherwise it is the numeric member key.
Bad input is refused in one line before anything is written.
"""

from __future__ import annotations

from lifecycle.core.errors import UserError

HELP = "The member's id: the site's own (e.g. lee_mh7) when the map names a login_column."


def parse_member_id(raw: str) -> int:
    text = raw.strip()
    if not text.isdigit() or int(text) <= 0 or len(text) > 18:
        raise UserError("MEMBER_ID must be a positive integer (the member's id)")
    return int(text)


def member_id_from(raw: str) -> int:
    """The member id for MEMBER_ID as typed (see the module docstring)."""
    from lifecycle.datamap.loader import current_datamap

    # Bad input is refused before any server is asked, unless the map has login ids.
    if not current_datamap().subject.login_column:
        return parse_member_id(raw)
    from lifecycle.core.db import check_reachable
    from lifecycle.engine.context import get_context
    from lifecycle.rights.withdrawal import resolve_member

    check_reachable("primary")
    return resolve_member(get_context(), raw)
