"""The beat schedule. Celery's timezone is Asia/Seoul, so crontab hours are Seoul hours."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from lifecycle.settings import Settings

RELAY_INTERVAL_SECONDS = 5.0
NIGHTLY = crontab(minute=0, hour=3)


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """Entries are added here as their tasks exist; names are what Flower and status show."""
    schedule: dict[str, Any] = {
        "relay": {"task": "lifecycle.relay", "schedule": RELAY_INTERVAL_SECONDS},
        "relay-stale": {
            "task": "lifecycle.relay.redispatch_stale",
            "schedule": 300.0,
        },
        # Shred jobs stored while the broker was down (or whose message was lost).
        "shred-resend-pending": {"task": "lifecycle.shred.resend_pending", "schedule": 60.0},
        "shred-sweep-orphans": {"task": "lifecycle.shred.sweep_orphans", "schedule": NIGHTLY},
    }
    return schedule
