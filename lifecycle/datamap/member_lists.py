"""A column listing members (``also_names: [{column, member_key, list: ","}]``).

Gnuboard5's ``g5_poll.mb_ids`` holds the login id of every member who voted, each followed by
a comma (``kim01,lee_mh7,``). When a member leaves, their entries are removed from such a list
and every other entry is kept as it was (its spacing, the trailing separator), so the site's
own ``FIND_IN_SET`` still finds the voters who stay. docs/datamap.md describes the rule.

Pure logic: the SQL narrowing read and the parsing of each row found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import String, cast, false, func, or_


def entries(value: Any, separator: str) -> list[str]:
    """The entries a list value holds, trimmed, empty ones left out."""
    if value is None:
        return []
    return [e.strip() for e in str(value).split(separator) if e.strip()]


def _fold(value: Any) -> str:
    # MySQL's ``_ci`` collations (Gnuboard's) compare login ids case-insensitively, and the
    # site's FIND_IN_SET does too: an entry in another case is the same member.
    return str(value).strip().casefold()


def named(value: Any, separator: str, members: Mapping[Any, Any]) -> list[Any]:
    """The member ids of ``members`` (link value -> member id) whose entries ``value`` holds."""
    folded = {_fold(v): m for v, m in members.items()}
    out: dict[Any, None] = {}
    for e in entries(value, separator):
        m = folded.get(e.casefold())
        if m is not None:
            out[m] = None
    return list(out)


def without(value: str, separator: str, drop: Iterable[Any]) -> str:
    """``value`` with every entry equal to one of ``drop`` removed; the other entries, their
    spacing and an empty last entry (a trailing separator) are kept as they were."""
    gone = {_fold(d) for d in drop}
    kept = [e for e in value.split(separator) if not (e.strip() and e.strip().casefold() in gone)]
    out = separator.join(kept)
    # "a,b," less "a" and "b" leaves "" rather than a lone separator.
    return "" if not entries(out, separator) else out


def may_list(col: Any, values: Iterable[Any]) -> Any:
    """SQL: ``col`` may list one of ``values`` (a containment test that narrows the read; no
    index serves it). :func:`named` decides on each row found, so ``kim01`` in ``kim012,``
    never counts."""
    vals = sorted({_fold(v) for v in values if v is not None and str(v).strip() != ""})
    if not vals:
        return false()
    text = func.lower(col if isinstance(col.type, String) else cast(col, String))
    return or_(*(text.contains(v, autoescape=True) for v in vals))
