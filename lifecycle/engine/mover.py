"""Move a set of rows out of the primary DB: archive what the law keeps, destroy the rest.

Ordering (invariant 1: a record is always in the primary DB, the archive, or both):

1. The caller's primary-DB transaction already holds the locks that keep anyone else off these
   members (their rows ``FOR UPDATE``).
2. Inside that transaction, table by table (children first), the selected rows are taken with
   ``DELETE ... RETURNING`` in bounded chunks: the deletes stay uncommitted, so the rows are
   still in the primary DB for everyone else and come back if anything fails. Each returned
   row is planned; its retained parts are encrypted and bulk-written (``COPY`` on PostgreSQL)
   in one archive-DB transaction, skipping parts already archived; one ledger entry per
   table x category counts the parts newly archived. The archive transaction commits: from
   here the records are in both DBs.
3. Still in the caller's primary transaction: hand destroyed file paths to the shredder and
   park the destruction's ledger entries in ``lifecycle_ledger_outbox``. The caller commits
   (the DELETEs become real together with the owed entries); ``flush_ledger_outbox`` then moves
   the entries to the ledger.

Taking rows with the DELETE itself, rather than reading them and deleting by key afterwards,
is one pass over each table instead of two, and exactly the rows deleted are the rows planned:
a row that arrives meanwhile is either taken (and archived) or left alone. Re-running after a
crash anywhere re-takes what is still in the primary DB: parts already archived are skipped
(and not ledgered twice), and destruction is counted from what the DELETE returned.
"""

from __future__ import annotations

