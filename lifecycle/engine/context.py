"""What every engine step needs: the validated data map, both engines, the reflected tables.

Built once per process (per database URL and map file): loading the map validates it against
the real schema and reflects the website's tables, which costs a few round trips.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, MetaData, Table, inspect

from lifecycle.core import db
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.model import DataMap, TableMap


@dataclass
class EngineContext:
    datamap: DataMap
    primary: Engine
    archive: Engine
    metadata: MetaData
    timezone: ZoneInfo
    host: str
    actor: str = "lifecycle-worker"
    # The primary's table names the map's patterns were expanded against.
    live_tables: frozenset[str] = frozenset()
    # The map as written (before expansion): a changed file gives a new object.
    source_map: DataMap | None = None

    def table(self, name: str) -> Table:
        """The database table of map entry ``name`` (entries may share one, see
        lifecycle.datamap.entries; callers narrow to the entry's rows with its ``scope``)."""
        return self.metadata.tables[self.datamap.physical(name)]

    @property
    def subject_table(self) -> Table:
        return self.table(self.datamap.subject.table)

    @cached_property
    def ordered_tables(self) -> list[TableMap]:
        """Children before parents: the order rows must be deleted in."""
        return self.datamap.tables_in_dependency_order()

    def tables_ending_on(self, kind: str) -> list[TableMap]:
        return [t for t in self.ordered_tables if t.ends_on(kind)]

    @property
    def is_pg_primary(self) -> bool:
        return self.primary.dialect.name == "postgresql"

    @property
    def is_pg_archive(self) -> bool:
        return self.archive.dialect.name == "postgresql"

    def local_date(self, when: datetime) -> date:
        """The calendar day (in the site's legal timezone) a UTC instant falls on."""
        return as_utc(when).astimezone(self.timezone).date()

    def today(self) -> date:
        return self.local_date(datetime.now(UTC))


log = logging.getLogger(__name__)
_lock = threading.Lock()
_cache: dict[tuple[str, str], EngineContext] = {}


def live_tables(engine: Engine) -> frozenset[str]:
    return frozenset(inspect(engine).get_table_names())


def get_context(*, datamap_path: str | Path | None = None) -> EngineContext:
    """The context for the current settings and data map (cached per process; rebuilt when the
    engines or the map file change, or when the primary's tables change: a board table created
    after the map was written is covered by the map's pattern from the next job on)."""
    s = get_settings()
    dm = current_datamap(datamap_path)
    key = (s.sqlalchemy_url("primary"), s.sqlalchemy_url("archive"))
    with _lock:
        ctx = _cache.get(key)
        primary = db.engine("primary")
        archive = db.engine("archive")
        live = live_tables(primary)
        if (
            ctx is not None
            and ctx.primary is primary
            and ctx.archive is archive
            and ctx.source_map is dm
            and ctx.live_tables == live
        ):
            return ctx
        expanded = dm.expand(live)
        expanded.validate_against(primary)
        ctx = EngineContext(
            datamap=expanded,
            primary=primary,
            archive=archive,
            metadata=expanded.reflect(primary),
            timezone=ZoneInfo(s.timezone),
            host=s.host_name,
            live_tables=live,
            source_map=dm,
        )
        for note in expanded.notes:
            log.warning("%s", note)
        _cache[key] = ctx
        return ctx


def clear_context_cache() -> None:
    with _lock:
        _cache.clear()
