"""Import every model module so each metadata is complete (used by Alembic and tests)."""

from models import archive, engine, guards, notify, requests, shred, vault  # noqa: F401
