"""Fast reachability checks for the broker and result backend (one clear line, not a hang)."""

from __future__ import annotations

import redis

from lifecycle.core.errors import BrokerUnavailable
from lifecycle.core.settings import get_settings


def _ping_redis(url: str, what: str, var: str) -> None:

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        where = url.split("@")[-1]
        raise BrokerUnavailable(
            f"{what} unreachable ({where}: {str(exc).splitlines()[0]}); check {var} and that "
            "Redis is running"
        ) from None


def check_broker() -> None:
    """Raise BrokerUnavailable when the broker or a Redis result backend does not answer."""
    s = get_settings()
    if s.broker_is_redis:
        _ping_redis(s.broker_url, "broker", "LIFECYCLE_BROKER_URL")
    if s.result_backend.startswith(("redis://", "rediss://")):
        _ping_redis(s.result_backend, "result backend", "LIFECYCLE_RESULT_BACKEND")
