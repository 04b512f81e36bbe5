"""Sending one batch of a notice: claims, intent and sent marks, one reused SMTP session.

The protocol (exactly once, never a blind resend) is described in `lifecycle.notices`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select, text, update

from lifecycle.channels.mailer import Mailer, MessageBuilder, SendResult, smtp_config, valid_address
from lifecycle.channels.ratelimit import chunk_size, notice_limiter
from lifecycle.channels.templates import policy_notice
from lifecycle.core import db, dbkind
from lifecycle.core.settings import get_settings
from lifecycle.datamap.member_table import member_table
from lifecycle.notices.identity import message_id, message_id_domain
from lifecycle.notices.journal import Journal, group_journal_for, journal_for
from lifecycle.notices.members import (
    MAX_CONSECUTIVE_RETRIES,
    NO_ADDRESS,
    NO_CHANNEL,
    NR,
    Progress,
    refresh_counts,
    refresh_counts_many,
)
from models.base import utcnow
from models.notices import SENDABLE_STATES, Notice, NoticeRecipientState
from models.requests import Restriction

log = logging.getLogger(__name__)


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
    restricted: int = 0  # left pending: the member is restricted (a correction is open)
    # Why the last message was not sent ("ConnectionRefusedError: connection refused
    # 127.0.0.1:25"): for the retry's log line and Flower; not part of the counts.
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.__dict__.copy()
        out.pop("last_error", None)
        return out


# Rows claimed (and locked) at a time: bounds the locks one batch holds.
CLAIM_CHUNK = 250
# Seconds per wait for a notice's lock on MySQL/MariaDB (asked again until it is ours).
_MYSQL_LOCK_WAIT = 60


def _row_key(notice_id: int, member_id: int) -> int:
    digest = hashlib.blake2b(f"notice:{notice_id}:{member_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _pg_try_locks(conn: Connection, keys: list[int]) -> list[int]:
    """The advisory locks of ``keys`` this session now holds (taken without waiting)."""
    sql = "SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k WHERE pg_try_advisory_lock(k)"
    return list(conn.execute(text(sql), {"keys": keys}).scalars().all())


def _mysql_lock_name(conn: Connection, notice_id: int) -> str:
    # Server-wide names: the database's name keeps two installs on one server apart.
    return f"lc:{conn.engine.url.database}:notice-{notice_id}"[:64]


def _lock_file(notice_id: int) -> int:
    """An open descriptor of the notice's lock file (SQLite, one host)."""
    lock_dir = get_settings().var_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    return os.open(lock_dir / f"notice-{notice_id}.lock", os.O_RDWR | os.O_CREAT)


class _Claims:
    """Who may send which row: one live batch per (notice, member) at any instant.

    PostgreSQL: session advisory locks per row, taken for a chunk at a time on the batch's own
    connection. The server drops them the moment that connection dies (a killed worker), so a
    resumed batch can take over at once, and two batches whose member ranges overlap (a
    redelivered message and a resume) never send the same row. After locking, the row's state
    is read again: a row another batch finished in the meantime is skipped.

    MySQL/MariaDB: one server-wide ``GET_LOCK`` per notice on the batch's connection; its
    batches run one at a time, and the server drops the lock when that connection dies.

    SQLite (embedded mode, one host): one file lock per notice; its batches run one at a time.

    In every case, a claimed row that a journal or a ``sending`` state shows in flight belonged
    to a batch that is dead (it would still hold the claim otherwise).
    """

    def __init__(self, conn: Connection, notice_id: int) -> None:
        self.conn = conn
        self.notice_id = notice_id
        self.family = dbkind.family(conn)
        self.pg = self.family == "postgresql"
        self._held: list[int] = []
        self._fd: int | None = None

    def __enter__(self) -> _Claims:
        if self.family == "mysql":
            # No per-row advisory locks to claim with: batches of one notice take turns on a
            # server-wide lock instead (as the file lock does on one host), released by the
            # server if the worker dies. A finite timeout, re-asked: MariaDB answers a negative
            # one (MySQL's "forever") with NULL at once (MDEV-4017), and no lock at all.
            while True:
                got = self.conn.execute(
                    text("SELECT GET_LOCK(:n, :t)"),
                    {"n": self._mysql_lock, "t": _MYSQL_LOCK_WAIT},
                ).scalar()
                if got == 1:
                    return self
                if got is None:
                    raise RuntimeError(f"notice {self.notice_id}: GET_LOCK failed on the server")
        if self.family == "sqlite":
            self._fd = _lock_file(self.notice_id)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    @property
    def _mysql_lock(self) -> str:
        return _mysql_lock_name(self.conn, self.notice_id)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.release()
        if self.family == "mysql":
            with contextlib.suppress(Exception):
                self.conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self._mysql_lock})
        if self._fd is not None:
            os.close(self._fd)

    def claim(self, rows: Sequence[Any]) -> tuple[list[Any], int]:
        """The rows of ``rows`` (id, member, address, state) this batch now owns and that are
        still pending or sending, with their state read after locking; and how many another
        batch holds."""
        if not self.pg or not rows:
            return list(rows), 0
        keys = {_row_key(self.notice_id, r[1]): r for r in rows}
        got = _pg_try_locks(self.conn, list(keys))
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


