"""The beat process's housekeeping ticker: one thread, no Celery tasks, no Flower entries.

Started on ``beat_init`` (see ``workers/app.py``). With RedBeat it runs only while this beat
holds the scheduler lock, so a standby beat stays quiet; the work is idempotent anyway. A failing
tick (database or broker down) is logged and tried again at its next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lifecycle.core.settings import get_settings
from schedules import housekeeping

log = logging.getLogger("lifecycle.ticker")

# The relay's interval is part of a website request's wait before a worker takes it. 1 s was
# tried: after a Redis restart the beat that lost its lock kept ticking until it noticed, so
# two beats relayed for a while (harmless, the relay is idempotent, but no longer one beat,
# which tests/workers/test_beat.py holds it to). 5 s until that hand-over is tightened.
RELAY_SECONDS = 5.0
# A relay that looked again 0.5 s after sending something was tried (2026-12-08): withdrawals
# still arriving went out a few at a time, their tasks found no group to claim and 50 of 1,000
# went alone (three to four times a grouped request's work); the run was no faster.
WATCHDOG_SECONDS = 15.0
RESEND_DUE_SECONDS = 15.0
SHRED_RESEND_SECONDS = 60.0
STALE_SECONDS = 300.0
ANSWER_SECONDS = 120.0
PRUNE_SECONDS = 24 * 3600.0


@dataclass
class Tick:
    name: str
    every: float
    fn: Callable[[], Any]
    next_at: float = 0.0


def ticks(scale: float = 1.0) -> list[Tick]:
    return [
        Tick("relay", RELAY_SECONDS * scale, housekeeping.relay_pending),
        Tick("watchdog", WATCHDOG_SECONDS * scale, housekeeping.watchdog),
        Tick("notify-resend-due", RESEND_DUE_SECONDS * scale, housekeeping.resend_due_deliveries),
        Tick("shred-resend-pending", SHRED_RESEND_SECONDS * scale,
             housekeeping.resend_pending_shred_jobs),
        Tick("relay-stale", STALE_SECONDS * scale, housekeeping.relay_stale),
        Tick("notice-resume-stale", STALE_SECONDS * scale, housekeeping.resume_stale_notices),
        Tick("rights-answer-pending", ANSWER_SECONDS * scale,
             housekeeping.answer_pending_requests),
        Tick("prune-leases", PRUNE_SECONDS * scale, housekeeping.prune_leases),
    ]  # fmt: skip


def run_due(items: list[Tick], now: float) -> None:
    for tick in items:
        if now < tick.next_at:
            continue
        tick.next_at = now + tick.every
        try:
            result = tick.fn()
            log.debug("housekeeping tick %s: %s", tick.name, result)
        except Exception as exc:  # a server is down: the next interval tries again
            log.warning("housekeeping tick %s failed (%s)", tick.name, type(exc).__name__)


class Ticker(threading.Thread):
    def __init__(self, ready: Callable[[], bool] | None = None) -> None:
        super().__init__(name="housekeeping-ticker", daemon=True)
        self.ready = ready or (lambda: True)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.ready():
            if self.halt.wait(1.0):
                return
        items = ticks(get_settings().tick_scale)
        step = max(0.05, min(t.every for t in items) / 5)
        log.info("housekeeping ticker started (relay every %.1f s)", items[0].every)
        while not self.halt.is_set():
            # Checked every round: a beat that lost its lock in a Redis outage stands by again.
            if self.ready():
                run_due(items, time.monotonic())
            self.halt.wait(step)

    def stop(self) -> None:
        self.halt.set()


def start_in_beat(beat_service: Any) -> Ticker:
    """Start the ticker for a beat ``Service``; with RedBeat, once it holds the lock."""

    def ready() -> bool:
        scheduler = getattr(beat_service, "scheduler", None)
        if not getattr(scheduler, "lock_key", None):
            return True  # not RedBeat (the embedded default's file scheduler): one beat only
        return getattr(scheduler, "lock", None) is not None

    ticker = Ticker(ready)
    ticker.start()
    return ticker