import logging
import uuid
from base64 import b64encode
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import orjson
import psycopg
from sqlalchemy import (
    Connection,
    CursorResult,
    Text,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from lifecycle.core import dbkind
from lifecycle.core.errors import UserError
from lifecycle.datamap.file_values import implausible_path
from lifecycle.datamap.links import forget_markers, member_id
from lifecycle.datamap.model import TableMap
from lifecycle.engine import leavers, unlist
from lifecycle.engine.context import EngineContext
from lifecycle.engine.selection import (
    SQLITE_IN_CHUNK,
    Part,
    PlannedRow,
    Selection,
    iter_planned,
    member_expr,
    member_ids,
    selected_columns,
    take_rows_mysql,
    whose_login,
)
from lifecycle.engine.shared_files import Referenced, still_referenced
from lifecycle.shred.jobs import enqueue_shred, enqueue_shred_check, keep_refused, send_jobs
from lifecycle.vault import crypto, keystore, ledger
from models.archive import ArchivedRecord
from models.engine import LedgerOutbox

log = logging.getLogger(__name__)

ARCHIVE_METHOD = "AES-256-GCM 암호화 후 분리보관 DB로 이전, 원본 행 삭제 (encrypted move)"
DESTROY_METHOD = "DB 행 삭제, 복구 불가 (DELETE from the primary database)"

_ARCHIVE_COLUMNS = (
    "source_table",
    "source_pk",
    "subject_ref",
    "category",
    "retain_until",
    "key_id",
    "nonce",
    "ciphertext",
    "request_id",
    "archived_at",
)
_PG_TYPES = ("text", "text", "text", "text", "date", "int8", "bytea", "bytea", "int8",
             "timestamptz")  # fmt: skip


@dataclass(frozen=True)
class Scope:
    """Who moves rows and why: names the ledger entries and makes re-runs deduplicate."""

    key: str  # e.g. "req:12" or "sweep:7:withdrawal:1-500"; never personal data
    purpose: str  # withdrawal | dormancy | age
    reason: str
    actor: str = "lifecycle-worker"
    task_id: str | None = None
    request_id: int | None = None
    subject_ref: str | None = None


@dataclass
class _Tally:
    rows: int = 0
    subjects: set[Any] = field(default_factory=set)

    def add(self, subject: Any) -> None:
        self.rows += 1
        if subject is not None:
            self.subjects.add(subject)


class Unattributed(UserError):
    """A move made for several scopes (``move(scopes=...)``) met a row it cannot file under one
    of their members: nothing was moved, and the caller moves each member alone."""


def owner_of(scopes: Mapping[Any, Scope], subject: Any) -> Any:
    """The member of ``scopes`` a row's subject is (a text-held id '42' is the member 42)."""
    who = member_id(subject)
    if who is None or who not in scopes:
        raise Unattributed("a row of the move is not any one of its members'")
    return who


@dataclass
class _Destruction:
    """What the DELETEs of one move destroyed: per table x category, members, files owed."""

    tally: dict[tuple[str, str], _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    subjects: set[Any] = field(default_factory=set)
    files: list[str] = field(default_factory=list)
    file_categories: set[str] = field(default_factory=set)
    # Rows deleted and rows cleared per table (a member's own count, when a move is split).
    deleted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    blanked: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def row(
        self, table: str, subject: Any, destroyed: Iterable[str], paths: Iterable[tuple[str, Any]],
        how: str = "deleted",
    ) -> None:  # fmt: skip
        """One deleted (``how``: or "blanked") row: its destroyed categories, and its file
        paths as (category, path); a file is owed to the shredder only if its category was
        destroyed."""
        (self.deleted if how == "deleted" else self.blanked)[table] += 1
        if subject is not None:
            self.subjects.add(subject)
        destroyed = tuple(destroyed)
        for cat in destroyed:
            self.tally[(table, cat)].add(subject)
        for cat, path in paths:
            if path and cat in destroyed:
                why = implausible_path(path)
                if why is not None:
                    # Raised inside the move's transactions: nothing is deleted or archived.
                    raise UserError(
                        f"{table}: a value the map lists under files is not a file path ({why});"
                        f" nothing was deleted: fix the map's files for {table} "
                        "(`lifecycle datamap check` samples them)"
                    )
                self.files.append(str(path))
                self.file_categories.add(cat)


class _Split:
    """A move's destruction filed per member, each under its own scope (``move(scopes=...)``)."""

    def __init__(self, scopes: Mapping[Any, Scope]) -> None:
        self.scopes = scopes
        self.parts: dict[Any, _Destruction] = {}

    def row(
        self, table: str, subject: Any, destroyed: Iterable[str], paths: Iterable[tuple[str, Any]],
        how: str = "deleted",
    ) -> None:  # fmt: skip
        who = owner_of(self.scopes, subject)
        part = self.parts.get(who)
        if part is None:
            part = self.parts[who] = _Destruction()
        part.row(table, who, destroyed, paths, how)


@dataclass
class MoveResult:
    """Counts only (never values): safe for task results, JobRun rows and logs."""

    archived: dict[tuple[str, str], int] = field(default_factory=dict)
    destroyed: dict[tuple[str, str], int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    subjects: int = 0
    files: int = 0
    files_refused: int = 0
    # Files not handed to the shredder because a live row still names them.
    files_kept: int = 0
    # Why the first refused file was refused (one line, never a path), and the shred job that
    # keeps the refused paths.
    refusal: str | None = None
    blanked: dict[str, int] = field(default_factory=dict)
    # Shred jobs written in the caller's transaction: send them (`send_shred_jobs`) once it
    # has committed.
    shred_jobs: list[int] = field(default_factory=list)
    # Guest rows left because a live member shares the identity they hold: ``Shared.key`` ->
    # rows (lifecycle/engine/guests.py).
    shared: dict[str, int] = field(default_factory=dict)
    # A move made for several scopes (``move(scopes=...)``): each member's own part of it.
    by_subject: dict[Any, MoveResult] = field(default_factory=dict)

    @property
    def failure(self) -> str | None:
        """One line when the move did not do all it was asked (files the shredder refused)."""
        if not self.files_refused:
            return None
        return (
            f"{self.files_refused} file(s) refused by the shredder ({self.refusal}); their rows "
            f"are gone and the paths are kept in shred job(s) {self.shred_jobs}: fix the "
            "storage roots (LIFECYCLE_FILE_ROOTS) or the map's site.root and re-run the job"
        )

    def summary(self) -> dict[str, int]:
        return {
            "subjects": self.subjects,
            "archived_parts": sum(self.archived.values()),
            "destroyed_parts": sum(self.destroyed.values()),
            "deleted_rows": sum(self.deleted.values()),
            "blanked_rows": sum(self.blanked.values()),
            "files": self.files,
            "files_refused": self.files_refused,
            "files_kept": self.files_kept,
            **self.shared,
        }

    def merge(self, other: MoveResult) -> None:
        counters: tuple[tuple[dict[Any, int], dict[Any, int]], ...] = (
            (self.archived, other.archived),
            (self.deleted, other.deleted),
            (self.blanked, other.blanked),
            (self.shared, other.shared),
        )
        for mine, theirs in counters:
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        self.add_accounted(other)

    def add_accounted(self, other: MoveResult) -> None:
        """Add what ``_account`` records (destroyed parts, subjects, files, refusal, shred
        jobs): a group's total takes these from each member's own result, the row counts it
        already has from the shared statements."""
        for k, v in other.destroyed.items():
            self.destroyed[k] = self.destroyed.get(k, 0) + v
        self.subjects += other.subjects
        self.files += other.files
        self.files_refused += other.files_refused
        self.files_kept += other.files_kept
        self.refusal = self.refusal or other.refusal
        self.shred_jobs += other.shred_jobs


def _json_default(v: Any) -> Any:
    # Only what orjson does not encode itself; datetimes, dates and times it writes as
    # ISO 8601 (naive datetimes as UTC, OPT_NAIVE_UTC).
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return {"b64": b64encode(bytes(v)).decode()}
    raise TypeError(f"cannot archive a value of type {type(v).__name__}")


def _plaintext(values: tuple[Any, ...], part: Part) -> bytes:
    # orjson: the same compact UTF-8 JSON as the standard library's, ten times faster, and
    # the sweep encodes one object per archived part (millions).
    return orjson.dumps(
        dict(zip(part.names, [values[i] for i in part.idx], strict=True)),
        default=_json_default,
        option=orjson.OPT_NAIVE_UTC,
    )


# (archive DB, category, day) -> (key id, cipher) for buckets far enough ahead (see below).
_FAR_KEYS: dict[tuple[str, str, date], tuple[int, crypto.RecordCipher]] = {}


class ArchiveWriter:
    """Encrypts retained parts and bulk-writes them into ``archive_records`` idempotently."""

    def __init__(
        self, ctx: EngineContext, session: Session, scope: Scope, now: datetime,
        scopes: Mapping[Any, Scope] | None = None,
    ) -> None:  # fmt: skip
        self.ctx = ctx
        self.s = session
        self.scope = scope
        # Each member's own scope: its parts carry its request, its ledger entries are its own.
        self.scopes = scopes
        self.now = now
        self.pg = ctx.is_pg_archive
        # Per transaction: the FOR SHARE locks that fence the purge end with it.
        self._keys: dict[tuple[str, date], tuple[int, crypto.RecordCipher] | None] = {}
        self._refs: dict[Any, str] = {}
        self._aad_parts: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._ref_key: bytes | None = None
        # (table, pk, subject, category, retain day, plaintext)
        self._pending: list[tuple[Any, ...]] = []
        # (table, category, member of ``scopes`` or None) -> the parts newly archived
        self.tallies: dict[tuple[str, str, Any], _Tally] = defaultdict(_Tally)
        self._span: dict[tuple[str, str, Any], list[Any]] = {}
        # Every part queued in this move, and how many rows the archive DB says it took: the
        # ledger may only count what the archive holds.
        self._queued: set[tuple[str, str, str]] = set()
        self.written = 0
        # Pseudonym -> last retain day of a part kept in the archive by this move (written now
        # or already there): how long a former member's identity hashes must last.
        self.kept: dict[str, date] = {}

    def _aad(self, table: str, pk: str, category: str) -> bytes:
        """``crypto.record_aad`` with the table and category parts built once per pair."""
        parts = self._aad_parts.get((table, category))
        if parts is None:
            probe = crypto.record_aad(table, "", category)
            head_len = len(probe) - 4 - len(category.encode()) - 4
            parts = (probe[:head_len], probe[head_len + 4 :])
            # The layout is the crypto module's: check ours agrees before using it.
            sample = "12345"
            built = parts[0] + len(sample).to_bytes(4, "big") + sample.encode() + parts[1]
            if built != crypto.record_aad(table, sample, category):
                raise RuntimeError("record AAD layout changed; update ArchiveWriter._aad")
            self._aad_parts[(table, category)] = parts
        pkb = pk.encode()
        return parts[0] + len(pkb).to_bytes(4, "big") + pkb + parts[1]

    def subject_ref(self, subject: Any) -> str:
        ref = self._refs.get(subject)
        if ref is None:
            if self._ref_key is None:
                self._ref_key = keystore.ref_key(self.s)
            ref = crypto.subject_ref(self._ref_key, "" if subject is None else subject)
            self._refs[subject] = ref
        return ref

    def add(self, table: str, row: PlannedRow) -> None:
        """Queue the row's retained parts (encrypted and written at the next flush)."""
        if self.scopes is not None and row.parts:
            owner_of(self.scopes, row.subject)
        for part in row.parts:
            ident = (table, str(row.pk), part.category)
            if ident in self._queued:
                raise UserError(
                    f"table {table}: two rows share the key the data map names, so the archive "
                    "could not tell them apart; nothing was moved (give the table's real "
                    "unique key, see `lifecycle datamap check`)"
                )
            self._queued.add(ident)
            self._pending.append(
                (
                    table,
                    row.pk,
                    row.subject,
                    part.category,
                    self.ctx.local_date(part.retain_until),
                    _plaintext(row.values, part),
                )
            )

    def _resolve_buckets(self, pending: list[tuple[Any, ...]]) -> None:
        need = {(p[3], p[4]) for p in pending} - self._keys.keys()
        if not need:
            return
        # The purge only destroys buckets whose day is past, and this transaction lasts
        # minutes: buckets from the day after tomorrow on cannot be purged under us, so they
        # need no lock and can be remembered for the life of the process. Near ones (a
        # transaction spanning midnight) are locked FOR SHARE as the keystore does by default.
        horizon = self.ctx.today() + timedelta(days=2)
        db_id = self.ctx.archive.url.render_as_string(hide_password=True)
        far: set[tuple[str, date]] = set()
        for b in [b for b in need if b[1] >= horizon]:
            hit = _FAR_KEYS.get((db_id, *b))
            if hit is not None:
                self._keys[b] = hit
            else:
                far.add(b)
        near = {b for b in need if b[1] < horizon}
        for wanted, lock in ((near, True), (far, False)):
            if not wanted:
                continue
            got = keystore.get_or_create_bucket_keys(self.s, wanted, share_lock=lock)
            for bucket, kd in got.items():
                entry = None if kd is None else (kd[0], crypto.RecordCipher(kd[1]))
                self._keys[bucket] = entry
                if not lock and entry is not None:
                    if len(_FAR_KEYS) > 50_000:
                        _FAR_KEYS.clear()
                    _FAR_KEYS[(db_id, *bucket)] = entry

    def flush(self) -> list[tuple[str, Any, str]]:
        """Write queued parts; returns ``(table, pk, category)`` parts that must be destroyed
        instead, because their bucket's period already ended and its key was purged."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        self._resolve_buckets(pending)
        late = [(p[0], p[1], p[3]) for p in pending if self._keys[(p[3], p[4])] is None]
        if late:
            pending = [p for p in pending if self._keys[(p[3], p[4])] is not None]
        kept = self.kept
        for p in pending:
            ref = self.subject_ref(p[2])
            if ref not in kept or kept[ref] < p[4]:
                kept[ref] = p[4]
        # PostgreSQL: COPY straight in and fall back to a conflict-skipping insert only if a
        # part is already there (a re-run), so the common case pays no lookup.
        fresh = pending if self.pg else self._drop_existing(pending)
        if not fresh:
            return late
        now = self.now
        rows: list[tuple[Any, ...]] = []
        aad = self._aad
        scopes = self.scopes
        request_id = self.scope.request_id
        for table, pk, subject, cat, day, pt in fresh:
            key_id, cipher = self._keys[(cat, day)]  # type: ignore[misc]
            spk = str(pk)
            nonce, ct = cipher.encrypt(pt, aad(table, spk, cat))
            if scopes is not None:
                request_id = scopes[owner_of(scopes, subject)].request_id
            rows.append(
                (table, spk, self.subject_ref(subject), cat, day, key_id, nonce, ct,
                 request_id, now)
            )  # fmt: skip
        inserted = self._write(rows)
        self.written += len(rows) if inserted is None else len(inserted)
        tallies, spans = self.tallies, self._span
        for table, pk, subject, cat, day, _pt in fresh:
            if inserted is None or (table, str(pk), cat) in inserted:
                tk = (table, cat, None if scopes is None else owner_of(scopes, subject))
                tallies[tk].add(subject)
                span = spans.get(tk)
                if span is None:
                    spans[tk] = [day, day, str(pk)]
                elif day < span[0]:
                    span[0] = day
                elif day > span[1]:
                    span[1] = day
        return late

    def _drop_existing(self, pending: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Parts archived by an earlier, interrupted attempt are skipped, not written twice."""
        r = ArchivedRecord.__table__
        by_table: dict[str, list[str]] = defaultdict(list)
        for item in pending:
            by_table[item[0]].append(str(item[1]))
        have: set[tuple[str, str, str]] = set()
        for table, pks in by_table.items():
            uniq = sorted(set(pks))
            step = len(uniq) if self.pg else SQLITE_IN_CHUNK
            for i in range(0, len(uniq), step or 1):
                chunk = uniq[i : i + step]
                cond = r.c.source_pk == _any_text(chunk) if self.pg else r.c.source_pk.in_(chunk)
                for pk, cat in self.s.execute(
                    select(r.c.source_pk, r.c.category).where(r.c.source_table == table, cond)
                ):
                    have.add((table, pk, cat))
        if not have:
            return pending
        return [p for p in pending if (p[0], str(p[1]), p[3]) not in have]

    def _write(self, rows: list[tuple[Any, ...]]) -> set[tuple[str, str, str]] | None:
        """Insert rows; returns (table, pk, category) of the rows this call inserted, or None
        when it inserted every one of them (the common case, spared building the set)."""
        if self.pg:
            return self._write_pg(rows)
        table = ArchivedRecord.__table__
        done: set[tuple[str, str, str]] = set()
        for i in range(0, len(rows), 1000):
            chunk = rows[i : i + 1000]
            # SQLite serialises writers, so the pre-check above cannot race: OR IGNORE is only
            # a guard. Core executemany keeps SQLAlchemy's date/time formats.
            res = cast(
                "CursorResult[Any]",
                self.s.execute(
                    insert(table).prefix_with("OR IGNORE"),
                    [dict(zip(_ARCHIVE_COLUMNS, r, strict=True)) for r in chunk],
                ),
            )
            if res.rowcount != len(chunk):
                raise UserError(
                    f"the archive took {res.rowcount} of {len(chunk)} parts; nothing was moved"
                )
            done.update((r[0], r[1], r[3]) for r in chunk)
        return done

    def _write_pg(self, rows: list[tuple[Any, ...]]) -> set[tuple[str, str, str]] | None:

        raw = self.s.connection().connection.driver_connection
        assert raw is not None  # an open session's connection
        cols = ", ".join(_ARCHIVE_COLUMNS)
        # A raw SAVEPOINT: the COPY runs on the driver connection, out of the ORM's sight.
        with raw.cursor() as cur:
            cur.execute("SAVEPOINT lc_archive_copy")
            try:
                with cur.copy(f"COPY archive_records ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(_PG_TYPES)
                    for r in rows:
                        cp.write_row(r)
            except psycopg.errors.UniqueViolation:
                # Some parts were archived by an earlier, interrupted attempt: take the slow
                # path, which skips exactly those.
                cur.execute("ROLLBACK TO SAVEPOINT lc_archive_copy")
            else:
                cur.execute("RELEASE SAVEPOINT lc_archive_copy")
                return None
        with raw.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS lc_archive_stage ON COMMIT DELETE ROWS AS "
                f"SELECT {cols} FROM archive_records WITH NO DATA"
            )
            with cur.copy(f"COPY lc_archive_stage ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(_PG_TYPES)
                for r in rows:
                    cp.write_row(r)
            cur.execute(
                f"INSERT INTO archive_records ({cols}) SELECT {cols} FROM lc_archive_stage "
                "ON CONFLICT (source_table, source_pk, category) DO NOTHING "
                "RETURNING source_table, source_pk, category"
            )
            done = {tuple(r) for r in cur.fetchall()}
            cur.execute("DELETE FROM lc_archive_stage")
        return done

    def ledger_entries(self) -> None:
        """One entry per table x category newly archived; call last (it takes the ledger lock).

        Checked first, in the archive transaction: the rows the ledger is about to count are
        exactly the rows the archive DB reported taking, or the move fails and rolls back.
        """
        dm = self.ctx.datamap
        counted = sum(t.rows for t in self.tallies.values())
        if counted != self.written:
            raise UserError(
                f"the ledger would record {counted} archived parts but the archive took "
                f"{self.written}; nothing was moved"
            )
        entries = []
        for (table, cat, owner), tally in sorted(self.tallies.items(), key=_tally_order):
            if not tally.rows:
                continue
            lo, hi, first_pk = self._span[(table, cat, owner)]
            rule = dm.rule(cat)
            scope = self.scope if self.scopes is None else self.scopes[owner]
            entries.append(
                {
                    "action": "archive",
                    "categories": [cat],
                    "tables": [table],
                    "subjects": len(tally.subjects),
                    "rows": tally.rows,
                    "reason": scope.reason,
                    "legal_basis": rule.legal_basis,
                    "method": ARCHIVE_METHOD,
                    "actor": scope.actor,
                    "task_id": scope.task_id,
                    "request_id": scope.request_id,
                    "subject_ref": scope.subject_ref,
                    "details": {
                        "scope": scope.key,
                        "retention": str(rule.period),
                        "retain_until_from": lo.isoformat(),
                        "retain_until_to": hi.isoformat(),
                    },
                    # Re-runs archive nothing new and so append nothing; a re-run that does
                    # find new rows gets its own key (their count and first key differ).
                    "dedup_key": f"{scope.key}:archive:{table}:{cat}:{tally.rows}:{first_pk}"[:200],
                }
            )
        if entries:
            ledger.append_many(self.s, entries)


def _tally_order(item: tuple[tuple[str, str, Any], _Tally]) -> tuple[str, str, str]:
    table, cat, owner = item[0]
    return table, cat, "" if owner is None else str(owner)


def archived_counts(writer: ArchiveWriter, owner: Any = None) -> dict[tuple[str, str], int]:
    """Parts newly archived per table x category (of one member of a split move, ``owner``)."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for (table, cat, who), tally in writer.tallies.items():
        if owner is None or who == owner:
            out[(table, cat)] += tally.rows
    return dict(out)


def _any_text(values: list[str]) -> Any:

    return any_(bindparam(None, value=values, type_=ARRAY(Text())))


def destroy_only(ctx: EngineContext, tm: TableMap) -> bool:
    """Every category of the table is destroy-now, and its rows reach the member directly.

    Such rows never go to the archive, so their DELETE ... RETURNING (in dependency order,
    uncommitted until the caller commits) returns only the member link and file columns, and
    both destroys and counts them (members counted by the link's value: the key, or the login
    id). A table with no unique key can only be of this kind.
    """
    return (
        tm.subject_column is not None
        and len(tm.links) == 1
        and not tm.file_templates
        and all(ctx.datamap.rule(c).period.is_zero for c in tm.columns)
        # Guest rows are counted for the member they are taken for, which iter_planned finds.
        and not tm.match_identities
    )


def move(
    ctx: EngineContext,
    pconn: Connection,
    selections: Iterable[Selection],
    scope: Scope,
    *,
    now: datetime,
    delete_rows: bool = True,
    scopes: Mapping[Any, Scope] | None = None,
) -> MoveResult:
    """Archive the retained parts of the selected rows, then (``delete_rows``) delete them.

    ``pconn`` is the caller's open primary-DB transaction; the caller commits it, after this
    returns. The archive side is committed here first, so the DELETEs issued in ``pconn``
    (children first) only become real once the archive holds every retained part. "blank"
    selections (rows that stay with some columns cleared) run after every DELETE.

    ``scopes`` (member id -> scope): several members' requests moved by the same statements,
    each row filed under its member's scope: its archived parts carry that request, the ledger
    entries, file-keep entries and shred jobs are per member, and ``by_subject`` holds each
    member's own result. A row that is none of theirs raises :class:`Unattributed` (the
    caller's transaction, and the archive's, roll back: nothing moved).
    """
    selections = list(selections)
    if not delete_rows:
        return _archive_only(ctx, pconn, selections, scope, now, scopes)
    # A table may have two: its members' rows and its guest rows (lifecycle/engine/guests.py).
    by_table: dict[str, list[Selection]] = defaultdict(list)
    for s in selections:
        if s.mode == "take":
            by_table[s.table.name].append(s)
    # Rows another member owns deleted because they name a leaver ("drop") go as a clearing
    # does: after every DELETE of the leavers' own rows, filed under the leaver.
    blanks = [s for s in selections if s.mode in ("blank", "drop")]
    result = MoveResult()
    gone: _Destruction | _Split = _Destruction() if scopes is None else _Split(scopes)
    subject_table = ctx.datamap.subject.table
    left: list[Any] = []  # members whose own row was deleted
    # Before anything is deleted or blanked: afterwards the values are gone.
    identities, kept_rows = leavers.read_identities(ctx, pconn, selections)
    with Session(ctx.archive, expire_on_commit=False) as asess, asess.begin():
        writer = ArchiveWriter(ctx, asess, scope, now, scopes)
        taking = [(tm, sel) for tm in ctx.ordered_tables for sel in by_table[tm.name]]
        if dbkind.is_mysql(pconn):
            taking = _holding_rows(ctx, pconn, taking)
        for tm, sel in taking:
            n = result.deleted.get(tm.name, 0)
            if destroy_only(ctx, tm):
                every = tuple(tm.columns)
                # The loader puts every file column under a category.
                file_cats = [tm.category_of(c) or "" for c in tm.files]
                taken = list(delete_returning(ctx, pconn, sel))
                ids = member_ids(
                    ctx, pconn, tm.links[0].member_key, {r[0] for r in taken}, sel.keys
                )
                by_key = tm.links[0].member_key == ctx.datamap.subject.key
                for subject, paths in taken:
                    n += 1
                    # A text-held id ('42') counts as the member 42 (links.member_id).
                    who = member_id(subject) if by_key else ids.get(subject, subject)
                    gone.row(tm.name, who, every, zip(file_cats, paths, strict=True))
                    if tm.name == subject_table:
                        left.append(who)
                result.deleted[tm.name] = n
                continue
            cols = selected_columns(tm)
            paths_of = row_files(tm, cols)
            for chunk in iter_planned(ctx, pconn, sel, now, take=True):
                n += len(chunk)
                for row in chunk:
                    writer.add(tm.name, row)
                # Parts whose bucket was already purged are destroyed instead of archived.
                late: dict[Any, list[str]] = defaultdict(list)
                for _table, pk, cat in writer.flush():
                    late[pk].append(cat)
                for row in chunk:
                    destroyed = (*row.destroyed, *late.get(row.pk, ()))
                    gone.row(tm.name, row.subject, destroyed, paths_of(row.values))
                if tm.name == subject_table:
                    left.extend(row.subject for row in chunk)
            result.deleted[tm.name] = n
        # Retained parts of rows that stay blanked (the member row kept to reserve its id).
        for sel in blanks:
            if _archives(ctx, sel) and sel.table.retains_anything:
                for chunk in iter_planned(ctx, pconn, sel, now):
                    for row in chunk:
                        writer.add(sel.table.name, row)
                    writer.flush()
        writer.ledger_entries()
        leavers.record_kept(asess, identities, kept_rows, writer.kept)
    result.archived = archived_counts(writer)
    # In the same transaction as the member rows' DELETE.
    forget_markers(pconn, ctx.datamap.subject.marker_store, left)
    for sel in blanks:
        n = blank_rows(ctx, pconn, sel, gone)
        if n:
            counts = result.deleted if sel.mode == "drop" else result.blanked
            counts[sel.table.name] = counts.get(sel.table.name, 0) + n
    for sel in selections:
        if sel.mode == "unlist":
            n = _unlist(ctx, pconn, sel, gone, now)
            if n:
                result.blanked[sel.table.name] = result.blanked.get(sel.table.name, 0) + n
    if isinstance(gone, _Destruction):
        _account(ctx, pconn, scope, gone, result)
        return result
    assert scopes is not None
    for who, own_scope in scopes.items():
        part = gone.parts.get(who) or _Destruction()
        own = MoveResult(
            archived=archived_counts(writer, who),
            deleted=dict(part.deleted),
            blanked=dict(part.blanked),
        )
        _account(ctx, pconn, own_scope, part, own)
        result.by_subject[who] = own
        result.add_accounted(own)
    return result


def _account(
    ctx: EngineContext, pconn: Connection, scope: Scope, gone: _Destruction, result: MoveResult
) -> None:
    """File a move's destruction under ``scope``, in the caller's transaction: the parked
    ledger entries, the counts, the files kept for live rows and the shred jobs owed."""
    park_destroy_entries(ctx, pconn, scope, gone.tally)
    for k, t in gone.tally.items():
        result.destroyed[k] = t.rows
    result.subjects = len(gone.subjects)
    owed = gone.files
    if owed:
        # A file another live row still names is that row's too: this row's reference went
        # with it, the file stays (and the ledger says why).
        shared = still_referenced(owed, ctx, pconn)
        if shared.where:
            owed = [p for p in owed if p not in shared.where]
            park_file_keep_entry(ctx, pconn, scope, shared, sorted(gone.file_categories))
            result.files_kept = len(shared.where)
    if owed:
        # In the caller's transaction, with the DELETE: the rows and the shred job that owes
        # their files commit together or not at all (a re-run after a crash takes the rows
        # again and hands the same files again). The caller sends the jobs after its commit.
        handed = hand_to_shredder(owed, scope, sorted(gone.file_categories), ctx, pconn)
        result.files, result.files_refused, result.shred_jobs, result.refusal = handed


# Selections one probe asks about (each names its lists again in the one statement).
_PROBE_TABLES = 64


def _holding_rows(
    ctx: EngineContext, conn: Connection, taking: list[tuple[TableMap, Selection]]
) -> list[tuple[TableMap, Selection]]:
    """The selections of ``taking`` that select at least one row (MySQL/MariaDB).

    Most of a site's member tables hold nothing for most members (a Gnuboard5 shop has some
    twenty such tables). On MariaDB a DELETE naming a batch's 500 login ids costs nearly as
    much finding nothing as finding a few rows (a round trip, the list escaped and parsed, a
    gap lock per value), so one statement asks every selection whether it has a row (an EXISTS
    per selection, through the same indexes) and only those that do run their DELETE. The
    probe is a consistent read of the batch's snapshot (it takes no locks): a row committed for
    these locked, withdrawn members after the batch began, in a table that had none of theirs,
    is not taken by this batch, just as a row committed after its table's DELETE never was.
    """
    out: list[tuple[TableMap, Selection]] = []
    for i in range(0, len(taking), _PROBE_TABLES):
        part = taking[i : i + _PROBE_TABLES]
        probes = [
            exists(select(literal_column("1")).select_from(ctx.table(tm.name)).where(sel.where))
            for tm, sel in part
        ]
        found = conn.execute(select(*(p.label(f"p{j}") for j, p in enumerate(probes)))).one()
        out += [pair for pair, hit in zip(part, found, strict=True) if hit]
    return out


def row_files(tm: TableMap, cols: list[str]) -> Any:
    """``values -> [(category, path), ...]`` for a row in ``selected_columns`` order: its file
    columns and its path templates (empty fields give no path)."""
    at = [(tm.category_of(c), cols.index(c)) for c in tm.files]
    templates = [(ft, [(f, cols.index(f)) for f in ft.fields]) for ft in tm.file_templates]

    def paths(values: tuple[Any, ...]) -> list[tuple[str | None, Any]]:
        out: list[tuple[str | None, Any]] = [(cat, values[i]) for cat, i in at]
        for ft, fields in templates:
            p = ft.render({f: values[i] for f, i in fields})
            if p:
                out.append((ft.category, p))
        return out

    return paths


def blank_value(table: str, col: Any) -> Any:
    """What a cleared column holds: NULL where allowed, else '' for text, else its default."""
    if col.nullable:
        return None
    if isinstance(col.type, sqltypes.String):
        return ""
    default = col.server_default
    arg = getattr(default, "arg", None)
    if arg is None:
        raise UserError(
            f"column {table}.{col.name} cannot be cleared: NOT NULL, not text and no default"
        )
    return literal_column(str(getattr(arg, "text", arg)))


def blank_rows(
    ctx: EngineContext, conn: Connection, sel: Selection, gone: _Destruction | _Split
) -> int:
    """Clear ``sel.blank_columns`` of the selected rows, which stay; accounts the destruction
    (the categories of the cleared columns, or the table's when only a link was cleared)."""
    tm = sel.table
    t = ctx.table(tm.name)
    dm = ctx.datamap
    cleared = sel.blank_columns
    cats = [c for c in tm.columns if set(tm.columns[c]) & set(cleared)] or list(tm.columns)
    if sel.mode == "drop":
        cats = list(tm.columns)  # the whole row goes (the loader allows only 0d categories)
    # The members' table: a leaver's own kept row, or another member's row naming a leaver
    # (also_names: their recommender), which is filed under the leaver and never loses files.
    own_row = tm.name == dm.subject.table and not any(lk.cleared == cleared for lk in tm.also_names)
    if tm.name == dm.subject.table and not own_row and not set(tm.personal_columns) & set(cleared):
        # Only the link (a recommender's id) went: naming the member is profile data, not
        # the other member's credentials or contact.
        cats = [unlist.LISTED_CATEGORY]
    if own_row:
        who: Any = t.c[dm.subject.key]
    else:
        link = next((lk for lk in (*tm.links, *tm.also_names) if lk.column == cleared[0]), None)
        who = (
            dm.link_expr(link, t.c[link.column], ctx.metadata)
            if link is not None
            else member_expr(ctx, tm)
        )
        if sel.owners is not None and link is not None:
            # A login-id link resolved before the member row went (named_selections).
            who = t.c[link.column]
    # Only what the cleared rows' file paths are built from: a member row has dozens of
    # columns, and reading them all only to throw them away was a fifth of a batch's decoding.
    cols = list(dict.fromkeys([*tm.files, *(f for ft in tm.file_templates for f in ft.fields)]))
    files = row_files(tm, cols)
    given = dict(sel.set_values)
    values = (
        {}
        if sel.mode == "drop"
        else {c: given[c] if c in given else blank_value(tm.name, t.c[c]) for c in cleared}
    )
    keys = [t.c[k] for k in tm.keys]
    if not keys:
        rows = conn.execute(select(who, *(t.c[c] for c in cols)).where(sel.where)).all()
        if rows and sel.mode == "drop":
            conn.execute(delete(t).where(sel.where))
        elif rows:
            conn.execute(update(t).where(sel.where).values(values))
        taken = [(_whose(sel, r[0]), tuple(r[1:])) for r in rows]
    else:
        # What is counted is what is locked and then cleared, by key: a plain read could count a
        # row a neighbouring batch deletes before the UPDATE gets to it (the ledger would then
        # count it twice). The lock reads this table only; the member, which may take a
        # subquery over another table, comes from a plain read, so no other table is locked.
        n = len(keys)
        where = sel.where
        if not own_row and (tm.name == dm.subject.table or dbkind.is_mysql(conn)):
            # Other members' rows naming a leaver (a recommender's login id), found through a
            # column Gnuboard5 does not index: a locking read would lock every member row it
            # passes over (InnoDB), making logins wait on the batch. The keys come from a plain
            # read; only those rows are locked, the condition checked again under the lock.
            # On MySQL/MariaDB the same for every table: a locking read locks every row it
            # visits, matching or not (REPEATABLE READ), so clearing a leaver's side of the
            # memos of partners who left too (rows their own batch takes) locked those rows,
            # and the neighbouring batch taking them waited for this one to commit.
            found = [tuple(r) for r in conn.execute(select(*keys).where(where))]
            if not found:
                return 0
            where = and_(where, tuple_(*keys).in_(found) if n > 1 else keys[0].in_(
                [f[0] for f in found]))  # fmt: skip
        known = None
        if own_row and n == 1 and sel.members_only and sel.keys is not None:
            # The batch's members, locked since it began, and read once (KeyLists).
            known = sel.keys.member_rows(cols) if sel.keys.conn is conn else None
        if known is not None:
            locked: Sequence[Any] = [(k, *v) for k, v in known.items()]
        else:
            locked = conn.execute(
                select(*keys, *(t.c[c] for c in cols)).where(where).with_for_update()
            ).all()
        if not locked:
            return 0
        ids = [tuple(r[:n]) for r in locked]
        if n == 1 and who is keys[0]:
            # The member row itself: its key is the member.
            whose = {i: i[0] for i in ids}
        else:
            whose = {tuple(r[:n]): r[n] for r in conn.execute(select(*keys, who).where(sel.where))}
        by_key = tuple_(*keys).in_(ids) if n > 1 else keys[0].in_([i[0] for i in ids])
        if sel.mode == "drop":
            conn.execute(delete(t).where(by_key))
        else:
            conn.execute(update(t).where(by_key).values(values))
        taken = [(_whose(sel, whose.get(tuple(r[:n]))), tuple(r[n:])) for r in locked]
    how = "deleted" if sel.mode == "drop" else "blanked"
    for member, file_values in taken:
        paths = [(cat, p) for cat, p in files(file_values) if own_row
                 or any(c in cleared for c in tm.files)]  # fmt: skip
        gone.row(tm.name, member, cats, paths, how)
    return len(taken)


def _unlist(
    ctx: EngineContext, conn: Connection, sel: Selection, gone: _Destruction | _Split,
    now: datetime,
) -> int:  # fmt: skip
    """Remove the leavers' entries from a column listing members (``also_names`` ``list:``);
    each removal is accounted a destruction filed under the member removed."""
    tm = sel.table
    lk = unlist.listed_link(tm, sel.blank_columns[0])
    changed = unlist.unlist_rows(ctx, conn, tm, lk, sel.where, dict(sel.owners or {}), now)
    cats = unlist.categories(tm)
    for _key, who in changed:
        for member in who:
            gone.row(tm.name, member, cats, (), "blanked")
    return len(changed)


def _whose(sel: Selection, value: Any) -> Any:
    """The member a cleared row's link names (through the selection's login-id map)."""
    if sel.owners is None:
        return value
    return whose_login(sel.owners, value)


def _archives(ctx: EngineContext, sel: Selection) -> bool:
    """Whether a selection's rows have parts to archive: taken rows, and the kept member row.

    A leaver's side of a row another member still holds (a memo) is cleared, not archived:
    those columns are destroyed (and ledgered so); the row itself is archived by its own
    take once no member holds it, which also keeps one row from being queued twice.
    """
    return sel.mode == "take" or sel.table.name == ctx.datamap.subject.table


def _archive_only(
    ctx: EngineContext, pconn: Connection, selections: list[Selection], scope: Scope,
    now: datetime, scopes: Mapping[Any, Scope] | None = None,
) -> MoveResult:  # fmt: skip
    """Archive the retained parts of the selected rows and leave the rows where they are."""
    result = MoveResult()
    subjects: set[Any] = set()
    with Session(ctx.archive, expire_on_commit=False) as asess, asess.begin():
        writer = ArchiveWriter(ctx, asess, scope, now, scopes)
        for sel in selections:
            if destroy_only(ctx, sel.table) or not _archives(ctx, sel):
                continue
            for chunk in iter_planned(ctx, pconn, sel, now):
                for row in chunk:
                    writer.add(sel.table.name, row)
                    if row.subject is not None:
                        subjects.add(row.subject)
                writer.flush()
        writer.ledger_entries()
    result.archived = archived_counts(writer)
    result.subjects = len(subjects)
    if scopes is not None:
        seen = {owner_of(scopes, s) for s in subjects}
        for who in scopes:
            result.by_subject[who] = MoveResult(
                archived=archived_counts(writer, who), subjects=int(who in seen)
            )
    return result


def delete_returning(
    ctx: EngineContext, conn: Connection, sel: Selection
) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """DELETE the selection's rows; yields (member id, file paths) of each row deleted."""
    tm = sel.table
    t = ctx.table(tm.name)
    assert tm.subject_column is not None
    wanted = (t.c[tm.subject_column], *(t.c[c] for c in tm.files))
    if not dbkind.delete_returning(conn):
        # MySQL 8: read FOR UPDATE, then delete exactly those rows by key (see take_rows_mysql).
        n = len(wanted)
        with_keys = (*wanted, *(t.c[k] for k in tm.keys))
        at = tuple(range(n, n + len(tm.keys)))
        for chunk in take_rows_mysql(conn, t, sel.where, with_keys, at):
            for row in chunk:
                yield row[0], tuple(row[1:n])
        return
    res = conn.execute(delete(t).where(sel.where).returning(*wanted))
    for row in res:
        yield row[0], tuple(row[1:])


def park_destroy_entries(
    ctx: EngineContext,
    conn: Connection,
    scope: Scope,
    tallies: dict[tuple[str, str], _Tally],
) -> None:
    """Write the destruction's ledger entries into the outbox, in the DELETE's transaction."""
    dm = ctx.datamap
    rows = []
    for (table, cat), tally in sorted(tallies.items()):
        if not tally.rows:
            continue
        rows.append(
            {
                "token": uuid.uuid4().hex,
                "entry": {
                    "action": "destroy",
                    "categories": [cat],
                    "tables": [table],
                    "subjects": len(tally.subjects),
                    "rows": tally.rows,
                    "reason": scope.reason,
                    "legal_basis": dm.rule(cat).legal_basis,
                    "method": DESTROY_METHOD,
                    "actor": scope.actor,
                    "task_id": scope.task_id,
                    "request_id": scope.request_id,
                    "subject_ref": scope.subject_ref,
                    "details": {"scope": scope.key, "retention": str(dm.rule(cat).period)},
                },
                "created_at": datetime.now(UTC),
            }
        )
    if rows:
        conn.execute(insert(LedgerOutbox.__table__), rows)


def park_file_keep_entry(
    ctx: EngineContext, conn: Connection, scope: Scope, shared: Referenced, categories: list[str]
) -> None:
    """One ledger entry (in the outbox, in the DELETE's transaction) for files kept because
    live rows still name them: how many and where they are named, never a path."""
    places = shared.places
    entry = {
        "action": "file_keep",
        "categories": categories,
        "tables": sorted({p.split(".", 1)[0].split(":", 1)[0] for p in places}),
        "subjects": len({scope.subject_ref}) if scope.subject_ref else 0,
        "rows": len(shared.where),
        "reason": f"{scope.reason}: file(s) still named by live rows, kept for them",
        "legal_basis": "",
        "method": "reference removed; file kept",
        "actor": scope.actor,
        "task_id": scope.task_id,
        "request_id": scope.request_id,
        "subject_ref": scope.subject_ref,
        "details": {"scope": scope.key, "files": len(shared.where), "named_by": places},
    }
    conn.execute(
        insert(LedgerOutbox.__table__),
        [{"token": uuid.uuid4().hex, "entry": entry, "created_at": datetime.now(UTC)}],
    )


def hand_to_shredder(
    paths: list[str], scope: Scope, categories: list[str], ctx: EngineContext, conn: Connection
) -> tuple[int, int, list[int], str | None]:
    """Write secure-deletion jobs for destroyed file paths in ``conn``'s transaction; returns
    (paths handed, paths refused, job ids to send after the commit, why the first refusal).

    Relative paths resolve against the map's ``site.root``. A path the shredder refuses (no
    site root, outside the storage roots) is still kept, in a job of its own written in the
    same transaction as the DELETE, so no file is ever left with nothing pointing at it; the
    caller fails the request or sweep with :attr:`MoveResult.failure`.
    """
    uniq = list(dict.fromkeys(ctx.datamap.resolve_path(p) for p in paths))
    bases = sorted({ctx.datamap.rule(c).legal_basis for c in categories})
    kwargs: dict[str, Any] = {
        "request_id": scope.request_id,
        "reason": scope.reason,
        "legal_basis": "; ".join(bases),
        "categories": categories,
        "origin": "withdrawal" if scope.request_id is not None else "sweep",
        "conn": conn,
    }
    try:
        return len(uniq), 0, [enqueue_shred(uniq, **kwargs)], None
    except UserError:
        pass
    # One bad path must not strand the others: hand each good one, keep the refused ones.
    good: list[str] = []
    refused: list[str] = []
    why: str | None = None
    for p in uniq:
        try:
            enqueue_shred_check([p])
            good.append(p)
        except UserError as exc:
            refused.append(p)
            why = why or str(exc).split(": ", 1)[-1]
    jobs: list[int] = []
    if good:
        jobs.append(enqueue_shred(good, **kwargs))
    if refused:
        jobs.append(keep_refused(refused, **kwargs))
        log.error("%d file paths were refused by the shredder (scope %s)", len(refused), scope.key)
    return len(good), len(refused), jobs, why


def send_shred_jobs(job_ids: list[int]) -> None:
    """After the caller's commit: send the shred jobs `move` wrote in its transaction."""
    if job_ids:
        send_jobs(job_ids)
