"""The beat scheduler on Redis: RedBeat, made to ride out a Redis outage instead of exiting.

RedBeat 2.4 extends its lock on every tick without catching anything, so a Redis restart makes
``celery beat`` exit ("beat raised exception ConnectionError"), and with it the lease watchdog
that brings crashed jobs back (sibson/redbeat#285 reports the same crash). Here a tick that
cannot reach Redis logs one warning and is tried again a few seconds later. When Redis answers
again the scheduler checks that it still holds the lock: the lock may have expired during a long
outage, or Redis may have restarted without its data. Then it waits to take the lock again,
quiet meanwhile, exactly as a second beat waits at start, so two beats never both fire the
nightly jobs. It also stores the schedule's entries again, since a restart without persistence
loses them and RedBeat would otherwise fire nothing until beat itself restarts.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

from celery.beat import PersistentScheduler
from redbeat.schedulers import RedBeatScheduler, acquire_distributed_beat_lock
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schedules import heartbeat

log = logging.getLogger("lifecycle.beat")

# Short, so the watchdog's re-sends and a nightly job due during the outage go out soon after
# Redis is back; each failed try is one cheap connection attempt.
OUTAGE_RETRY_SECONDS = 5.0

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, LockError)


class Scheduler(RedBeatScheduler):  # type: ignore[misc]  # redbeat ships no types
    """RedBeat whose tick survives Redis being down or restarted (see the module docstring)."""

    lock: Any  # RedBeat's redis Lock, None while another beat holds it

    _outage_since: float | None = None

    @property
    def in_outage(self) -> bool:
        """True from a tick that could not reach Redis until one that could."""
        return self._outage_since is not None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if self._outage_since is not None or (self.lock_key and self.lock is None):
                self._recover()
            interval = float(super().tick(*args, **kwargs))
        except REDIS_DOWN as exc:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning(
                    "beat: Redis unreachable (%s); nothing is scheduled until it answers, "
                    "trying again every %.0f s",
                    type(exc).__name__,
                    OUTAGE_RETRY_SECONDS,
                )
            return OUTAGE_RETRY_SECONDS
        # Only a tick that reached Redis counts as alive: one riding out an outage schedules
        # nothing, and the healthcheck should say so.
        heartbeat.touch()
        return interval

    def _recover(self) -> None:
        """Redis may answer again: hold the lock (waiting for it if need be), restore entries."""
        if self.lock_key and (self.lock is None or not self.lock.owned()):
            if self.lock is not None:
                log.warning("beat: the scheduler lock was lost in the Redis outage; waiting for it")
            # None makes the housekeeping ticker stand by too while another beat holds the lock.
            self.lock = None
            # Blocks like a standby beat at start and sets self.lock once taken; raises (and so
            # is tried again next tick) while Redis is still down.
            acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=self))
        self.setup_schedule()
        if self._outage_since is not None:
            log.warning(
                "beat: Redis answers again after %.0f s; lock held, schedule restored",
                time.monotonic() - self._outage_since,
            )
        self._outage_since = None


class EmbeddedScheduler(PersistentScheduler):
    """The embedded default's file-backed scheduler, touching the heartbeat like `Scheduler`."""

    # Importing redbeat connects its beat_init handler for every scheduler; it takes no lock
    # for one without a lock key, where it otherwise logged an AttributeError at each start.
    lock_key = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = float(super().tick(*args, **kwargs))
        heartbeat.touch()
        return interval
