"""Errors worth retrying in a task or a ``--wait``: the database's, and the broker's.

The broker restarted or is unreachable for a moment (a task that sends other tasks, a progress
update to the Redis result backend).
"""

from __future__ import annotations

from kombu import exceptions as kombu_exc
from redis import exceptions as redis_exc

from lifecycle.core.transient import TRANSIENT_DB_ERRORS

TRANSIENT_BROKER_ERRORS: tuple[type[BaseException], ...] = (
    kombu_exc.OperationalError,
    redis_exc.ConnectionError,
    redis_exc.TimeoutError,
)
TRANSIENT_ERRORS = TRANSIENT_DB_ERRORS + TRANSIENT_BROKER_ERRORS
