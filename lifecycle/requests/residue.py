"""A request's residue verdict: what the residue check after a withdrawal or an erasure found.

The check itself is :mod:`lifecycle.engine.residue`; this module keeps its outcome on the
request (``payload["residue"]``: table.column names and counts, never a value) so that every
later step and the completion of deliveries can ask whether the request may complete, and so
that an operator's acknowledgement (``lifecycle requests retry ID``) is recorded there.

``payload["residue"]``::

    {"found": {"legacy_notes.body": 2}, "incomplete": "time budget of 30s used up ...",
     "searched": 14, "sampled_out": 31, "acknowledged": false}
"""

from __future__ import annotations

from typing import Any

from lifecycle.requests.states import resume_state
from models.base import utcnow
from models.requests import LifecycleRequest, RequestState

KEY = "residue"


def verdict(req: LifecycleRequest) -> dict[str, Any] | None:
    payload = req.payload if isinstance(req.payload, dict) else {}
    v = payload.get(KEY)
    return v if isinstance(v, dict) else None


def record(req: LifecycleRequest, result: dict[str, Any]) -> None:
    """Keep the check's outcome (names and counts only) on the request, in the caller's
    transaction: the one that destroyed or erased the data."""
    payload = dict(req.payload) if isinstance(req.payload, dict) else {}
    payload[KEY] = {**result, "acknowledged": False}
    req.payload = payload


def reason(v: dict[str, Any] | None) -> str | None:
    """The one-line reason the request needs attention, or None (clean, or acknowledged)."""
    if not v or v.get("acknowledged"):
        return None
    found: dict[str, int] = dict(v.get("found") or {})
    parts: list[str] = []
    if found:
        shown = ", ".join(f"{col} ({n})" for col, n in sorted(found.items()))
        parts.append(
            f"residue: the member's identities remain in {shown} after the request's destruction"
        )
    if v.get("incomplete"):
        parts.append(f"residue check incomplete: {v['incomplete']}")
    if not parts:
        return None
    return (
        "; ".join(parts)
        + "; remove them (or raise LIFECYCLE_RESIDUE_BUDGET_SECONDS), then `lifecycle requests"
        " retry` the request to acknowledge"
    )


def open_reason(req: LifecycleRequest) -> str | None:
    """Why ``req`` may not complete because of its residue check (None: it may)."""
    return reason(verdict(req))


def acknowledge(req: LifecycleRequest) -> bool:
    """The operator dealt with the residue (`lifecycle requests retry`): record it on the
    verdict. True when there was an open residue to acknowledge."""
    v = verdict(req)
    if req.state != RequestState.NEEDS_ATTENTION.value or reason(v) is None:
        return False
    assert v is not None
    payload = dict(req.payload) if isinstance(req.payload, dict) else {}
    payload[KEY] = {**v, "acknowledged": True}
    req.payload = payload
    return True


def reopen_acknowledged(req: LifecycleRequest) -> str | None:
    """`lifecycle requests retry` on a request parked for its residue: acknowledge it and put
    the request back at its last step (a withdrawal at ``destroyed``, which then completes and
    notifies the member; an erasure at ``notifying``). None: not parked for a residue."""
    if not acknowledge(req):
        return None
    to = resume_state(req)
    req.state = to
    req.updated_at = utcnow()
    req.completed_at = None
    req.error = None
    return to
