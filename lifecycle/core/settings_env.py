"""The part of the settings a command that only submits a request reads without loading them:
the names of the variables, the var directory, the master key's decoding and the database
URLs in the shape the drivers take.

``lifecycle.core.settings`` builds its ``Settings`` on these same functions, so neither a
default nor a URL rule is written twice. This module imports neither pydantic nor SQLAlchemy:
they were a third of `lifecycle withdraw N`'s start-up (README, "The submit path").
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from lifecycle.core.errors import SettingsError

ENV_PREFIX = "LIFECYCLE_"
ENV_FILE = ".env"


def var_dir() -> Path:
    return Path(os.environ.get(ENV_PREFIX + "VAR_DIR", "var")).absolute()


def default_master_key_file(var: Path) -> Path:
    """Where the master key is kept when no setting names it."""
    return var / "master.key"


def environment_stamp() -> str:
    """A digest of everything the settings are read from: every ``LIFECYCLE_*`` variable and the
    ``.env`` file. Two processes with the same stamp have the same settings, so what one of them
    validated (a cached submit plan) holds for the other. Only the digest is kept: the values
    include passwords."""
    h = hashlib.sha256()
    for name in sorted(k for k in os.environ if k.startswith(ENV_PREFIX)):
        h.update(f"{name}\0{os.environ[name]}\0".encode(errors="surrogateescape"))
    try:
        h.update(b"\1" + Path(ENV_FILE).read_bytes())
    except FileNotFoundError:
        h.update(b"\2")
    except OSError:
        h.update(os.urandom(16))  # unreadable: never equal, the settings decide what it means
    return h.hexdigest()


def decode_master_key(value: str) -> bytes:
    """The 32-byte master key from ``LIFECYCLE_MASTER_KEY`` (base64)."""
    try:
        key = base64.b64decode(value, validate=True)
    except ValueError:
        raise SettingsError("LIFECYCLE_MASTER_KEY is not valid base64") from None
    if len(key) != 32:
        raise SettingsError("LIFECYCLE_MASTER_KEY must decode to 32 bytes")
    return key


def read_master_key_file(path: Path) -> bytes:
    """The 32-byte master key kept base64-encoded in ``path``."""
    try:
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(
            f"LIFECYCLE_MASTER_KEY_FILE {path} is not readable: {exc.strerror}"
        ) from None
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        raise SettingsError(f"LIFECYCLE_MASTER_KEY_FILE {path} is not base64") from None
    if len(key) != 32:
        raise SettingsError(f"LIFECYCLE_MASTER_KEY_FILE {path} must hold 32 bytes (base64)")
    return key


def driver_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` as psycopg 3's SQLAlchemy URL; others unchanged
    (MySQL-family URLs are normalised by ``dbkind.normalise_mysql_url``)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def connect_params(url: str) -> dict[str, object]:
    """``scheme`` (the backend, without the driver), ``user``, ``password``, ``host``,
    ``port``, ``database`` and ``query`` of a server database URL, as the drivers take them.

    A submit command connects with these; the settings check them against SQLAlchemy's own
    parse of the same URL before a submit plan that relies on them is stored
    (``lifecycle.cli.submit_plan``), so a URL the two read differently never takes this path.
    """
    parts = urlsplit(url)
    return {
        "scheme": parts.scheme.split("+", 1)[0],
        "user": unquote(parts.username) if parts.username is not None else None,
        "password": unquote(parts.password) if parts.password is not None else None,
        "host": parts.hostname,
        "port": parts.port,
        "database": unquote(parts.path[1:]) if parts.path.startswith("/") else None,
        "query": dict(parse_qsl(parts.query)),
    }
