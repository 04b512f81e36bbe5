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


def journal_for(notice_id: int) -> Journal | None:
    s = get_settings()
    return Journal(s.broker_url, notice_id) if s.broker_is_redis else None
