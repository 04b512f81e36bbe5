"""The one rule for "has this member withdrawn", without the map's SQL expressions: the command
line's submit path (``lifecycle.cli.submit_plan``) applies it to the member row it locked."""

from __future__ import annotations

from typing import Any


def withdrawn(value: Any, withdrawn_value: str, *, marker: bool) -> bool:
    """The one rule for "has this member withdrawn", from the value of the map's state column:
    a withdrawal marker (``mb_leave_date``) counts when it holds anything, a status column when
    it equals ``withdrawn_value``. Every "is this a live member" check comes down to this."""
    if marker:
        return value not in (None, "")
    return bool(value == withdrawn_value)
