"""Timestamps read back from the databases: a naive value means UTC.

SQLite (the embedded default) and MariaDB's DATETIME drop the zone; this project always stores
UTC, so the one conversion lives here rather than in every reader.
"""

from __future__ import annotations

from datetime import UTC, date, datetime


def as_utc(v: datetime | date) -> datetime:
    """``v`` as an aware UTC datetime (a bare date is midnight UTC)."""
    if not isinstance(v, datetime):
        v = datetime(v.year, v.month, v.day)
    return v if v.tzinfo is not None else v.replace(tzinfo=UTC)
