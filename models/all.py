"""Import every model module so each metadata is complete (used by Alembic and tests)."""

from models import anchor, archive, engine, guards, leases, notify, requests, shred, vault  # noqa: F401
