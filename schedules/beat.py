"""The beat schedule. Celery's timezone is Asia/Seoul, so crontab hours are Seoul hours."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from lifecycle.core.settings import Settings

RELAY_INTERVAL_SECONDS = 5.0
RESEND_DUE_INTERVAL_SECONDS = 15.0
NIGHTLY = crontab(minute=0, hour=3)
PURGE_NIGHTLY = crontab(minute=30, hour=3)
LEDGER_CHECKPOINT_NIGHTLY = crontab(minute=55, hour=3)
DEADLINE_CHECK_SECONDS = 3600.0


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """Entries are added here as their tasks exist; names are what Flower and status show."""
    schedule: dict[str, Any] = {
        "relay": {"task": "lifecycle.relay", "schedule": RELAY_INTERVAL_SECONDS},
        "relay-stale": {
            "task": "lifecycle.relay.redispatch_stale",
            "schedule": 300.0,
        },
        # The nightly purpose-end sweep, then the purge of archived data whose period ended.
        "sweep-nightly": {"task": "lifecycle.sweep.run", "schedule": NIGHTLY},
        "purge-nightly": {"task": "lifecycle.purge.run", "schedule": PURGE_NIGHTLY},
        # Verifies the ledger and anchors its head outside the archive DB (truncation, wipe).
        "ledger-checkpoint-nightly": {
            "task": "lifecycle.ledger.checkpoint",
            "schedule": LEDGER_CHECKPOINT_NIGHTLY,
        },
        # The 5-day deadline: hourly, so an overdue request shows up as a failed task the same
        # day it becomes overdue rather than the next night.
        "deadlines-hourly": {
            "task": "lifecycle.requests.check_deadlines",
            "schedule": DEADLINE_CHECK_SECONDS,
        },
        # Written answers to requests that a crash left unanswered.
        "rights-answer-pending": {"task": "lifecycle.rights.answer_pending", "schedule": 120.0},
        # Shred jobs stored while the broker was down (or whose message was lost).
        "shred-resend-pending": {"task": "lifecycle.shred.resend_pending", "schedule": 60.0},
        "shred-sweep-orphans": {"task": "lifecycle.shred.sweep_orphans", "schedule": NIGHTLY},
        # Third-party deliveries: the retry schedule lives in the DB; this enqueues what is due.
        "notify-resend-due": {
            "task": "lifecycle.notify.resend_due",
            "schedule": RESEND_DUE_INTERVAL_SECONDS,
        },
        "notice-resume-stale": {"task": "lifecycle.notice.resume_stale", "schedule": 300.0},
        # Does nothing unless the data map enables dormancy (an operator option).
        "notice-dormancy-advance": {
            "task": "lifecycle.notice.dormancy_advance",
            "schedule": NIGHTLY,
        },
    }
    return schedule
