"""Third-party recipients and the provision log (제3자 제공 기록).

A provision is recorded when the site hands a member's fields to a recipient. It is refused
while the member is restricted (처리정지): during a correction the data may not be provided;
and, on consent, unless the member gives the provision consent it names, covering every field
(sensitive data only under a consent of its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lifecycle.channels.mailer import valid_address
from lifecycle.channels.webhooks import validate_secret, validate_url
from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.member_table import MemberTable, gives_consent, live_member, member_table
from lifecycle.requests.use_block import is_restricted
from models.recipients import Basis, Channel, Delivery, DeliveryState, Provision, Recipient


@dataclass(frozen=True)
class RecipientInfo:
    id: int
    name: str
    channel: str
    target: str
    disabled: bool
    provisions: int
    pending: int


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100 or any(ord(c) < 32 for c in name):
        raise UserError("recipient name must be 1-100 printable characters")
    return name


def add_recipient(
    name: str,
    *,
    webhook: str | None = None,
    secret: str | None = None,
    email: str | None = None,
    contact: str | None = None,
) -> int:
    name = _check_name(name)
    if bool(webhook) == bool(email):
        raise UserError("give exactly one of --webhook URL (with --secret) or --email ADDRESS")
    if webhook:
        validate_url(webhook)
        if not secret:
            raise UserError("--webhook needs --secret whsec_... (the receiver verifies with it)")
        validate_secret(secret)
    elif secret:
        raise UserError("--secret is only for --webhook recipients")
    if email and not valid_address(email):
        raise UserError("--email is not a valid email address")
    with db.session("primary") as s:
        if s.scalar(select(Recipient.id).where(Recipient.name == name)) is not None:
            raise UserError(f"recipient {name!r} already exists")
        r = Recipient(
            name=name,
            channel=(Channel.WEBHOOK if webhook else Channel.EMAIL).value,
            endpoint=webhook,
            email=email,
            secret=secret,
            contact=contact,
        )
        s.add(r)
        s.flush()
        return r.id


def get_recipient(s: Session, name: str) -> Recipient:
    r = s.scalar(select(Recipient).where(Recipient.name == name))
    if r is None:
        raise UserError(f"unknown recipient {name!r} (see lifecycle recipients list)")
    return r


def enable_recipient(name: str) -> None:
    """Re-enable an endpoint disabled by a 410 (after the third party fixed it)."""
    with db.session("primary") as s:
        r = get_recipient(s, name)
        r.disabled_at = None
        r.disabled_reason = None


def list_recipients() -> list[RecipientInfo]:
    with db.session("primary") as s:
        prov = dict(
            s.execute(
                select(Provision.recipient_id, func.count()).group_by(Provision.recipient_id)
            ).all()
        )
        pend = dict(
            s.execute(
                select(Delivery.recipient_id, func.count())
                .where(Delivery.state == DeliveryState.PENDING.value)
                .group_by(Delivery.recipient_id)
            ).all()
        )
        out = []
        for r in s.scalars(select(Recipient).order_by(Recipient.name)):
            out.append(
                RecipientInfo(
                    id=r.id,
                    name=r.name,
                    channel=r.channel,
                    target=r.endpoint or r.email or "",
                    disabled=r.disabled_at is not None,
                    provisions=int(prov.get(r.id, 0)),
                    pending=int(pend.get(r.id, 0)),
                )
            )
        return out


def parse_fields(text: str) -> list[str]:
    fields = [f.strip() for f in text.split(",") if f.strip()]
    if not fields:
        raise UserError("--fields needs at least one field name, e.g. --fields name,mobile")
    return list(dict.fromkeys(fields))


def record_provision(
    member_id: int,
    recipient_name: str,
    fields: list[str],
    basis: str = Basis.CONSENT.value,
    provided_at: datetime | None = None,
    *,
    purpose: str | None = None,
) -> int:
    if basis not in {b.value for b in Basis}:
        raise UserError("--basis must be consent or legal_request")
    if purpose is not None and not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", purpose):
        raise UserError("--purpose must be a short lowercase name, e.g. marketing")
    if member_id <= 0:
        raise UserError("member id must be a positive integer")
    with db.session("primary") as s:
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        for f in fields:
            if f not in mt.categories:
                raise UserError(
                    f"unknown field {f!r}: not a personal-data column of {mt.table.name} in the "
                    "data map"
                )
            mt.refuse_identifier(f, "provided")
        recipient = get_recipient(s, recipient_name)
        row = live_member(s, mt, member_id, exclusive=False)
        if is_restricted(s, member_id):
            raise UserError(
                f"member {member_id} is restricted (처리정지): their data may not be provided now"
            )
        if basis == Basis.CONSENT.value:
            _check_consent(s, mt, member_id, row, fields, recipient_name, purpose)
        p = Provision(
            member_id=member_id,
            recipient_id=recipient.id,
            fields=fields,
            basis=basis,
            purpose=purpose,
        )
        if provided_at is not None:
            p.provided_at = provided_at
        s.add(p)
        s.flush()
        return p.id


def _check_consent(
    s: Session,
    mt: MemberTable,
    member_id: int,
    row: Any,
    fields: list[str],
    recipient: str,
    purpose: str | None,
) -> None:
    """A provision on consent (개인정보 보호법 제17조①1호) needs a provision consent the member
    gives now, covering every field's category; a sensitive category needs a consent of its
    own (제23조①1호: the map lets such a consent cover sensitive categories only)."""
    dm = current_datamap()
    kinds = sorted(n for n, p in dm.consents.items() if p.kind == "provision")
    if purpose is None:
        raise UserError(
            "--basis consent needs --purpose naming the provision consent it rests on "
            f"(declared: {', '.join(kinds) or 'none: add it under consents: in the data map'})"
        )
    p = dm.consents.get(purpose)
    if p is None or p.kind != "provision":
        raise UserError(
            f"purpose {purpose!r} is not a provision consent of the data map (제17조①1호 needs "
            f"a consent to provide; declared: {', '.join(kinds) or 'none'})"
        )
    if p.recipient is not None and p.recipient != recipient:
        raise UserError(f"consent {purpose} is for recipient {p.recipient!r}, not {recipient!r}")
    for f in fields:
        cat = mt.categories[f]
        if cat not in p.categories:
            what = (
                "sensitive data (민감정보, 제23조①1호: a separate consent)"
                if (cat in dm.sensitive)
                else "data"
            )
            raise UserError(
                f"field {f} ({cat}) is {what} the consent {purpose} does not cover"
            )  # fmt: skip
    if not gives_consent(s, p, member_id, row):
        raise UserError(f"member {member_id} has not given consent {purpose}; nothing provided")


def provided_fields(s: Session, member_id: int) -> dict[int, set[str]]:
    """recipient id -> every field of this member ever provided to it."""
    out: dict[int, set[str]] = {}
    for rid, fields in s.execute(
        select(Provision.recipient_id, Provision.fields).where(Provision.member_id == member_id)
    ):
        out.setdefault(rid, set()).update(fields or [])
    return out
