"""What a value the map calls a file path must look like, and the check of live values.

A column the map lists under ``files:`` is read as a path and its file shredded when the row's
category is destroyed. A column that really holds something else (a serialized PHP array of
uploads, a JSON list, a URL to another host) would be "shredded" as a path under the site root
that does not exist and recorded as already absent, while the real files stay. Such values are
refused: `datamap check` samples each file column's live values and reports the column, and the
engine refuses to destroy a row whose file value is not a path (nothing is deleted; the map must
be fixed first).
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import and_, select

from lifecycle.datamap.model import DataMap, DataMapError

# Values sampled per file column by `datamap check` (the newest rows by key, where there is one).
SAMPLE = 200
# Linux PATH_MAX: a longer value cannot name a file.
PATH_MAX = 4096

_PHP_SERIALIZED = re.compile(r"^(?:[aOC]:\d+:|s:\d+:\"|[idb]:-?[\d.]+;|N;)")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def implausible_path(value: Any) -> str | None:
    """Why ``value`` cannot be a file path (a few words, never the value), or None."""
    if not isinstance(value, str):
        return None if isinstance(value, bytes | bytearray) else "not text"
    if "\x00" in value or "\n" in value or "\r" in value:
        return "a value with a line break or NUL"
    if len(value.encode()) > PATH_MAX:
        return "longer than a path can be"
    stripped = value.strip()
    if _PHP_SERIALIZED.match(stripped):
        return "a serialized PHP value"
    if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
        try:
            json.loads(stripped)
        except ValueError:
            pass
        else:
            return "a JSON value"
    if _URL.match(stripped):
        return "a URL, not a file on this host"
    return None


def check_file_values(dm: DataMap, engine: Any, metadata: Any) -> list[DataMapError]:
    """One finding per file column whose sampled live values are not all plausible paths
    (counts and the kind of value only)."""
    problems: list[DataMapError] = []
    with engine.connect() as conn:
        for tm in dm.tables.values():
            if tm.table not in metadata.tables:
                continue
            t = metadata.tables[tm.table]
            for col in tm.files:
                c = t.c[col]
                # Only the entry's rows: a meta table's other keys hold other values.
                query = select(c).where(tm.scoped(t, and_(c.is_not(None), c != ""))).limit(SAMPLE)
                if tm.keys:
                    query = query.order_by(*(t.c[k].desc() for k in tm.keys))
                values = [v for (v,) in conn.execute(query)]
                reasons = [r for r in (implausible_path(v) for v in values) if r]
                if reasons:
                    problems.append(
                        dm.error(
                            f"{tm.name}.{col} is listed under files but {len(reasons)} of "
                            f"{len(values)} sampled values are not file paths ({reasons[0]}): "
                            "list only columns holding one path each",
                            "tables",
                            tm.name,
                            "files",
                        )
                    )
    return problems
