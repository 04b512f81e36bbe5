"""Individual notices to members: policy changes, withdrawal/correction completed, dormancy.

Fan-out. A notice gets one ``lifecycle_notice_recipients`` row per member, inserted set-based
(``INSERT ... SELECT ... ON CONFLICT DO NOTHING``) and unique on (notice, member): running the
fan-out again adds nobody twice. Rows are then sent in member-id ranges, one batch task per
range, each over ONE reused SMTP connection.

Exactly once, never a blind resend. SMTP commits a message when the server reads the end of
DATA, and a client that loses the session after writing it cannot know whether the message was
accepted (the two-generals problem). So each row's intent is recorded durably just before that
point (`Mailer.send`'s ``before_commit``: a Redis journal, `_Journal`, or without Redis a
``sending`` state in the database) and its acceptance right after the 250 (the journal, then
PostgreSQL per chunk; or the database directly). Whoever claims a row next knows which of three
cases it is in: recorded sent (marked, not resent), in flight (maybe accepted: ``in_doubt``,
not resent), or neither (certainly not accepted: sent). A session lost after the end of DATA
also gives ``in_doubt``. In-doubt rows wait for `reconcile` (``lifecycle notice reconcile``),
which settles them from the MTA's log (or by the operator's explicit choice) and sends only
those the server never accepted. A worker killed at any line leaves at most one row in doubt
per SMTP connection. Every message carries a stable ``Message-ID``
(``notice-<notice>-<member>@<domain>``): that is what the MTA log is searched for. Two batches
never send the same row at the same time, even when their member ranges overlap (a redelivered
message next to a resume): each claims rows a chunk at a time under per-row locks that the
database drops the moment a batch's connection dies (`_Claims`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from lifecycle import db
from lifecycle.errors import BrokerUnavailable, UserError
from lifecycle.mailer import Mailer, MessageBuilder, SendResult, smtp_config, valid_address
from lifecycle.member_table import member_table
from lifecycle.ratelimit import chunk_size, notice_limiter
from lifecycle.settings import get_settings
from lifecycle.templates import member_notice, policy_notice
from models.base import utcnow
from models.notify import (
    SENDABLE_STATES,
    Notice,
    NoticeRecipient,
    NoticeState,
    RecipientState,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
NR = NoticeRecipient.__table__
# A notice with pending rows and no batch activity for this long is resumed by beat.
STALE_AFTER = timedelta(minutes=10)
# Stop a batch after this many consecutive "try later" answers: the server is in trouble.
MAX_CONSECUTIVE_RETRIES = 5


# -- creating notices ----------------------------------------------------------------------------


def _printable(value: str, what: str, max_len: int) -> str:
    value = value.strip()
    if not value:
        raise UserError(f"{what} must not be empty")
    if len(value) > max_len:
        raise UserError(f"{what} is longer than {max_len} characters")
    if any(ord(c) < 32 for c in value):
        raise UserError(f"{what} must be one line of printable text")
    return value


def create_policy_notice(
    version: str, title: str, body: str, effective_date: date
) -> tuple[int, bool]:
    """The notice row for a policy change; (id, created). Same version again: the same notice."""
    version = _printable(version, "--version", 64)
    title = _printable(title, "--title", 200)
    if not body.strip():
        raise UserError("the body file is empty")
    with db.session("primary") as s:
        existing = s.scalar(select(Notice).where(Notice.dedup_key == f"policy:{version}"))
        if existing is not None:
            same = (existing.title, existing.body.strip(), existing.effective_date) == (
                title,
                body.strip(),
                effective_date,
            )
            if not same:
                raise UserError(
                    f"a policy notice for version {version} already exists (notice "
                    f"{existing.id}) with a different title, body or date; use a new --version"
                )
            return existing.id, False
        n = Notice(
            kind="policy",
            dedup_key=f"policy:{version}",
            version=version,
            title=title,
            body=body,
            effective_date=effective_date,
            state=NoticeState.PENDING.value,
        )
        s.add(n)
        s.flush()
        return n.id, True


def _dedup_key(kind: str, member_id: int, context: dict[str, Any]) -> str:
    if "request_id" in context:
        return f"{kind}:request{context['request_id']}"
    return f"{kind}:member{member_id}:{context.get('key', utcnow().date().isoformat())}"


def create_member_notice(
    s: Session,
    kind: str,
    member_id: int,
    context: dict[str, Any],
    *,
    state: RecipientState = RecipientState.PENDING,
    address: str | None = None,
) -> int:
    """A one-member notice in the caller's transaction (idempotent by kind + request id).

    ``context`` holds ids, dates and field names: it is rendered into the notice text, which
    names no value of the member's data.
    """
    rendered = member_notice(kind, context)
    key = _dedup_key(kind, member_id, context)
    n = s.scalar(select(Notice).where(Notice.dedup_key == key))
    if n is None:
        n = Notice(
            kind=kind,
            dedup_key=key,
            title=rendered.subject,
            body=rendered.body,
            state=NoticeState.SENDING.value,
            total=1,
        )
        s.add(n)
        s.flush()
    elif n.state != NoticeState.COMPLETED.value:
        # Re-rendered so e.g. a withdrawal notice carries the day it actually completed.
        n.title, n.body = rendered.subject, rendered.body
    _insert_ignore(
        s,
        [
            {
                "notice_id": n.id,
                "member_id": member_id,
                "state": state.value,
                "address": address,
                "attempts": 0,
                "created_at": utcnow(),
            }
        ],
    )
    return n.id


def _insert_ignore(s: Session, rows: list[dict[str, Any]]) -> None:
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    s.execute(
        dialect.insert(NR)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["notice_id", "member_id"])
    )


def capture_withdrawal_notice(s: Session, member_id: int, request_id: int) -> int:
    """Call in the withdrawal job BEFORE the member's data is destroyed.

    Keeps the member's email in the notice row (held, not sent) because the member row will be
    gone when the withdrawal completes; the address is blanked once the notice is sent. Then,
    after the withdrawal completed: ``send_member_notice("withdrawal_completed", member_id,
    {"request_id": request_id})``. Idempotent.
    """
    mt = member_table(s.get_bind())  # type: ignore[arg-type]
    address = None
    if mt.email_col is not None:
        address = s.scalar(select(mt.email_col).where(mt.key_col == member_id))
    ctx = {"request_id": request_id, "completed_date": utcnow().date()}
    nid = create_member_notice(
        s, "withdrawal_completed", member_id, ctx, state=RecipientState.HELD, address=address
    )
    # A re-run after the member row is gone must not overwrite the captured address with None.
    if address is not None:
        s.execute(
            update(NoticeRecipient)
            .where(
                NoticeRecipient.notice_id == nid,
                NoticeRecipient.member_id == member_id,
                NoticeRecipient.state == RecipientState.HELD.value,
            )
            .values(address=address)
        )
    return nid


def discard_member_notice(s: Session, kind: str, request_id: int) -> None:
    """Drop a held notice (e.g. the withdrawal failed for good): blank the captured address."""
    n = s.scalar(select(Notice).where(Notice.dedup_key == f"{kind}:request{request_id}"))
    if n is not None:
        s.execute(
            update(NoticeRecipient)
            .where(NoticeRecipient.notice_id == n.id, NoticeRecipient.state == "held")
            .values(state=RecipientState.NOT_SENT.value, address=None, error_class="Discarded")
        )


def prepare_member_notice(kind: str, member_id: int, context: dict[str, Any]) -> int:
    """Create (or release a held) one-member notice; returns its id. Caller enqueues the send."""
    ctx = {"completed_date": utcnow().date(), **context}
    with db.session("primary") as s:
        nid = create_member_notice(s, kind, member_id, ctx)
        s.execute(
            update(NoticeRecipient)
            .where(
                NoticeRecipient.notice_id == nid,
                NoticeRecipient.state == RecipientState.HELD.value,
            )
            .values(state=RecipientState.PENDING.value)
        )
        s.execute(update(Notice).where(Notice.id == nid).values(updated_at=utcnow()))
    return nid


def release_held_for_completed() -> int:
    """Release withdrawal notices still held although their withdrawal completed.

    The withdrawal job releases its notice itself; this covers a crash (or a database error)
    between its completion and that release. Returns how many rows were released.
    """
    from sqlalchemy import String, cast

    from models.requests import LifecycleRequest, RequestState

    with db.session("primary") as s:
        key = literal("withdrawal_completed:request") + cast(LifecycleRequest.id, String)
        rows = s.execute(
            select(NR.c.id, NR.c.notice_id)
            .join(Notice, Notice.id == NR.c.notice_id)
            .join(LifecycleRequest, Notice.dedup_key == key)
            .where(
                NR.c.state == RecipientState.HELD.value,
                Notice.kind == "withdrawal_completed",
                LifecycleRequest.state == RequestState.COMPLETED.value,
            )
        ).all()
        if rows:
            s.execute(
                update(NR)
                .where(NR.c.id.in_([r[0] for r in rows]))
                .values(state=RecipientState.PENDING.value)
            )
            # Make the resume pass below pick these notices up now.
            s.execute(
                update(Notice)
                .where(Notice.id.in_({r[1] for r in rows}))
                .values(updated_at=utcnow() - STALE_AFTER - timedelta(seconds=1))
            )
    return len(rows)


def send_member_notice(kind: str, member_id: int, context: dict[str, Any]) -> int:
    """Send a notice to one member (withdrawal_completed, correction_completed, ...).

    Safe to call twice: the second call finds the row already sent and sends nothing.
    """
    nid = prepare_member_notice(kind, member_id, context)
    enqueue_batch(nid, member_id, member_id)
    return nid


def enqueue_batch(notice_id: int, first: int, last: int, countdown: float | None = None) -> None:
    from workers.app import app

    app.send_task("lifecycle.notice.send_batch", args=[notice_id, first, last], countdown=countdown)


# -- fan-out -------------------------------------------------------------------------------------


def fanout(notice_id: int) -> dict[str, Any]:
    """Insert a row per active member (policy notices) and return the pending ranges."""
    with db.session("primary") as s:
        n = s.get(Notice, notice_id)
        if n is None:
            raise UserError(f"notice {notice_id} does not exist")
        if n.kind == "policy" and n.state == NoticeState.PENDING.value:
            mt = member_table(s.get_bind())  # type: ignore[arg-type]
            now = utcnow()
            src = select(
                literal(notice_id).label("notice_id"),
                mt.key_col.label("member_id"),
                literal(RecipientState.PENDING.value).label("state"),
                literal(0).label("attempts"),
                literal(now).label("created_at"),
            ).where(mt.active_clause())
            dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
            cols = ["notice_id", "member_id", "state", "attempts", "created_at"]
            s.execute(
                dialect.insert(NR)
                .from_select(cols, src)
                .on_conflict_do_nothing(index_elements=["notice_id", "member_id"])
            )
        if n.state == NoticeState.PENDING.value:
            n.state = NoticeState.SENDING.value
        n.total = s.scalar(select(func.count()).where(NR.c.notice_id == notice_id)) or 0
        n.updated_at = utcnow()
        total = n.total
        pg = s.get_bind().dialect.name == "postgresql"
    if pg:
        # Fresh statistics after a bulk insert: without them the planner may scan the whole
        # table for every per-chunk statement of the batches that follow.
        with db.engine("primary").connect() as conn:
            conn.execute(text(f"ANALYZE {NR.name}"))
            conn.commit()
    ranges = pending_ranges(notice_id)
    if not ranges:
        refresh_counts(notice_id)
    return {"notice_id": notice_id, "total": total, "batches": ranges}


def pending_ranges(notice_id: int, size: int | None = None) -> list[tuple[int, int]]:
    """Member-id ranges of at most ``size`` rows still to act on each.

    That is pending rows, and rows a dead embedded-mode batch left in ``sending`` (the next
    batch turns those into in_doubt): a notice must not wait forever on them.
    """
    size = size or get_settings().notice_batch_size
    with db.session("primary") as s:
        ids = s.scalars(
            select(NR.c.member_id)
            .where(NR.c.notice_id == notice_id, NR.c.state.in_(SENDABLE_STATES))
            .order_by(NR.c.member_id)
        ).all()
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


# -- one batch -----------------------------------------------------------------------------------


@dataclass
class BatchResult:
    notice_id: int
    sent: int = 0
    failed: int = 0
    not_sent: int = 0
    left: int = 0  # still pending (server said "try later", or it went away)
    busy: int = 0  # rows another live batch holds right now (it sends them)
    recovered: int = 0  # sent by a killed batch (found in the journal), marked, not resent
    # Maybe delivered (a session or a killed batch died after the end of DATA): not resent,
    # left for `lifecycle notice reconcile`.
    in_doubt: int = 0

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


# Rows claimed (and locked) at a time: bounds the locks one batch holds.
CLAIM_CHUNK = 250


def _row_key(notice_id: int, member_id: int) -> int:
    digest = hashlib.blake2b(f"notice:{notice_id}:{member_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class _Claims:
    """Who may send which row: one live batch per (notice, member) at any instant.

    PostgreSQL: session advisory locks per row, taken for a chunk at a time on the batch's own
    connection. The server drops them the moment that connection dies (a killed worker), so a
    resumed batch can take over at once, and two batches whose member ranges overlap (a
    redelivered message and a resume) never send the same row. After locking, the row's state
    is read again: a row another batch finished in the meantime is skipped.

    SQLite (embedded mode, one host): one file lock per notice; its batches run one at a time.

    Either way, a claimed row that a journal or a ``sending`` state shows in flight belonged
    to a batch that is dead (it would still hold the claim otherwise).
    """

    def __init__(self, conn: Connection, notice_id: int) -> None:
        self.conn = conn
        self.notice_id = notice_id
        self.pg = conn.dialect.name == "postgresql"
        self._held: list[int] = []
        self._fd: int | None = None

    def __enter__(self) -> _Claims:
        if not self.pg:
            lock_dir = get_settings().var_dir / "locks"
            lock_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(lock_dir / f"notice-{self.notice_id}.lock", os.O_RDWR | os.O_CREAT)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.release()
        if self._fd is not None:
            os.close(self._fd)

    def claim(self, rows: list[Any]) -> tuple[list[Any], int]:
        """The rows of ``rows`` (id, member, address, state) this batch now owns and that are
        still pending or sending, with their state read after locking; and how many another
        batch holds."""
        if not self.pg or not rows:
            return rows, 0
        keys = {_row_key(self.notice_id, r[1]): r for r in rows}
        got = (
            self.conn.execute(
                text(
                    "SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k "
                    "WHERE pg_try_advisory_lock(k)"
                ),
                {"keys": list(keys)},
            )
            .scalars()
            .all()
        )
        self._held.extend(got)
        mine = [keys[k] for k in got]
        fresh = dict(
            self.conn.execute(
                select(NR.c.id, NR.c.state).where(
                    NR.c.id.in_([r[0] for r in mine]), NR.c.state.in_(SENDABLE_STATES)
                )
            ).all()
        )
        return [(r[0], r[1], r[2], fresh[r[0]]) for r in mine if r[0] in fresh], len(rows) - len(
            got
        )

    def release(self) -> None:
        if self.pg and self._held:
            self.conn.execute(
                text("SELECT count(pg_advisory_unlock(k)) FROM unnest(CAST(:keys AS bigint[])) k"),
                {"keys": self._held},
            )
            self._held = []


class _Journal:
    """Which rows are in flight and which the SMTP server accepted, in Redis (ids only).

    Two sets per notice. ``inflight`` gets a row id before its MAIL FROM; ``sent`` gets it
    once the server answered 250 to the end of DATA. Both are pipelined with the SMTP
    conversation (written at once, replies read later) so Redis costs no round trip of its
    own: `confirm`, called just before the terminating ``.`` is written, reads every
    outstanding reply, by which time the SMTP MAIL/RCPT/DATA round trips have long brought
    them in. So any message the server can have accepted has a durable ``inflight`` mark, and
    a batch killed at any line leaves each of its rows either recorded (``sent``: marked sent
    by whoever claims it next, not resent), or in flight (maybe accepted: in_doubt, not
    resent), or unmarked (certainly not accepted: sent normally). PostgreSQL is updated once
    per chunk; only then are the ids removed here. No address, no content: the broker's Redis
    never holds personal data.
    """

    TTL_SECONDS = 7 * 24 * 3600

    def __init__(self, redis_url: str, notice_id: int) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.sent_key = f"lifecycle:notice:{notice_id}:sent"
        self.inflight_key = f"lifecycle:notice:{notice_id}:inflight"
        self._conn: Any = None
        self._unread = 0

    def _write(self, *command: Any) -> None:
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        try:
            self._conn.send_command(*command)
        except Exception:
            self._broken()
            raise
        self._unread += 1

    def _broken(self) -> None:
        # Replies of a failed connection will never come: forget them, reconnect next time.
        self._unread = 0
        with contextlib.suppress(Exception):
            self._conn.disconnect()

    def intend(self, row_id: int) -> None:
        self._write("SADD", self.inflight_key, row_id)

    def add(self, row_id: int) -> None:
        self._write("SADD", self.sent_key, row_id)

    def forget(self, row_id: int) -> None:
        """Certainly not accepted (and the row stays pending): not in flight any more."""
        self._write("SREM", self.inflight_key, row_id)

    def confirm(self) -> None:
        """Wait for the replies of everything written (raises if Redis refused or went away)."""
        try:
            while self._unread:
                self._unread -= 1
                self._conn.read_response()
        except Exception:
            self._broken()
            raise

    def lookup(self, row_ids: list[int]) -> tuple[set[int], set[int]]:
        """(those of ``row_ids`` recorded as sent, those recorded in flight): one round trip."""
        if not row_ids:
            return set(), set()
        pipe = self.client.pipeline(transaction=False)
        pipe.smismember(self.sent_key, row_ids)
        pipe.smismember(self.inflight_key, row_ids)
        in_sent, in_flight = pipe.execute()
        return (
            {rid for rid, hit in zip(row_ids, in_sent, strict=True) if hit},
            {rid for rid, hit in zip(row_ids, in_flight, strict=True) if hit},
        )

    def remove(self, row_ids: list[int]) -> None:
        if row_ids:
            pipe = self.client.pipeline(transaction=False)
            pipe.srem(self.sent_key, *row_ids)
            pipe.srem(self.inflight_key, *row_ids)
            pipe.expire(self.sent_key, self.TTL_SECONDS)
            pipe.expire(self.inflight_key, self.TTL_SECONDS)
            pipe.execute()

    def delete(self) -> None:
        self.client.delete(self.sent_key, self.inflight_key)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self.confirm()
            finally:
                self.client.connection_pool.release(self._conn)
                self._conn = None
        self.client.close()


def _journal(notice_id: int) -> _Journal | None:
    s = get_settings()
    return _Journal(s.broker_url, notice_id) if s.broker_is_redis else None


class IntentNotRecorded(Exception):
    """The row was not ours to send any more (its state changed under the claim)."""


class _Marker:
    """Records each row's intent and outcome the moment it is known.

    With Redis: the journal (`_Journal`), then PostgreSQL per chunk (`flush`). Without Redis
    (embedded mode), straight to the database: the batch's connection is in autocommit mode and
    each mark is one prepared statement on the driver, one round trip: ``sending`` just before
    the end of DATA (the intent), ``sent`` after the 250. On PostgreSQL commits are
    asynchronous (``synchronous_commit = off``): visible to every other session at once and
    kept if the *worker* dies; only a PostgreSQL crash can lose the last fraction of a second
    of marks (see the README's limitations).
    """

    def __init__(self, conn: Connection, notice_id: int) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.raw = conn.connection.driver_connection
        self.journal = _journal(notice_id)
        self._unflushed: list[int] = []  # accepted, not yet marked in the database
        self._settled: list[int] = []  # journal entries to drop at the next flush
        self._current: int | None = None
        self._committed = False
        mark = "%s" if self.pg else "?"
        sendable = "state IN ('pending', 'sending')"
        self._sent_sql = (
            f"UPDATE {NR.name} SET state = 'sent', sent_at = {mark}, address = NULL, "
            f"attempts = attempts + 1 WHERE id = {mark} AND {sendable}"
        )
        self._sending_sql = (
            f"UPDATE {NR.name} SET state = 'sending' WHERE id = {mark} AND state = 'pending'"
        )
        self._unsend_sql = (
            f"UPDATE {NR.name} SET state = 'pending' WHERE id = {mark} AND state = 'sending'"
        )
        if self.pg:
            conn.exec_driver_sql("SET synchronous_commit TO off")
        else:
            conn.exec_driver_sql("PRAGMA synchronous=NORMAL")

    def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        if self.pg:
            return self.raw.execute(sql, params, prepare=True).rowcount  # type: ignore[union-attr]
        return self.raw.execute(sql, params).rowcount  # type: ignore[union-attr]

    def intend(self, row_id: int) -> None:
        """Before MAIL FROM: the row goes in flight (journal: written, reply read later)."""
        self._current = row_id
        self._committed = False
        if self.journal is not None:
            self.journal.intend(row_id)

    def commit(self) -> None:
        """The mailer's ``before_commit``: make the intent durable, or raise (nothing is sent).

        Journal: read the outstanding replies (this row's ``inflight`` mark and the previous
        row's ``sent`` mark). Database: this row becomes ``sending``.
        """
        assert self._current is not None
        if self.journal is not None:
            self.journal.confirm()
        elif self._execute(self._sending_sql, (self._current,)) != 1:
            raise IntentNotRecorded
        self._committed = True

    def sent(self, row_id: int) -> None:
        if self.journal is not None:
            # The database mark at `flush` is what counts; the journal entry only matters if
            # this batch dies before then, and without it the row would be in doubt, not resent.
            self._unflushed.append(row_id)
            try:
                self.journal.add(row_id)
            except Exception as exc:
                log.warning("notice journal unavailable (%s)", type(exc).__name__)
            return
        at = utcnow()
        stamp: Any = at if self.pg else at.strftime("%Y-%m-%d %H:%M:%S.%f")
        self._execute(self._sent_sql, (stamp, row_id))

    def not_sent(self, row_id: int) -> None:
        """Certainly not accepted ("try later", or the session failed before the end of DATA):
        the row stays pending and is no longer in flight."""
        if self.journal is not None:
            self._settled.append(row_id)
            # Pipelined so it costs nothing; if it is lost, a crash before `flush` leaves the
            # row in doubt rather than resent, which is the safe side.
            with contextlib.suppress(Exception):
                self.journal.forget(row_id)
        elif self._committed and self._current == row_id:
            self._execute(self._unsend_sql, (row_id,))

    def recover(self, rows: list[Any]) -> tuple[set[int], set[int]]:
        """Rows (id, member, address, state) a dead batch left: (marked sent, marked in doubt).

        Recorded as sent → sent. In flight and not recorded sent, or left ``sending`` → in
        doubt: the server may have accepted the message, so it is not sent again.
        """
        if not rows:
            return set(), set()
        doubt = {r[0] for r in rows if r[3] == RecipientState.SENDING.value}
        sent: set[int] = set()
        in_flight: set[int] = set()
        if self.journal is not None:
            sent, in_flight = self.journal.lookup([r[0] for r in rows])
            doubt |= in_flight
        doubt -= sent
        if sent:
            self._mark_sent(sorted(sent))
        if doubt:
            self.finish(sorted(doubt), RecipientState.IN_DOUBT, "Interrupted")
        if self.journal is not None and (sent or in_flight):
            # Only once the database has them may the journal forget them.
            self.journal.remove(sorted(sent | in_flight))
        return sent, doubt

    def flush(self) -> None:
        """Accepted rows of this chunk into the database; then the journal forgets the chunk."""
        if self.journal is None:
            return
        try:
            # Replies first: a mark still travelling on the pipelined connection must not
            # land after the removal below and outlive the row's database state.
            self.journal.confirm()
            ordered = True
        except Exception as exc:
            log.warning("notice journal unavailable (%s)", type(exc).__name__)
            ordered = False
        if self._unflushed:
            self._mark_sent(self._unflushed)
        done = self._unflushed + self._settled
        self._unflushed, self._settled = [], []
        if done and ordered:
            self.journal.remove(done)

    def _mark_sent(self, row_ids: list[int]) -> None:
        self.conn.execute(
            update(NR)
            .where(NR.c.id.in_(row_ids), NR.c.state.in_(SENDABLE_STATES))
            .values(
                state=RecipientState.SENT.value,
                sent_at=utcnow(),
                address=None,
                attempts=NR.c.attempts + 1,
            )
        )

    def finish(self, row_ids: list[int], state: RecipientState, error: str) -> None:
        if not row_ids:
            return
        values: dict[str, Any] = {
            "state": state.value,
            "error_class": error[:64],
            "attempts": NR.c.attempts + 1,
        }
        if state != RecipientState.IN_DOUBT:
            # A captured address is blanked once the row is final; an in-doubt row may still
            # have to be sent (reconcile), so it keeps it.
            values["address"] = None
        self.conn.execute(
            update(NR).where(NR.c.id.in_(row_ids), NR.c.state.in_(SENDABLE_STATES)).values(values)
        )
        if self.journal is not None:
            self._settled.extend(row_ids)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.flush()
        if self.journal is not None:
            with contextlib.suppress(Exception):
                self.journal.close()
        if self.pg:
            with contextlib.suppress(Exception):
                self.conn.exec_driver_sql("RESET synchronous_commit")


def _builder(n: Notice, mail_from: str) -> MessageBuilder:
    if n.kind == "policy":
        r = policy_notice(n.version or "", n.title, n.body, n.effective_date or utcnow().date())
        return MessageBuilder(mail_from, r.subject, r.body)
    return MessageBuilder(mail_from, n.title, n.body)


def send_batch(
    notice_id: int, first: int, last: int, progress: Progress | None = None
) -> BatchResult:
    """Send the pending rows of one member-id range over one SMTP connection."""
    result = BatchResult(notice_id)
    settings = get_settings()
    with db.session("primary") as s:
        n = s.get(Notice, notice_id)
        if n is None:
            return result
        builder = _builder(n, settings.mail_from)
        n.updated_at = utcnow()
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
    in_range = and_(
        NR.c.notice_id == notice_id,
        NR.c.member_id.between(first, last),
        NR.c.state.in_(SENDABLE_STATES),
    )
    # Page through the recipient rows on their own index, then look the addresses up by key:
    # a join with the member table under LIMIT can make the planner scan every member per page.
    page = (
        select(NR.c.id, NR.c.member_id, NR.c.address, NR.c.state)
        .where(in_range, NR.c.member_id > bindparam("after"))
        .order_by(NR.c.member_id)
        .limit(CLAIM_CHUNK)
    )

    def with_addresses(rows: list[Any]) -> list[Any]:
        need = [r[1] for r in rows if r[2] is None]
        found: dict[int, Any] = {}
        if need and mt.email_col is not None:
            found = dict(
                conn.execute(select(mt.key_col, mt.email_col).where(mt.key_col.in_(need))).all()
            )
        return [(r[0], r[1], r[2] if r[2] is not None else found.get(r[1])) for r in rows]

    cfg = smtp_config()
    # Autocommit: every mark, claim and page read is its own statement, nothing held open.
    with (
        db.engine("primary").connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        _Claims(conn, notice_id) as claims,
    ):
        total = conn.execute(select(func.count()).where(in_range)).scalar() or 0
        if cfg is None and total:
            log.warning(
                "LIFECYCLE_SMTP_URL is not set: notices of notice %s are recorded as not sent",
                notice_id,
            )
        marker = _Marker(conn, notice_id)
        sender = _Sender(cfg, builder, marker, result, settings)
        done = 0
        after = first - 1
        try:
            while not sender.stopped:
                rows = conn.execute(page, {"after": after}).all()
                if not rows:
                    break
                after = rows[-1][1]
                mine, busy = claims.claim(rows)
                result.busy += busy
                recovered, doubtful = marker.recover(mine)
                result.recovered += len(recovered)
                result.in_doubt += len(doubtful)
                skip = recovered | doubtful
                sender.send_rows(with_addresses([r for r in mine if r[0] not in skip]))
                marker.flush()
                claims.release()
                done += len(rows)
                if progress is not None:
                    progress(min(done, total), total)
        finally:
            sender.close()
            marker.close()
    if result.in_doubt:
        log.warning(
            "notice %s: %d message(s) in doubt (maybe delivered); not resent. Resolve with "
            "`lifecycle notice reconcile %s --mail-log FILE`",
            notice_id,
            result.in_doubt,
            notice_id,
        )
    refresh_counts(notice_id)
    return result


class _Sender:
    def __init__(
        self,
        cfg: Any,
        builder: MessageBuilder,
        marker: _Marker,
        result: BatchResult,
        settings: Any,
    ) -> None:
        self.mailer = Mailer(cfg) if cfg is not None else None
        self.builder = builder
        self.marker = marker
        self.result = result
        self.mail_from = settings.mail_from
        self.domain = settings.mail_from.rpartition("@")[2] or "localhost"
        self.limiter = notice_limiter()
        self.chunk = chunk_size(settings.notice_rate_per_second)
        self.allowance = 0
        self.consecutive = 0
        self.stopped = False

    def send_rows(self, rows: list[Any]) -> None:
        result = self.result
        marker = self.marker
        unusable = [r[0] for r in rows if not valid_address(r[2])]
        marker.finish(unusable, RecipientState.NOT_SENT, "NoAddress")
        result.not_sent += len(unusable)
        todo = [r for r in rows if valid_address(r[2])]
        if self.mailer is None:
            marker.finish([r[0] for r in todo], RecipientState.NOT_SENT, "SmtpNotConfigured")
            result.not_sent += len(todo)
            return
        for i, (row_id, member_id, address) in enumerate(todo):
            if self.allowance == 0:
                self.limiter.acquire(self.chunk)
                self.allowance = self.chunk
            self.allowance -= 1
            raw = self.builder.build(
                address, f"notice-{result.notice_id}-{member_id}@{self.domain}"
            )
            try:
                marker.intend(row_id)
            except Exception as exc:
                # Journal unreachable: nothing was sent; after a few, the batch pauses and is
                # retried later, like a server saying "try later".
                res = SendResult("retry", None, type(exc).__name__)
            else:
                res = self.mailer.send(self.mail_from, address, raw, before_commit=marker.commit)
            if res.status == "sent":
                marker.sent(row_id)
                result.sent += 1
                self.consecutive = 0
                continue
            if res.status == "rejected":
                marker.finish([row_id], RecipientState.FAILED, res.error_class or str(res.code))
                result.failed += 1
                self.consecutive = 0
                continue
            if res.status == "unknown":
                marker.finish([row_id], RecipientState.IN_DOUBT, res.error_class or "Unknown")
                result.in_doubt += 1
            else:
                marker.not_sent(row_id)
                result.left += 1
            self.consecutive += 1
            if self.consecutive >= MAX_CONSECUTIVE_RETRIES:
                result.left += len(todo) - i - 1
                self.stopped = True
                log.warning(
                    "notice %s: the SMTP server keeps failing (%s); batch paused",
                    result.notice_id,
                    res.error_class or res.code,
                )
                return

    def close(self) -> None:
        if self.mailer is not None:
            self.mailer.close()


# -- counts and progress -------------------------------------------------------------------------

# Rows that still need a batch: a notice is not complete while any is left.
UNFINISHED_STATES = (*SENDABLE_STATES, RecipientState.HELD.value)


def counts(s: Session, notice_id: int) -> dict[str, int]:
    return {
        st: int(c)
        for st, c in s.execute(
            select(NR.c.state, func.count()).where(NR.c.notice_id == notice_id).group_by(NR.c.state)
        ).all()
    }


def refresh_counts(notice_id: int) -> dict[str, int]:
    """Complete the notice with its final totals once nothing is left to send.

    Totals are recounted (idempotent, unlike increments), but only then: while rows are still
    pending, a batch just records that it was active (a full count per batch would cost the
    database a scan of the whole notice, a hundred times for a large one). In-doubt rows do
    not hold a notice open: it completes, and `lifecycle status` shows them as needing
    attention until they are reconciled.
    """
    with db.session("primary") as s:
        unfinished = s.scalar(
            select(NR.c.id)
            .where(NR.c.notice_id == notice_id, NR.c.state.in_(UNFINISHED_STATES))
            .limit(1)
        )
        if unfinished is not None:
            s.execute(update(Notice).where(Notice.id == notice_id).values(updated_at=utcnow()))
            return {"pending": 1}
        c = counts(s, notice_id)
        values: dict[str, Any] = {
            "sent": c.get("sent", 0),
            "not_sent": c.get("not_sent", 0),
            "failed": c.get("failed", 0),
            "total": sum(c.values()),
            "updated_at": utcnow(),
            "state": NoticeState.COMPLETED.value,
            "completed_at": utcnow(),
        }
        journal = _journal(notice_id)
        if journal is not None:
            with contextlib.suppress(Exception):
                journal.delete()
            journal.close()
        s.execute(
            update(Notice)
            .where(Notice.id == notice_id, Notice.state != NoticeState.PENDING.value)
            .values(**values)
        )
    return c


def progress(notice_id: int) -> dict[str, Any]:
    with db.session("primary") as s:
        n = s.get(Notice, notice_id)
        if n is None:
            raise UserError(f"notice {notice_id} does not exist")
        c = counts(s, notice_id)
        return {
            "state": n.state,
            "total": sum(c.values()),
            "pending": sum(c.get(st, 0) for st in UNFINISHED_STATES),
            "sent": c.get("sent", 0),
            "not_sent": c.get("not_sent", 0),
            "failed": c.get("failed", 0),
            "in_doubt": c.get(RecipientState.IN_DOUBT.value, 0),
        }


def stale_notices() -> list[int]:
    """Notices left unfinished with no batch activity for a while (e.g. after a crash).

    Also a completed notice that has rows to send again (a reconcile racing a batch's final
    count could leave one so); one with only in-doubt rows left is not stale: resending those
    is the operator's decision (`lifecycle notice reconcile`).
    """
    cutoff = utcnow() - STALE_AFTER
    leftover = exists().where(NR.c.notice_id == Notice.id, NR.c.state.in_(UNFINISHED_STATES))
    with db.session("primary") as s:
        return list(
            s.scalars(
                select(Notice.id).where(
                    Notice.updated_at < cutoff,
                    or_(
                        Notice.state.in_([NoticeState.PENDING.value, NoticeState.SENDING.value]),
                        and_(Notice.state == NoticeState.COMPLETED.value, leftover),
                    ),
                )
            )
        )


def resume_ranges(notice_id: int) -> list[tuple[int, int]]:
    """What is left to send of a notice (fanning it out first if that never happened)."""
    with db.session("primary") as s:
        n = s.get(Notice, notice_id)
        if n is None:
            return []
        n.updated_at = utcnow()
        state = n.state
    if state == NoticeState.PENDING.value:
        return list(fanout(notice_id)["batches"])
    ranges = pending_ranges(notice_id)
    if ranges:
        _reopen(notice_id)
    else:
        refresh_counts(notice_id)
    return ranges


def _reopen(notice_id: int) -> None:
    """A completed notice that has rows to send again is sending (for `--wait` and status)."""
    with db.session("primary") as s:
        s.execute(
            update(Notice)
            .where(Notice.id == notice_id, Notice.state == NoticeState.COMPLETED.value)
            .values(state=NoticeState.SENDING.value, completed_at=None, updated_at=utcnow())
        )


# -- settling in-doubt rows ----------------------------------------------------------------------

# Our Message-IDs: notice-<notice>-<member>@<domain>.
_OUR_ID = re.compile(rb"(?<![\w.-])notice-(\d+)-(\d+)@[A-Za-z0-9.-]+")
# Postfix's cleanup logs a message's Message-ID while the message is still arriving, before
# the end of DATA; a message dropped unterminated is logged there too and never queued. Only
# qmgr's "from=<...>" line for the same queue id says the message was accepted.
_PF_CLEANUP = re.compile(rb"/cleanup\[\d+\]: ([0-9A-Za-z]+): (?:resent-)?message-id=")
_PF_QUEUED = re.compile(rb"/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<")


def accepted_in_mail_log(notice_id: int, lines: Any) -> set[int]:
    """Member ids of ``notice_id`` whose message the MTA log shows as accepted.

    Any line holding one of our Message-IDs counts, except Postfix's cleanup line, which
    counts only if qmgr queued the same queue id (anywhere in the log).
    """
    accepted: set[int] = set()
    by_queue_id: dict[bytes, set[int]] = {}
    queued: set[bytes] = set()
    want = str(notice_id).encode()
    for line in lines:
        q = _PF_QUEUED.search(line)
        if q is not None:
            queued.add(q.group(1))
        found = {int(m.group(2)) for m in _OUR_ID.finditer(line) if m.group(1) == want}
        if not found:
            continue
        c = _PF_CLEANUP.search(line)
        if c is not None:
            by_queue_id.setdefault(c.group(1), set()).update(found)
        else:
            accepted |= found
    for qid, members in by_queue_id.items():
        if qid in queued:
            accepted |= members
    return accepted


@dataclass
class ReconcileResult:
    notice_id: int
    in_doubt: int = 0  # rows found in doubt
    delivered: int = 0  # marked sent (the log shows them accepted, or the operator said so)
    resend: int = 0  # back to pending, to be sent again
    batches: int = 0  # batch tasks enqueued


def _read_mail_logs(notice_id: int, paths: list[Path]) -> set[int]:
    accepted: set[int] = set()
    for path in paths:
        try:
            with path.open("rb") as f:
                accepted |= accepted_in_mail_log(notice_id, f)
        except FileNotFoundError:
            raise UserError(f"mail log {path} does not exist") from None
        except IsADirectoryError:
            raise UserError(f"mail log {path} is a directory") from None
        except OSError as exc:
            raise UserError(f"mail log {path} cannot be read ({exc.strerror})") from None
    return accepted


def reconcile(
    notice_id: int,
    *,
    mail_logs: list[Path] | None = None,
    assume_delivered: bool = False,
    resend: bool = False,
    enqueue: Callable[[int, int, int], None] | None = None,
) -> ReconcileResult:
    """Settle a notice's in-doubt rows: sent if the MTA accepted them, else pending again.

    Exactly one way to decide: ``mail_logs`` (the MTA's logs, searched for our Message-IDs),
    ``assume_delivered`` (all sent) or ``resend`` (all pending). Everything is checked and the
    logs read before anything changes; the rows change in one transaction; then the notice's
    pending rows are enqueued (a crash before that leaves them to beat's resume job, and a
    second run enqueues them again: claims keep that from sending anything twice).
    """
    modes = sum([bool(mail_logs), assume_delivered, resend])
    if modes != 1:
        raise UserError("give exactly one of --mail-log FILE, --assume-delivered, --resend")
    with db.session("primary") as s:
        if s.get(Notice, notice_id) is None:
            raise UserError(f"notice {notice_id} does not exist")
    accepted = _read_mail_logs(notice_id, mail_logs) if mail_logs else set()
    result = ReconcileResult(notice_id)
    with db.session("primary") as s:
        rows = s.execute(
            select(NR.c.id, NR.c.member_id).where(
                NR.c.notice_id == notice_id, NR.c.state == RecipientState.IN_DOUBT.value
            )
        ).all()
        result.in_doubt = len(rows)
        if assume_delivered:
            delivered = [r[0] for r in rows]
        else:
            delivered = [r[0] for r in rows if r[1] in accepted]
        settled = set(delivered)
        again = [r[0] for r in rows if r[0] not in settled]
        if again:
            journal = _journal(notice_id)
            if journal is not None:
                # A stale in-flight mark would make the next batch put the row back in doubt.
                try:
                    journal.remove(again)
                except Exception as exc:
                    raise BrokerUnavailable(
                        f"broker unreachable ({type(exc).__name__}); nothing was changed"
                    ) from None
                finally:
                    journal.close()
        now = utcnow()
        for ids in _chunks(delivered):
            s.execute(
                update(NR)
                .where(NR.c.id.in_(ids), NR.c.state == RecipientState.IN_DOUBT.value)
                .values(state=RecipientState.SENT.value, sent_at=now, address=None)
            )
        for ids in _chunks(again):
            s.execute(
                update(NR)
                .where(NR.c.id.in_(ids), NR.c.state == RecipientState.IN_DOUBT.value)
                .values(state=RecipientState.PENDING.value, error_class=None)
            )
        if again:
            s.execute(
                update(Notice)
                .where(Notice.id == notice_id, Notice.state == NoticeState.COMPLETED.value)
                .values(state=NoticeState.SENDING.value, completed_at=None)
            )
            s.execute(update(Notice).where(Notice.id == notice_id).values(updated_at=now))
        result.delivered, result.resend = len(delivered), len(again)
    mode = "mail-log" if mail_logs else "assume-delivered" if assume_delivered else "resend"
    log.info(
        "notice %s reconciled (%s): %d in doubt, %d marked sent, %d to send again",
        notice_id,
        mode,
        result.in_doubt,
        result.delivered,
        result.resend,
    )
    ranges = pending_ranges(notice_id)
    send = enqueue or enqueue_batch
    for first, last in ranges:
        send(notice_id, first, last)
    result.batches = len(ranges)
    if not ranges:
        refresh_counts(notice_id)
    return result


def in_doubt_by_notice(s: Session) -> list[dict[str, Any]]:
    """Notices with in-doubt rows (ids and counts only), for `lifecycle status`."""
    rows = s.execute(
        select(NR.c.notice_id, Notice.kind, func.count())
        .join(Notice, Notice.id == NR.c.notice_id)
        .where(NR.c.state == RecipientState.IN_DOUBT.value)
        .group_by(NR.c.notice_id, Notice.kind)
        .order_by(NR.c.notice_id)
    ).all()
    return [
        {
            "notice_id": nid,
            "kind": kind,
            "in_doubt": int(n),
            "resolve": f"lifecycle notice reconcile {nid} --mail-log FILE",
        }
        for nid, kind, n in rows
    ]


def _chunks(ids: list[int], size: int = 1000) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


# -- dormancy advance notice ---------------------------------------------------------------------


def dormancy_advance(now: datetime | None = None) -> int | None:
    """Notice members who will become dormant in ``advance_notice_days`` (if dormancy is on).

    Dormancy is an operator option (the 1-year rule was repealed in 2023): nothing happens
    unless the data map enables it. A member is noticed once per period of inactivity.
    """
    from lifecycle.datamap import load_datamap

    dm = load_datamap()
    dorm = dm.subject.dormancy
    if not dorm.enabled or not dorm.last_active_column:
        return None
    now = now or utcnow()
    today = now.date()
    separation = today + timedelta(days=dorm.advance_notice_days)
    threshold = dorm.inactive_for.subtract_from(now) + timedelta(days=dorm.advance_notice_days)
    ctx = {
        "separation_date": separation,
        "inactive_days": round(dorm.inactive_for.approx_days),
    }
    rendered = member_notice("dormancy_advance", ctx)
    with db.session("primary") as s:
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        last_active = mt.table.c[dorm.last_active_column]
        key = f"dormancy_advance:{today.isoformat()}"
        n = s.scalar(select(Notice).where(Notice.dedup_key == key))
        if n is None:
            n = Notice(
                kind="dormancy_advance",
                dedup_key=key,
                title=rendered.subject,
                body=rendered.body,
                effective_date=separation,
                state=NoticeState.SENDING.value,
            )
            s.add(n)
            s.flush()
        nr2 = aliased(NoticeRecipient)
        n2 = aliased(Notice)
        already = exists().where(
            and_(
                nr2.member_id == mt.key_col,
                n2.id == nr2.notice_id,
                n2.kind == "dormancy_advance",
                nr2.created_at > last_active,
            )
        )
        src = select(
            literal(n.id).label("notice_id"),
            mt.key_col.label("member_id"),
            literal(RecipientState.PENDING.value).label("state"),
            literal(0).label("attempts"),
            literal(now).label("created_at"),
        ).where(mt.active_clause(), last_active.is_not(None), last_active <= threshold, ~already)
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        s.execute(
            dialect.insert(NR)
            .from_select(["notice_id", "member_id", "state", "attempts", "created_at"], src)
            .on_conflict_do_nothing(index_elements=["notice_id", "member_id"])
        )
        n.total = s.scalar(select(func.count()).where(NR.c.notice_id == n.id)) or 0
        n.updated_at = utcnow()
        return n.id


__all__ = [
    "BatchResult",
    "capture_withdrawal_notice",
    "create_member_notice",
    "create_policy_notice",
    "discard_member_notice",
    "dormancy_advance",
    "fanout",
    "pending_ranges",
    "progress",
    "reconcile",
    "send_batch",
    "send_member_notice",
]
