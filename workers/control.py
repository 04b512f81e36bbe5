"""A Celery app for talking to the workers only (broadcasts such as `lifecycle status`'s ping).

It has `workers.app`'s whole configuration (broker, transport and its options, serializers), so
it reaches the same workers over the same broker, the embedded file-backed one included, but
none of the rest: no task modules, no message factory, no beat schedule, no signal handlers.
Loading those cost status about a third of a second of CPU, and a broadcast uses none of them.
It never sends a job: jobs go through ``lifecycle.core.dispatch``, whose app builds their
messages.
"""

from __future__ import annotations

from celery import Celery

from lifecycle.core.settings import Settings
from workers.config import celery_config


def control_app(settings: Settings) -> Celery:
    """A fresh app with the workers' broker configuration, for ``app.control`` only."""
    # Not the process's current app: a task sent by mistake through it must not find it.
    app = Celery("lifecycle", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