class IntentNotRecorded(Exception):
    """The row was not ours to send any more (its state changed under the claim)."""


class _Marker:
    """Records each row's intent and outcome the moment it is known.

    With Redis: the journal (`Journal`), then the database per chunk (`flush`). Without Redis
    (embedded mode, or any primary with the filesystem broker), straight to the database: the
    batch's connection is in autocommit mode and each mark is one statement on the driver
    (prepared on PostgreSQL), one round trip: ``sending`` just before
    the end of DATA (the intent), ``sent`` after the 250. On PostgreSQL commits are
    asynchronous (``synchronous_commit = off``): visible to every other session at once and
    kept if the *worker* dies; only a PostgreSQL crash can lose the last fraction of a second
    of marks (see the README's limitations).
    """

    def __init__(self, conn: Connection, notice_id: int, journal: Journal | None = None) -> None:
        self.conn = conn
        self.family = dbkind.family(conn)
        self.pg = self.family == "postgresql"
        self.raw = conn.connection.driver_connection
        # A group's pass brings one journal for all its notices (`GroupJournal`).
        self.journal = journal if journal is not None else journal_for(notice_id)
        self._unflushed: list[int] = []  # accepted, not yet marked in the database
        self._settled: list[int] = []  # journal entries to drop at the next flush
        self._current: int | None = None
        self._committed = False
        # The driver's own placeholder: psycopg and PyMySQL take %s, sqlite3 takes ?.
        mark = "?" if self.family == "sqlite" else "%s"
        sendable = "state IN (" + ", ".join(f"'{st}'" for st in SENDABLE_STATES) + ")"
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
        # Each server by name: a setting one server has is a syntax error on the others (the
        # PRAGMA once ran on MariaDB and failed every batch). MySQL/MariaDB have no per-session
        # equivalent (innodb_flush_log_at_trx_commit is global): marks commit as the site set.
        if self.family == "postgresql":
            conn.exec_driver_sql("SET synchronous_commit TO off")
        elif self.family == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=NORMAL")

    def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        if self.family == "postgresql":
            return int(self.raw.execute(sql, params, prepare=True).rowcount)  # type: ignore[union-attr]
        if self.family == "mysql":
            # A PyMySQL connection has no execute of its own; the cursor's returns the row count.
            with self.raw.cursor() as cur:  # type: ignore[union-attr]
                return int(cur.execute(sql, params))
        return int(self.raw.execute(sql, params).rowcount)  # type: ignore[union-attr]

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
        # sqlite3's default datetime adapter is deprecated; the column holds this text form.
        stamp: Any = at.strftime("%Y-%m-%d %H:%M:%S.%f") if self.family == "sqlite" else at
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
        doubt = {r[0] for r in rows if r[3] == NoticeRecipientState.SENDING.value}
        sent: set[int] = set()
        in_flight: set[int] = set()
        if self.journal is not None:
            sent, in_flight = self.journal.lookup([r[0] for r in rows])
            doubt |= in_flight
        doubt -= sent
        if sent:
            self._mark_sent(sorted(sent))
        if doubt:
            self.finish(sorted(doubt), NoticeRecipientState.IN_DOUBT, "Interrupted")
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
                state=NoticeRecipientState.SENT.value,
                sent_at=utcnow(),
                address=None,
                attempts=NR.c.attempts + 1,
            )
        )

    def finish(
        self,
        row_ids: list[int],
        state: NoticeRecipientState,
        error: str,
        keep_address: bool = False,
    ) -> None:
        if not row_ids:
            return
        values: dict[str, Any] = {
            "state": state.value,
            "error_class": error[:64],
            "attempts": NR.c.attempts + 1,
        }
        if state != NoticeRecipientState.IN_DOUBT and not keep_address:
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
        # A request's own completion notice is the answer to that request: it goes out even
        # though the member is (still) restricted.
        hold_restricted = n.kind not in REQUEST_NOTICES | LEGAL_DUTY_NOTICES
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
                todo = [r for r in mine if r[0] not in skip]
                # 처리정지: a member whose data is under correction is not written to (the
                # address itself may be what is being corrected). The row stays pending; the
                # batch's retry, or beat's resume, sends it once the restriction is lifted.
                held = _restricted(conn, [r[1] for r in todo]) if hold_restricted else set()
                if held:
                    todo = [r for r in todo if r[1] not in held]
                    result.left += len(held)
                    result.restricted += len(held)
                sender.send_rows(with_addresses(todo))
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


