"""Alembic environment for the archive database (driven by `lifecycle db upgrade`)."""

import models.all  # noqa: F401  (registers every table on the metadata)
from models.base import ArchiveBase
from models.migrations.runner import run_migrations

run_migrations(ArchiveBase.metadata, "archive_alembic_version")
