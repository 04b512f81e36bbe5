"""Database errors worth retrying: the server restarted, the connection broke, a deadlock.

Raw psycopg errors appear too, because the archive COPY runs on the driver connection, out of
SQLAlchemy's sight (and so unwrapped). The broker's transient errors live with the job runtime
(`workers.transient`): domain code never talks to the broker.
"""

from __future__ import annotations

import psycopg
from sqlalchemy import exc as sa_exc

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