REQUEST_NOTICES = frozenset(
    {"withdrawal_completed", "correction_completed", "request_answer", "request_postponed"}
)
# Notices the law itself requires whatever else the member asked: a breach notice (법 제34조①)
# is not held by 처리정지, which gives way to a duty under a statute (법 제37조②1호).
LEGAL_DUTY_NOTICES = frozenset({"breach"})


def _restricted(conn: Connection, member_ids: list[int]) -> set[int]:
    if not member_ids:
        return set()
    r = Restriction.__table__
    return set(conn.execute(select(r.c.member_id).where(r.c.member_id.in_(member_ids))).scalars())


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
        self.domain = message_id_domain() if self.mailer is not None else ""
        self.limiter = notice_limiter()
        self.chunk = chunk_size(settings.notice_rate_per_second)
        self.allowance = 0
        self.consecutive = 0
        self.stopped = False

    def send_rows(self, rows: list[Any]) -> None:
        result = self.result
        marker = self.marker
        unusable = [r[0] for r in rows if not valid_address(r[2])]
        marker.finish(unusable, NoticeRecipientState.NOT_SENT, NO_ADDRESS)
        result.not_sent += len(unusable)
        todo = [r for r in rows if valid_address(r[2])]
        if self.mailer is None:
            # The address is kept: a withdrawn member's captured address is the only copy, and
            # these rows are sent once a mail server is configured (`requeue_for_channel`).
            marker.finish(
                [r[0] for r in todo], NoticeRecipientState.NOT_SENT, NO_CHANNEL, keep_address=True
            )
            result.not_sent += len(todo)
            return
        for i, (row_id, member_id, address) in enumerate(todo):
            if self.allowance == 0:
                self.limiter.acquire(self.chunk)
                self.allowance = self.chunk
            self.allowance -= 1
            raw = self.builder.build(address, message_id(result.notice_id, member_id, self.domain))
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
                marker.finish(
                    [row_id], NoticeRecipientState.FAILED, res.error_class or str(res.code)
                )
                result.failed += 1
                self.consecutive = 0
                continue
            result.last_error = f"{res.error_class or 'SMTP'}: {res.reason or res.code or '-'}"
            if res.status == "unknown":
                marker.finish([row_id], NoticeRecipientState.IN_DOUBT, res.error_class or "Unknown")
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
                    result.last_error,
                )
                return

    def close(self) -> None:
        if self.mailer is not None:
            self.mailer.close()


