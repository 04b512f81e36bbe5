"""The beat schedule. Celery's timezone is Asia/Seoul, so crontab hours are Seoul hours."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from lifecycle.core import dispatch
from lifecycle.core.settings import Settings

NIGHTLY = crontab(minute=0, hour=3)
PURGE_NIGHTLY = crontab(minute=30, hour=3)
LEDGER_CHECKPOINT_NIGHTLY = crontab(minute=55, hour=3)
# Sunday 02:00 Seoul: the quietest hour of the week for a scan of every table.
DATAMAP_SCAN_WEEKLY = crontab(minute=0, hour=2, day_of_week="sun")
DEADLINE_CHECK_SECONDS = 3600.0


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """Real jobs only; names are what Flower and status show.

    The frequent housekeeping (the outbox relay every 5 s, due deliveries, pending shred jobs,
    stale notices and requests, the lease watchdog) is not here: it runs on the beat process's
    ticker thread (schedules/ticker.py) and so never fills Flower's history.
    """
    schedule: dict[str, Any] = {
        # The nightly purpose-end sweep, then the purge of archived data whose period ended.
        "sweep-nightly": {"task": dispatch.SWEEP_RUN, "schedule": NIGHTLY},
        "purge-nightly": {"task": dispatch.PURGE_RUN, "schedule": PURGE_NIGHTLY},
        # Verifies the ledger and anchors its head outside the archive DB (truncation, wipe).
        "ledger-checkpoint-nightly": {
            "task": dispatch.LEDGER_CHECKPOINT,
            "schedule": LEDGER_CHECKPOINT_NIGHTLY,
        },
        # The 5-day deadline: hourly, so an overdue request shows up as a failed task the same
        # day it becomes overdue rather than the next night.
        "deadlines-hourly": {
            "task": dispatch.CHECK_DEADLINES,
            "schedule": DEADLINE_CHECK_SECONDS,
        },
        # Discovery and linkage findings stored (console, metrics, status) and kept current.
        "datamap-scan-weekly": {"task": dispatch.DATAMAP_SCAN, "schedule": DATAMAP_SCAN_WEEKLY},
        "shred-sweep-orphans": {"task": dispatch.SHRED_SWEEP_ORPHANS, "schedule": NIGHTLY},
        # Notice housekeeping: destroys captured addresses kept past LIFECYCLE_NOTICE_ADDRESS_DAYS
        # (with ledger entries); the dormancy notice only where the data map enables it.
        "notice-dormancy-advance": {
            "task": dispatch.NOTICE_DORMANCY_ADVANCE,
            "schedule": NIGHTLY,
        },
    }
    return schedule
