"""A request's residue verdict: what the residue check after a withdrawal or an erasure found.

The check itself is :mod:`lifecycle.engine.residue`; this module keeps its outcome on the
request (``payload["residue"]``: table.column names and counts, never a value) so that every
later step and the completion of deliveries can ask whether the request may complete, and so
that an operator's acknowledgement (``lifecycle requests retry ID``) is recorded there.

``payload["residue"]``::

    {"found": {"legacy_notes.body": 2}, "incomplete": "time budget of 30s used up ...",
     "searched": 14, "sampled_out": 31, "sampled": ["big_log"], "acknowledged": false,
     "sealed": {...}}

``sealed``: while a request is parked, the identities the check looked for, encrypted
(:mod:`lifecycle.rights.residue_check`), so that ``lifecycle requests retry`` can search again
once the operator removed the leftovers; dropped when the request leaves the parking (clean
re-check, or an acknowledgement). ``acknowledged`` then says who accepted a known finding, when
and why (``acknowledged_by``, ``acknowledged_at``, ``acknowledged_reason``).
"""

from __future__ import annotations

from typing import Any

from lifecycle.requests.states import resume_state
from models.base import utcnow
from models.requests import LifecycleRequest, RequestState

KEY = "residue"
SEALED = "sealed"
# How the note of a request whose residue check only sampled some tables starts (a completed
# request keeps it; `lifecycle status` lists it with the other notes).
SAMPLED_NOTE = "residue check sampled only"


def verdict(req: LifecycleRequest) -> dict[str, Any] | None:
    payload = req.payload if isinstance(req.payload, dict) else {}
    v = payload.get(KEY)
    return v if isinstance(v, dict) else None


def record(
    req: LifecycleRequest, result: dict[str, Any], sealed: dict[str, str] | None = None
) -> None:
    """Keep the check's outcome (names and counts only) on the request, in the caller's
    transaction: the one that destroyed or erased the data (or the re-check's). ``sealed``:
    the encrypted identities, kept only while the verdict is open."""
    payload = dict(req.payload) if isinstance(req.payload, dict) else {}
    payload[KEY] = {**result, "acknowledged": False}
    if sealed is not None and reason(payload[KEY]) is not None:
        payload[KEY][SEALED] = sealed
    req.payload = payload


def sealed_of(v: dict[str, Any] | None) -> dict[str, str] | None:
    s = (v or {}).get(SEALED)
    return s if isinstance(s, dict) else None


def sampled_line(v: dict[str, Any] | None) -> str | None:
    """The note of a verdict that searched some tables by a sample only (None: none did)."""
    tables = list((v or {}).get("sampled") or [])
    if not tables:
        return None
    shown = ", ".join(tables[:8]) + (f" and {len(tables) - 8} more" if len(tables) > 8 else "")
    return (
        f"{SAMPLED_NOTE} {len(tables)} table(s) over LIFECYCLE_RESIDUE_EXHAUSTIVE_ROWS ({shown}): "
        "their text columns whose newest rows held no address or number were not searched"
    )


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
        " retry` the request to search again (or accept them: --acknowledge --reason TEXT)"
    )


def open_reason(req: LifecycleRequest) -> str | None:
    """Why ``req`` may not complete because of its residue check (None: it may)."""
    return reason(verdict(req))


def parked(req: LifecycleRequest) -> bool:
    """``req`` waits for an operator because of its residue check."""
    return req.state == RequestState.NEEDS_ATTENTION.value and open_reason(req) is not None


def acknowledge(req: LifecycleRequest, operator: str, why: str) -> bool:
    """The operator accepts the residue found (`lifecycle requests retry --acknowledge
    --reason`): recorded on the verdict with who, when and why; the sealed identities go.
    True when there was an open residue to acknowledge."""
    v = verdict(req)
    if not parked(req):
        return False
    assert v is not None
    payload = dict(req.payload) if isinstance(req.payload, dict) else {}
    payload[KEY] = {
        **{k: x for k, x in v.items() if k != SEALED},
        "acknowledged": True,
        "acknowledged_by": operator,
        "acknowledged_at": utcnow().isoformat(),
        "acknowledged_reason": why,
    }
    req.payload = payload
    return True


def reopen_parked(req: LifecycleRequest) -> str:
    """Put a request that was parked for its residue, now clean or acknowledged, back at its
    last step (a withdrawal at ``destroyed``, which then completes and notifies the member; an
    erasure at ``notifying``)."""
    to = resume_state(req)
    req.state = to
    req.updated_at = utcnow()
    req.completed_at = None
    req.error = sampled_line(verdict(req))
    return to