class _GroupClaims:
    """The claims of a group's one-member notices, the very ones each notice's own batch takes
    (PostgreSQL: the (notice, member) advisory lock; MySQL/MariaDB: the notice's server-wide
    lock; SQLite: the notice's file lock), all tried at once and without waiting: a notice
    another live batch holds is that batch's to send (as its own batch counts it ``busy``)."""

    def __init__(self, conn: Connection, pairs: dict[int, int]) -> None:
        self.conn = conn
        self.pairs = pairs
        self.family = dbkind.family(conn)
        self._pg_keys: list[int] = []
        self._mysql_names: list[str] = []
        self._fds: list[int] = []

    def __enter__(self) -> _GroupClaims:
        return self

    def take(self) -> set[int]:
        """The notices now ours (one statement on PostgreSQL and MySQL/MariaDB)."""
        ids = sorted(self.pairs)
        if not ids:
            return set()
        if self.family == "postgresql":
            keys = {_row_key(nid, self.pairs[nid]): nid for nid in ids}
            got = _pg_try_locks(self.conn, list(keys))
            self._pg_keys = got
            return {keys[k] for k in got}
        if self.family == "mysql":
            names = {f"n{i}": _mysql_lock_name(self.conn, nid) for i, nid in enumerate(ids)}
            # Several named locks on one connection: MariaDB >= 10.0.2 and MySQL >= 5.7.
            row = self.conn.execute(
                text("SELECT " + ", ".join(f"GET_LOCK(:{p}, 0)" for p in names)), names
            ).one()
            mine = {nid for nid, got in zip(ids, row, strict=True) if got == 1}
            self._mysql_names = [_mysql_lock_name(self.conn, nid) for nid in ids if nid in mine]
            return mine
        mine = set()
        for nid in ids:
            fd = _lock_file(nid)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fds.append(fd)
            mine.add(nid)
        return mine

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            if self._pg_keys:
                self.conn.execute(
                    text(
                        "SELECT count(pg_advisory_unlock(k)) FROM unnest(CAST(:keys AS bigint[])) k"
                    ),
                    {"keys": self._pg_keys},
                )
        with contextlib.suppress(Exception):
            if self._mysql_names:
                params = {f"n{i}": n for i, n in enumerate(self._mysql_names)}
                self.conn.execute(
                    text("SELECT " + ", ".join(f"RELEASE_LOCK(:{p})" for p in params)), params
                )
        for fd in self._fds:
            os.close(fd)


# A progress report is two Redis round trips (state and event): one per this many messages.
PROGRESS_EVERY = 25


@dataclass
class _GroupBatchResult(BatchResult):
    member_id: int = 0


@dataclass
class GroupResult:
    """Each notice's own `BatchResult`, and the (notice, member) pairs to go on alone."""

    results: dict[int, _GroupBatchResult]

    @property
    def sent(self) -> int:
        return sum(r.sent for r in self.results.values())

    @property
    def alone(self) -> list[tuple[int, int]]:
        return [(nid, r.member_id) for nid, r in self.results.items() if r.left]


def send_group(
    notice_ids: list[int], member_ids: list[int], progress: Progress | None = None
) -> GroupResult:
    """Many one-member notices (a withdrawal group's completion notices) in one pass: one
    connection claims them all and reads their rows in one statement, one SMTP session sends
    them, one UPDATE marks the sent ones; each notice keeps its own row, state and counts.

    Exactly once as in `send_batch`: the same claims, the same intent before the end of DATA
    (journal or ``sending``), the same recovery of rows a dead pass left. A notice refused is
    failed alone; one deferred or not reached is ``left`` in its result, for its own batch.
    """
    pairs = dict(zip(notice_ids, member_ids, strict=True))
    out = GroupResult({nid: _GroupBatchResult(nid, member_id=mid) for nid, mid in pairs.items()})
    settings = get_settings()
    with db.session("primary") as s:
        found = s.scalars(select(Notice).where(Notice.id.in_(list(pairs)))).all()
        builders = {n.id: _builder(n, settings.mail_from) for n in found}
        hold = {n.id for n in found if n.kind not in REQUEST_NOTICES | LEGAL_DUTY_NOTICES}
        if found:
            s.execute(
                update(Notice.__table__)
                .where(Notice.__table__.c.id.in_(list(builders)))
                .values(updated_at=utcnow())
            )
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
    cfg = smtp_config()
    with (
        db.engine("primary").connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        _GroupClaims(conn, {nid: pairs[nid] for nid in builders}) as claims,
    ):
        mine = claims.take()
        for nid in set(builders) - mine:
            out.results[nid].busy += 1
        # Read after claiming: a row another batch finished before our claim reads as done.
        rows = (
            [
                r
                for r in conn.execute(
                    select(NR.c.id, NR.c.notice_id, NR.c.member_id, NR.c.address, NR.c.state).where(
                        NR.c.notice_id.in_(sorted(mine)), NR.c.state.in_(SENDABLE_STATES)
                    )
                ).all()
                if pairs[r[1]] == r[2]
            ]
            if mine
            else []
        )
        if rows:
            _send_group_rows(conn, rows, out, builders, hold, mt, cfg, settings, progress)
    for r in out.results.values():
        if r.in_doubt:
            log.warning(
                "notice %s: %d message(s) in doubt (maybe delivered); not resent. Resolve with "
                "`lifecycle notice reconcile %s --mail-log FILE`",
                r.notice_id,
                r.in_doubt,
                r.notice_id,
            )
    refresh_counts_many(list(builders))
    return out


