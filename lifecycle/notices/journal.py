"""The Redis journal of notice rows in flight and sent (ids only, never addresses or content).

Why Redis and not the database: one pipelined ``SADD`` per message costs the sender nothing
it waits for (the reply is read while the SMTP exchange goes on), where one database commit per
message would halve the sending rate. PostgreSQL gets the sent marks once per chunk. See
`lifecycle.notices` for the protocol and `lifecycle.notices.sending` for its use.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis

from lifecycle.core.settings import get_settings


class Journal:
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

        self.client = redis.Redis.from_url(redis_url)
        self.sent_key, self.inflight_key = _keys(notice_id)
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

    def _keys_of(self, row_id: int) -> tuple[str, str]:
        return self.sent_key, self.inflight_key

    def intend(self, row_id: int) -> None:
        self._write("SADD", self._keys_of(row_id)[1], row_id)

    def add(self, row_id: int) -> None:
        self._write("SADD", self._keys_of(row_id)[0], row_id)

    def forget(self, row_id: int) -> None:
        """Certainly not accepted (and the row stays pending): not in flight any more."""
        self._write("SREM", self._keys_of(row_id)[1], row_id)

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


def _keys(notice_id: int) -> tuple[str, str]:
    return f"lifecycle:notice:{notice_id}:sent", f"lifecycle:notice:{notice_id}:inflight"


class GroupJournal(Journal):
    """The journals of many one-member notices (a withdrawal group's) on one Redis connection:
    each row is recorded under its own notice's keys, exactly as that notice's own batch would
    record it, so whichever of the two next claims the row reads the same journal."""

    def __init__(self, redis_url: str, notice_of: dict[int, int]) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.notice_of = notice_of  # row id -> notice id
        self._conn = None
        self._unread = 0

    def _keys_of(self, row_id: int) -> tuple[str, str]:
        return _keys(self.notice_of[row_id])

    def lookup(self, row_ids: list[int]) -> tuple[set[int], set[int]]:
        if not row_ids:
            return set(), set()
        pipe = self.client.pipeline(transaction=False)
        for rid in row_ids:
            sent_key, inflight_key = self._keys_of(rid)
            pipe.sismember(sent_key, str(rid))
            pipe.sismember(inflight_key, str(rid))
        replies = pipe.execute()
        return (
            {rid for rid, hit in zip(row_ids, replies[0::2], strict=True) if hit},
            {rid for rid, hit in zip(row_ids, replies[1::2], strict=True) if hit},
        )

    def remove(self, row_ids: list[int]) -> None:
        if row_ids:
            pipe = self.client.pipeline(transaction=False)
            for rid in row_ids:
                sent_key, inflight_key = self._keys_of(rid)
                pipe.srem(sent_key, rid)
                pipe.srem(inflight_key, rid)
                pipe.expire(sent_key, self.TTL_SECONDS)
                pipe.expire(inflight_key, self.TTL_SECONDS)
            pipe.execute()

    def delete_notices(self, notice_ids: list[int]) -> None:
        if notice_ids:
            self.client.delete(*(k for nid in notice_ids for k in _keys(nid)))

    def delete(self) -> None:
        self.delete_notices(sorted(set(self.notice_of.values())))


def group_journal_for(notice_of: dict[int, int]) -> GroupJournal | None:
    s = get_settings()
    return GroupJournal(s.broker_url, notice_of) if s.broker_is_redis else None


def journal_for(notice_id: int) -> Journal | None:
    s = get_settings()
    return Journal(s.broker_url, notice_id) if s.broker_is_redis else None
