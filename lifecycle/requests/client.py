"""The Python client of the outbox: commit a request, then dispatch it at once.

If the broker is down the request is still committed as 'received' and the relay sends it
later, so a caller never loses a request to a broker outage.
"""

from __future__ import annotations

import logging
from typing import Any

from lifecycle.core import db
from lifecycle.requests.outbox import submit
from lifecycle.requests.relay import dispatch_one

log = logging.getLogger(__name__)


def dispatch_now(request_id: int) -> bool:
    """Try to dispatch a committed request; False (logged) when the broker is unreachable."""
    try:
        dispatch_one(request_id)
    except Exception as exc:
        log.warning(
            "request %s stored; broker unreachable (%s), the relay will dispatch it",
            request_id,
            type(exc).__name__,
        )
        return False
    return True


def submit_and_enqueue(
    kind: str,
    member_id: int,
    payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
) -> int:
    """Commit the request in a transaction of its own, then dispatch it."""
    with db.session("primary") as s:
        request_id = submit(s, kind, member_id, payload, idempotency_key, actor)
    dispatch_now(request_id)
    return request_id