def _send_group_rows(
    conn: Connection,
    rows: list[Any],
    out: GroupResult,
    builders: dict[int, MessageBuilder],
    hold: set[int],
    mt: Any,
    cfg: Any,
    settings: Any,
    progress: Progress | None,
) -> None:
    """Rows (id, notice, member, address, state), one per notice, all claimed by this pass."""
    notice_of = {r[0]: r[1] for r in rows}
    results = out.results
    if cfg is None:
        log.warning(
            "LIFECYCLE_SMTP_URL is not set: %d group notice(s) are recorded as not sent", len(rows)
        )
    marker = _Marker(conn, rows[0][1], journal=group_journal_for(notice_of))
    first = results[rows[0][1]]
    sender = _Sender(cfg, builders[rows[0][1]], marker, first, settings)
    try:
        recovered, doubtful = marker.recover([(r[0], r[2], r[3], r[4]) for r in rows])
        for rid in recovered:
            results[notice_of[rid]].recovered += 1
        for rid in doubtful:
            results[notice_of[rid]].in_doubt += 1
        todo = [r for r in rows if r[0] not in recovered | doubtful]
        held = _restricted(conn, [r[2] for r in todo if r[1] in hold])
        for r in todo:
            if r[1] in hold and r[2] in held:
                results[r[1]].left += 1
                results[r[1]].restricted += 1
        todo = [r for r in todo if not (r[1] in hold and r[2] in held)]
        need = [r[2] for r in todo if r[3] is None]
        found: dict[int, Any] = {}
        if need and mt.email_col is not None:
            found = dict(
                conn.execute(select(mt.key_col, mt.email_col).where(mt.key_col.in_(need))).all()
            )
        if sender.mailer is None:
            # Nothing to send with: all the group's rows are recorded with two statements.
            addresses = {r[0]: r[3] if r[3] is not None else found.get(r[2]) for r in todo}
            bad = {rid for rid, a in addresses.items() if not valid_address(a)}
            marker.finish(sorted(bad), NoticeRecipientState.NOT_SENT, NO_ADDRESS)
            good = [rid for rid in addresses if rid not in bad]
            marker.finish(good, NoticeRecipientState.NOT_SENT, NO_CHANNEL, keep_address=True)
            for r in todo:
                results[r[1]].not_sent += 1
            todo = []
        for i, r in enumerate(todo):
            result = results[r[1]]
            if sender.stopped:
                # The server kept failing: the rest go on alone, each with its own retries.
                result.left += 1
                continue
            if progress is not None and i % PROGRESS_EVERY == 0:
                progress(i, len(todo))
            sender.builder, sender.result = builders[r[1]], result
            address = r[3] if r[3] is not None else found.get(r[2])
            try:
                sender.send_rows([(r[0], r[2], address)])
            except Exception as exc:
                # Left for its own batch, which recovers whatever this pass left behind.
                log.warning("notice %s: not sent with its group (%s)", r[1], type(exc).__name__)
                result.left += 1
    finally:
        sender.close()
        marker.close()
