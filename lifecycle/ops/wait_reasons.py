"""What an open request is waiting for, in one line: for `--wait` and `lifecycle status`.

A request that does not move is not always a missing worker: a third party answering 500, a
legal hold, or no SMTP server for an email recipient keep it open too, and each needs a
different action. Ids, recipient names, hold ids, status codes and times only: no values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from lifecycle.core import db, leases
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.recipients.retry_schedule import max_attempts
from lifecycle.requests import holds
from lifecycle.requests.states import START, task_for
from models.base import utcnow
from models.recipients import Channel, Delivery, DeliveryState, Recipient
from models.requests import LifecycleRequest

SMTP_NOT_CONFIGURED = "SmtpNotConfigured"
# The key of "no worker has taken it yet": only this one suggests a missing worker.
QUEUED = "queued"


@dataclass(frozen=True)
class WaitReason:
    # Changes only when the reason does (not with a countdown): `--wait` prints on change.
    key: str
    text: str
    # Nothing will move without an operator (no SMTP configured): `--wait` stops at once.
    blocked: bool = False


def _in(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def _status_text(last: str | None) -> str:
    if not last:
        return "no answer yet"
    return f"HTTP {last}" if last.isdigit() else last


def _held(req: LifecycleRequest, now: datetime) -> WaitReason | None:
    # The worker writes this when a hold stops the request (lifecycle/rights/withdrawal.py).
    if not (req.error or "").startswith("on legal hold"):
        return None
    today = now.astimezone(ZoneInfo(get_settings().timezone)).date()
    with db.session("primary") as s:
        found = holds.holds_on_member(s, req.member_id, today)
        if not found:
            return None
        # The operator's own words from `lifecycle hold add --reason` (a case reference).
        parts = [
            f"legal hold {h.id} (until {h.until.isoformat()}, reason: "
            f"{' '.join(h.reason.split())[:80]})"
            for h in found
        ]
    ids = ",".join(str(h.id) for h in found)
    return WaitReason(f"hold:{ids}", "held by " + "; ".join(parts))


def _deliveries(req: LifecycleRequest, now: datetime) -> WaitReason | None:
    with db.session("primary") as s:
        rows = s.execute(
            select(
                Delivery.id,
                Delivery.state,
                Delivery.attempts,
                Delivery.last_status,
                Delivery.next_attempt_at,
                Recipient.name,
                Recipient.channel,
            )
            .join(Recipient, Recipient.id == Delivery.recipient_id)
            .where(Delivery.request_id == req.id, Delivery.state != DeliveryState.DELIVERED.value)
            .order_by(Delivery.id)
        ).all()
    if not rows:
        return None
    out: list[str] = []
    keys: list[str] = []
    blocked = False
    total = max_attempts()
    for did, state, attempts, last, nxt, name, channel in rows:
        keys.append(f"{did}:{state}:{attempts}:{last}")
        if last == SMTP_NOT_CONFIGURED and channel == Channel.EMAIL.value:
            blocked = True
            out.append(
                f"no SMTP configured: email to recipient {name!r} cannot be sent "
                "(set LIFECYCLE_SMTP_URL and restart the workers; the delivery is retried on "
                "its schedule)"
            )
            continue
        if state != DeliveryState.PENDING.value:
            out.append(
                f"delivery to recipient {name!r} {state} ({_status_text(last)}); "
                "lifecycle deliveries replay once fixed"
            )
            continue
        if not attempts:
            out.append(f"waiting for delivery to recipient {name!r} (not attempted yet)")
            continue
        when = f", next in {_in((as_utc(nxt) - now).total_seconds())}" if nxt is not None else ""
        out.append(
            f"waiting for delivery to recipient {name!r} ({_status_text(last)}, attempt "
            f"{attempts} of {total}{when})"
        )
    return WaitReason("deliveries:" + ",".join(keys), "; ".join(out), blocked)


def _job(req: LifecycleRequest, now: datetime) -> WaitReason | None:
    name = task_for(req.kind)
    if name is None:
        return None
    lease = leases.by_key(leases.lease_key(name, [req.id]))
    if lease is None:
        if req.state in START:
            return WaitReason(QUEUED, f"waiting for a worker to pick it up ({req.state})")
        return None
    if lease.state == "retrying":
        return WaitReason(
            f"retrying:{lease.error}", f"its job is retrying ({lease.error or 'no reason'})"
        )
    if lease.state == "redispatched":
        return WaitReason(
            f"redispatched:{lease.redispatches}",
            f"its job was re-sent (#{lease.redispatches}) after its worker stopped; waiting "
            "for a worker",
        )
    if lease.state == "held":
        left = leases.seconds_left(leases.lease_key(name, [req.id]))
        if left == 0:
            return WaitReason(
                "stalled",
                "its job stopped renewing its lease (worker gone?); the watchdog re-sends it",
            )
    return None


def why_waiting(req: LifecycleRequest, now: datetime | None = None) -> WaitReason | None:
    """The first thing that explains why ``req`` is still open, or None (it is being worked)."""
    now = as_utc(now or utcnow())
    for find in (_held, _deliveries, _job):
        reason = find(req, now)
        if reason is not None:
            return reason
    return None
