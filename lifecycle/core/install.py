"""This install's identity: a random id the migration stores in the primary DB.

It tells this install apart from others that share something with it, e.g. an MTA log, where a
member notice's Message-ID must never match another install's (or a re-created database's).
"""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from lifecycle.core import db
from models.anchor import InstallIdentity

_lock = threading.Lock()
_cache: dict[str, str] = {}


def install_id() -> str:
    """32 hex digits, fixed for the life of the primary database."""
    url = db.engine("primary").url.render_as_string(hide_password=True)
    with _lock:
        hit = _cache.get(url)
    if hit is not None:
        return hit
    with db.session("primary") as s:
        value = s.scalar(select(InstallIdentity.install_id).where(InstallIdentity.id == 1))
    if value is None:
        # The migration creates it; a deleted row gets a new identity (never a shared one).
        try:
            with db.session("primary") as s:
                s.add(InstallIdentity(id=1, install_id=uuid.uuid4().hex))
        except IntegrityError:
            pass
        with db.session("primary") as s:
            value = s.scalar(select(InstallIdentity.install_id).where(InstallIdentity.id == 1))
    assert value is not None
    with _lock:
        _cache[url] = value
    return value


def forget() -> None:
    with _lock:
        _cache.clear()
