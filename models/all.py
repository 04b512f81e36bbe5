"""Import every model module so each metadata is complete (used by Alembic and tests)."""

from models import archive, notify, requests, vault  # noqa: F401
