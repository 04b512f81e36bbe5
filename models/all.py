"""Import every model module so each metadata is complete (used by Alembic and tests)."""

from models import (  # noqa: F401
    anchor,
    archive,
    consents,
    console,
    engine,
    findings,
    guards,
    incidents,
    leases,
    notices,
    recipients,
    requests,
    shred,
    vault,
)
