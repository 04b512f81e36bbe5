"""Settings from ``LIFECYCLE_*`` environment variables (and a ``.env`` file).

With nothing set, everything lives under ``./var`` (the *embedded default*): SQLite files and
Celery's filesystem transport. That mode is for trying the tool out: SQLite and the filesystem
transport are not crash-safe under concurrent workers, so production sets PostgreSQL and Redis.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from lifecycle.core.dbkind import MYSQL_BACKENDS, normalise_mysql_url
from lifecycle.core.errors import SettingsError
from lifecycle.core.settings_env import (
    ENV_FILE,
    ENV_PREFIX,
    decode_master_key,
    default_master_key_file,
    driver_url,
    read_master_key_file,
)
from lifecycle.core.settings_env import (
    var_dir as _var_dir,
)

# The demo site's organisation (models/demo_site.py): named only while the shipped demo map is used.
DEMO_ORGANISATION = "마음터심리상담센터"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=ENV_FILE, extra="ignore", validate_default=True
    )

    var_dir: Path = Field(default_factory=_var_dir)
    primary_database_url: str = ""
    archive_database_url: str = ""
    broker_url: str = ""
    result_backend: str = ""
    master_key_file: Path | None = None
    # A literal key (base64, 32 bytes) for containers that mount secrets as env vars.
    master_key: SecretStr | None = None
    # Keyed-HMAC pseudonyms in the ledger use their own key so ledger exports can be shared
    # without handing over the archive master key.
    file_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    data_map: Path | None = None
    # Ledger checkpoints' copy outside both databases (default <var>/ledger-checkpoints.jsonl).
    ledger_checkpoint_file: Path | None = None
    # The access log's checkpoints likewise (default <var>/accesslog-checkpoints.jsonl).
    accesslog_checkpoint_file: Path | None = None
    smtp_url: str | None = None
    # Plain smtp:// to a host other than loopback is refused unless this is set (logged).
    allow_plain_smtp: bool = False
    # A private CA added to the system's trust store for SMTP and webhook TLS.
    ca_file: Path | None = None
    mail_from: str = "privacy@maumteo.example"
    # The organisation that answers, notifies and sends access packages (개인정보처리자). No
    # default outside the demo: a real site's members must never get the demo centre's name.
    organisation_name: str | None = Field(default=None, max_length=100)
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"
    flower_user: str = "admin"
    flower_password: SecretStr | None = None
    # The privacy office's web console (lifecycle/console): loopback unless the operator
    # binds it elsewhere (behind a TLS proxy), like Flower.
    console_port: int = Field(default=5556, ge=1, le=65535)
    console_bind: str = "127.0.0.1"
    # Signs the console's session cookie; generated once into var/console.secret when not set.
    console_secret_key: SecretStr | None = None
    # Secure cookies are sent over HTTPS only; browsers also accept them from http://localhost.
    # Off only for a plain-HTTP console on a trusted loopback (LIFECYCLE_CONSOLE_COOKIE_SECURE).
    console_cookie_secure: bool = True
    # Where login attempts are counted (Flask-Limiter storage URI); memory:// is per process,
    # enough for the one console process `lifecycle up` starts.
    console_ratelimit_storage: str = "memory://"
    # Reverse proxies in front of the console whose X-Forwarded-For/-Proto are believed (hop
    # count, werkzeug ProxyFix); 0: the headers are ignored, the TCP peer is the client.
    console_trusted_proxies: int = Field(default=0, ge=0, le=5)
    # Login through the organisation's OpenID Connect provider besides local accounts (README,
    # "The console"); off while the issuer is empty. The client secret is read from a file.
    console_oidc_issuer: str = ""
    console_oidc_client_id: str = ""
    console_oidc_client_secret_file: Path | None = None
    # The callback address registered at the provider; empty: built from the request
    # (https://<host the browser used>/oidc/callback), which behind a proxy needs its headers.
    console_oidc_redirect_url: str = ""
    # The ID-token claim that names the person (recorded as console:oidc:<value>).
    console_oidc_user_claim: str = "preferred_username"
    # Who may log in and as what: comma-separated NAME=ROLE (officer, handler, auditor), NAME
    # being the user claim's value; anyone else is refused.
    console_oidc_roles: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # `lifecycle metrics serve` (Prometheus): Basic auth, password generated like Flower's.
    metrics_port: int = Field(default=5557, ge=1, le=65535)
    metrics_address: str = "127.0.0.1"
    metrics_user: str = "prometheus"
    metrics_password: SecretStr | None = None
    # Optional error reports (lifecycle/core/error_reports.py); off unless set.
    sentry_dsn: SecretStr | None = None
    sentry_environment: str = Field(default="production", max_length=64)
    # Which host this worker serves for file deletion; shred jobs route to shred.<host>.
    host_name: str = Field(default_factory=lambda: os.uname().nodename)
    timezone: str = "Asia/Seoul"
    # Who may confirm the destruction register (개인정보 보호책임자, 법 제31조); comma-separated
    # names as given to `--operator`. Empty: nobody can sign off, and `ledger signoff` says so.
    privacy_officers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    destruction_deadline_days: int = Field(default=5, ge=1, le=5)
    notice_rate_per_second: float = Field(default=0.0, ge=0)
    # Days a notice row keeps an address captured for it (a withdrawn member's) while the
    # notice cannot be sent; the nightly notice job then destroys it (docs: README, notices).
    notice_address_days: int = Field(default=5, ge=1, le=30)
    # Members per notice batch task: each batch sends over one SMTP connection.
    notice_batch_size: int = Field(default=500, ge=1, le=100_000)
    # Members per sweep batch (one transaction each); 0: 2,000 on a MySQL/MariaDB primary,
    # where each batch's forty-odd round trips are the cost, 500 elsewhere (docs/engine.md).
    sweep_member_batch: int = Field(default=0, ge=0, le=10_000)
    # How long `--wait` rides out an unreachable result backend (a Redis restart) before it
    # gives up with one line; the job itself is not affected.
    wait_broker_grace_seconds: float = Field(default=60.0, ge=0, le=3600)
    # Webhook/email delivery retry schedule, comma-separated seconds before each attempt
    # (empty = lifecycle.recipients.retry_schedule.DEFAULT_SCHEDULE, about 31 hours in 8 attempts).
    retry_schedule: str = ""
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    log_json: bool | None = None
    # Job leases: a running long job renews its lease every third of this; the watchdog
    # re-sends a job whose lease is this many seconds overdue (so a dead job restarts within
    # about lease + watchdog interval).
    lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    # Multiplies every housekeeping interval of the beat process's ticker (relay 5 s, watchdog
    # 15 s, ...). Below 1 only for tests that cannot wait minutes.
    tick_scale: float = Field(default=1.0, gt=0, le=100)
    # The residue check after a withdrawal or an erasure (lifecycle/engine/residue.py): its
    # time budget, the rows it may pass over, and the rows per table sampled to decide which
    # free-text columns can hold an email or a mobile number. Past a budget the check says
    # "incomplete" and the request needs attention; it never passes silently.
    residue_budget_seconds: float = Field(default=30.0, gt=0, le=3600)
    residue_max_rows: int = Field(default=20_000_000, ge=0)
    residue_sample_rows: int = Field(default=500, ge=1, le=100_000)
    # Tables up to this many rows (the server's estimate) are searched in every text column
    # for every identity, not sampled; a larger table is sampled and the request says so.
    residue_exhaustive_rows: int = Field(default=200_000, ge=0)
    # The monthly access-log review (`lifecycle accesslog review`): an export or read of at
    # least this many rows or members is a bulk one; office hours (local time, `timezone`) are
    # [start, end) on weekdays; the same member read or exported this many times in the month
    # is a repeated download.
    review_bulk_rows: int = Field(default=1000, ge=1)
    review_bulk_subjects: int = Field(default=50, ge=1)
    review_office_start_hour: int = Field(default=8, ge=0, le=23)
    review_office_end_hour: int = Field(default=20, ge=1, le=24)
    review_repeat_downloads: int = Field(default=3, ge=2)

    @field_validator("log_json", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # LIFECYCLE_LOG_JSON= (empty) means "decide from the terminal", like leaving it unset.
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("organisation_name")
    @classmethod
    def _one_line_name(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if any(c in v for c in "\r\n\t"):
            raise ValueError("must be one line (it heads notices and email subjects)")
        return v.strip()

    @field_validator("ca_file")
    @classmethod
    def _ca_readable(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v} is not a readable file (a PEM bundle of CA certificates)")
        return v

    @field_validator("privacy_officers", mode="before")
    @classmethod
    def _split_officers(cls, v: object) -> object:
        if isinstance(v, str):
            return [" ".join(n.split()) for n in v.split(",") if n.strip()]
        return v

    @field_validator("console_oidc_roles", mode="before")
    @classmethod
    def _split_oidc_roles(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        roles = ("officer", "handler", "auditor")
        out: dict[str, str] = {}
        for item in (i.strip() for i in v.split(",")):
            if not item:
                continue
            name, sep, role = item.rpartition("=")
            name, role = name.strip(), role.strip()
            if not sep or not name or len(name) > 100 or role not in roles:
                raise ValueError(f"{item!r} is not NAME=ROLE with ROLE one of {', '.join(roles)}")
            out[name] = role
        return out

    @field_validator("console_oidc_issuer")
    @classmethod
    def _issuer_url(cls, v: str) -> str:
        # Kept as given: the ID token's iss must equal it exactly (OIDC Core 3.1.3.7).
        v = v.strip()
        if v and not (v.startswith("https://") or v.startswith("http://127.0.0.1")
                      or v.startswith("http://localhost")):  # fmt: skip
            raise ValueError("must be an https:// URL (plain http only on loopback)")
        return v

    @field_validator("file_roots", mode="before")
    @classmethod
    def _split_roots(cls, v: object) -> object:
        if isinstance(v, str):
            return [p for p in v.split(":") if p]
        return v

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        var = self.var_dir
        if not self.primary_database_url:
            self.primary_database_url = f"sqlite:///{var / 'primary.sqlite3'}"
        if not self.archive_database_url:
            self.archive_database_url = f"sqlite:///{var / 'archive.sqlite3'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if not self.result_backend:
            self.result_backend = f"db+sqlite:///{var / 'results.sqlite3'}"
        if self.master_key_file is None and self.master_key is None:
            self.master_key_file = default_master_key_file(var)
        if not self.file_roots:
            self.file_roots = [var / "files"]
        self.file_roots = [Path(p).absolute() for p in self.file_roots]
        for name in ("primary_database_url", "archive_database_url"):
            url = getattr(self, name)
            try:
                parsed = make_url(url)
            except ArgumentError:
                raise ValueError(
                    f"LIFECYCLE_{name.upper()} is not a database URL: {url!r}"
                ) from None
            backend = parsed.get_backend_name()
            if name == "primary_database_url" and backend in MYSQL_BACKENDS:
                # The website's own database; the archive stays PostgreSQL (or SQLite).
                normalise_mysql_url(url)
                continue
            if backend not in ("sqlite", "postgresql"):
                allowed = (
                    "sqlite://, postgresql:// or mysql:// (MySQL 8 / MariaDB 10.6+)"
                    if name == "primary_database_url"
                    else "sqlite:// or postgresql+psycopg:// (the archive is not kept in MySQL)"
                )
                raise ValueError(f"LIFECYCLE_{name.upper()} must be {allowed}, got {backend!r}")
        if _same_database(self.primary_database_url, self.archive_database_url):
            raise ValueError(
                "LIFECYCLE_ARCHIVE_DATABASE_URL must differ from LIFECYCLE_PRIMARY_DATABASE_URL: "
                "the law requires archived data to be kept separately"
            )
        if not self.broker_url.startswith(("filesystem://", "redis://", "rediss://", "memory://")):
            raise ValueError(
                f"LIFECYCLE_BROKER_URL must be redis://HOST:PORT/DB (or empty for the embedded "
                f"default), got {_redact_url(self.broker_url)!r}"
            )
        return self

    # -- derived ---------------------------------------------------------------------------

    def organisation(self) -> str:
        """The organisation's name for notices, answers and access packages.

        The shipped demo map (no ``LIFECYCLE_DATA_MAP``) describes the demo centre, so its name
        is the default there; with a site's own map the setting is required.
        """
        if self.organisation_name:
            return self.organisation_name
        if self.data_map is None:
            return DEMO_ORGANISATION
        raise SettingsError(
            "LIFECYCLE_ORGANISATION_NAME is not set: notices, answers and access packages name "
            "the organisation that sends them"
        )

    @property
    def embedded(self) -> bool:
        """True when running on the trying-out default (filesystem broker or SQLite DBs)."""
        return self.broker_is_filesystem or self.primary_database_url.startswith("sqlite")

    @property
    def broker_is_filesystem(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))

    @property
    def broker_folder(self) -> Path:
        return self.var_dir / "broker"

    def sqlalchemy_url(self, which: str) -> str:
        """Normalise ``postgresql://`` to psycopg 3 and ``mysql://``/``mariadb://`` to PyMySQL,
        the drivers we ship."""
        url = self.primary_database_url if which == "primary" else self.archive_database_url
        url = driver_url(url)
        return normalise_mysql_url(url) or url

    def master_key_bytes(self) -> bytes:
        """The 32-byte master key; created (mode 0600) on first use in the embedded default."""

        if self.master_key is not None:
            return decode_master_key(self.master_key.get_secret_value())
        assert self.master_key_file is not None
        path = self.master_key_file
        if not path.exists():
            if path != default_master_key_file(self.var_dir):
                raise SettingsError(f"LIFECYCLE_MASTER_KEY_FILE {path} does not exist")
            if not self.archive_database_url.startswith("sqlite"):
                # A server archive DB is shared: a new key here (say, a second working
                # directory) would wrap new data keys under a key no other worker has, and
                # make this process unable to read any existing one.
                raise SettingsError(
                    f"no master key: {path} does not exist; point LIFECYCLE_MASTER_KEY_FILE "
                    "at this install's key file (a new key is created only for the embedded "
                    "SQLite archive; for a brand-new install run `lifecycle keys init`)"
                )
            _create_secret_file(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
        return read_master_key_file(path)

    def console_secret_value(self) -> str:
        """The console's cookie-signing key; generated once into var/console.secret."""
        if self.console_secret_key is not None:
            return self.console_secret_key.get_secret_value()
        path = self.var_dir / "console.secret"
        if not path.exists():
            _create_secret_file(path, (secrets.token_urlsafe(32) + "\n").encode())
        return path.read_text().strip()

    def flower_password_value(self) -> str:
        """The Flower password; generated once into var/flower.password when not set."""
        return self._password(self.flower_password, "flower.password")

    def metrics_password_value(self) -> str:
        """The metrics endpoint's password; generated once into var/metrics.password."""
        return self._password(self.metrics_password, "metrics.password")

    def _password(self, value: SecretStr | None, file_name: str) -> str:
        if value is not None:
            return value.get_secret_value()
        path = self.var_dir / file_name
        if not path.exists():
            _create_secret_file(path, (secrets.token_urlsafe(18) + "\n").encode())
        return path.read_text().strip()


def create_master_key_file(path: Path) -> bool:
    """Write a new random master key to ``path`` (mode 0600); False if it already exists."""
    if path.exists():
        return False
    _create_secret_file(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
    return True


def _create_secret_file(path: Path, content: bytes) -> None:
    """Create ``path`` (mode 0600) with ``content`` unless it exists, atomically.

    Several processes start at once on first run: the content is written to a private temp file
    and hard-linked into place, so a reader never sees a half-written key and exactly one
    writer wins (the others keep the winner's key).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _same_database(a: str, b: str) -> bool:
    ua, ub = make_url(a), make_url(b)
    if ua.get_backend_name() != ub.get_backend_name():
        return False
    if ua.get_backend_name() == "sqlite":
        return Path(ua.database or "").absolute() == Path(ub.database or "").absolute()
    return (ua.host, ua.port or 5432, ua.database) == (ub.host, ub.port or 5432, ub.database)


def _redact_url(url: str) -> str:
    """Never echo a password back in an error line."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if field:
            msg = f"LIFECYCLE_{field.upper()}: {msg}"
        raise SettingsError(msg) from None


def reset_settings_cache() -> None:
    get_settings.cache_clear()
