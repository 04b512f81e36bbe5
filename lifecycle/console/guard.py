"""What every console page relies on: who is logged in, what their role allows, and the
access-log entry of a page or action naming them and the client. web.py and the blueprints
(findings, handover, oidc, holds_actions, incident_actions) share these, so a check is
written once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from flask import abort, g, redirect, request, url_for

from lifecycle.console import accounts
from lifecycle.console.roles import may
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.vault import accesslog

log = logging.getLogger("lifecycle.console.web")
_V = TypeVar("_V", bound=Callable[..., Any])


def tz() -> ZoneInfo:
    return ZoneInfo(get_settings().timezone)


def local(when: datetime | None) -> str:
    if when is None:
        return ""
    return as_utc(when).astimezone(tz()).strftime("%Y-%m-%d %H:%M")


def client_ip() -> str:
    """The client's address: the TCP peer's, or the one a trusted proxy forwarded
    (LIFECYCLE_CONSOLE_TRUSTED_PROXIES: ProxyFix rewrites ``remote_addr`` in web.py)."""
    return request.remote_addr or "unknown"


def who() -> accounts.Who:
    return cast(accounts.Who, g.who)


def need(permission: str) -> None:
    """Refuse (403) an action the logged-in person's role does not allow."""
    if not may(who().role, permission):
        log.warning("console: %s (%s) refused %s", who().username, who().role, permission)
        abort(403)


def logged(
    kind: str,
    action: str,
    *,
    member_id: int | None = None,
    request_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """The access-log entry of this page or action, naming the person and the client."""
    accesslog.record_now(
        who().operator, kind, action, member_id=member_id, request_id=request_id,
        details={**(details or {}), "ip": client_ip()},
    )  # fmt: skip


def login_required(view: _V) -> _V:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if getattr(g, "who", None) is None:
            return redirect(url_for("login"))
        return view(*args, **kwargs)

    return cast(_V, wrapped)
