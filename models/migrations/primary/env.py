"""Alembic environment for the primary database (driven by `lifecycle db upgrade`)."""

import models.all  # noqa: F401  (registers every table on the metadata)
from models.base import PrimaryBase
from models.migrations.runner import run_migrations

# Our own version table name: the website may run Alembic on the same primary DB.
run_migrations(PrimaryBase.metadata, "lifecycle_alembic_version")
