"""Database errors worth retrying: the server restarted, the connection broke, a deadlock.

Raw psycopg errors appear too, because the archive COPY runs on the driver connection, out of
SQLAlchemy's sight (and so unwrapped).
"""

from __future__ import annotations

import psycopg
from kombu import exceptions as kombu_exc
from redis import exceptions as redis_exc
from sqlalchemy import exc as sa_exc

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)

# The broker restarted or is unreachable for a moment (a task that sends other tasks, a
# progress update to the Redis result backend).
TRANSIENT_BROKER_ERRORS: tuple[type[BaseException], ...] = (
    kombu_exc.OperationalError,
    redis_exc.ConnectionError,
    redis_exc.TimeoutError,
)
TRANSIENT_ERRORS = TRANSIENT_DB_ERRORS + TRANSIENT_BROKER_ERRORS
