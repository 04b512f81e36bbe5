"""Taking a request in, as the website does when it runs `lifecycle withdraw MEMBER_ID`: check
the input, record the request, and leave the rest to the worker.

This is the part of a request that runs in the command's own process, so it needs no more than
the data map's subject section, one lightweight view of the member table (its mapped columns,
typed, with no reflection: :func:`subject_table`), the request outbox and who asked. It imports
neither the engine nor Celery: the worker checks the whole map against the database when it
carries the request out, and the relay sends the committed request to it (tests/rights/
test_submit_path.py holds the submit path to that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from sqlalchemy import Connection, DateTime, Integer, String, column, select, table
from sqlalchemy.sql.expression import TableClause

from lifecycle.core import db, dbkind
from lifecycle.core.errors import UserError
from lifecycle.datamap import logins
from lifecycle.datamap.model import Subject
from lifecycle.requests import outbox
from models.requests import (
    OPEN_STATES,
    LifecycleRequest,
    ReceivedVia,
    RequesterKind,
    RequestState,
    VerifiedBy,
)

# (connection, member id) -> whether the member's kept row was already blanked (maps with
# ``on_withdrawal: blank_and_keep``); the caller supplies it because it needs the whole map.
KeptRowCheck = Callable[[Connection, int], bool]


@dataclass(frozen=True)
class Requester:
    kind: str = RequesterKind.MEMBER.value
    name: str | None = None
    contact: str | None = None
    verified_by: str = VerifiedBy.LOGIN.value
    # How staff received it (phone, letter, email, visit); None: the website or the CLI.
    received_via: str | None = None
    # Who took the request in (the console's logged-in person); None keeps the row's own.
    actor: str | None = None

    def record(self, req: LifecycleRequest) -> None:
        """Who asked, on the request row (in the caller's transaction)."""
        req.requester_kind, req.requester_name = self.kind, self.name
        req.requester_contact, req.verified_by = self.contact, self.verified_by
        req.received_via = self.received_via
        if self.actor is not None:
            req.actor = self.actor


def make_requester(
    kind: str = "member",
    name: str | None = None,
    contact: str | None = None,
    verified_by: str | None = None,
    received_via: str | None = None,
) -> Requester:
    """A requester from CLI options (or the console's form), or a one-line UserError for an
    inconsistent one."""
    kinds = {k.value for k in RequesterKind}
    if kind not in kinds:
        raise UserError(f"--requester must be one of {', '.join(sorted(kinds))}")
    methods = {v.value for v in VerifiedBy}
    if verified_by is None:
        verified_by = VerifiedBy.LOGIN.value if kind == "member" else VerifiedBy.DOCUMENT.value
    if verified_by not in methods:
        raise UserError(f"--verified-by must be one of {', '.join(sorted(methods))}")
    if name is not None:
        name = " ".join(name.split())
        if not name or len(name) > 100:
            raise UserError("--requester-name must be 1-100 characters")
    if kind != "member" and not name:
        raise UserError(f"a {kind} request needs --requester-name (who is asking)")
    if kind == "delegate" and verified_by != VerifiedBy.DOCUMENT.value:
        raise UserError("a delegate's request needs --verified-by document (the 위임장)")
    if contact is not None:
        # Imported here: the mailer loads smtplib and email, which a member's own withdrawal
        # (no contact given, the website's submit path) does not need.
        from lifecycle.channels.mailer import valid_address

        if not valid_address(contact):
            raise UserError("--requester-contact must be an email address")
    channels = {c.value for c in ReceivedVia}
    if received_via is not None and received_via not in channels:
        raise UserError(f"--received-via must be one of {', '.join(sorted(channels))}")
    if received_via is not None and verified_by == VerifiedBy.LOGIN.value:
        # No site session backs a call or a letter: staff must say how they checked.
        raise UserError(
            f"a request received by {received_via} needs --verified-by document or callback"
        )
    return Requester(kind, name, contact, verified_by, received_via)


def parse_member_id(raw: str) -> int:
    text = raw.strip()
    if not text.isdigit() or int(text) <= 0 or len(text) > 18:
        raise UserError("MEMBER_ID must be a positive integer (the member's id)")
    return int(text)


def subject_table(subject: Subject) -> TableClause:
    """The member table's columns the intake reads and writes, typed as the map defines them
    (an integer key, text login and marker, a status with a date-time of withdrawal)."""
    cols: dict[str, Any] = {subject.key: Integer()}
    if subject.login_column:
        cols.setdefault(subject.login_column, String())
    if subject.marker_store is not None:
        pass  # the marker is kept in a meta row or the lifecycle's own table, not here
    elif subject.marker_column:
        cols.setdefault(subject.marker_column, String())
    else:
        assert subject.status_column is not None and subject.withdrawn_at_column is not None
        cols.setdefault(subject.status_column, String())
        cols.setdefault(subject.withdrawn_at_column, DateTime())
    return table(subject.table, *(column(name, type_) for name, type_ in cols.items()))


def resolve_member(subject: Subject, t: Any, conn: Connection, raw: str) -> int:
    """The lifecycle's member id for what an operator typed: the site's own member id (the
    map's ``login_column``, e.g. ``lee_mh7``) when the map names one, else the numeric key.
    ``t``: the member table (:func:`subject_table` or the reflected one)."""
    text = raw.strip()
    # A login that is the email: digits alone are no address, but the numeric member id.
    if not subject.login_column or (subject.login_is_contact and text.isdigit()):
        return parse_member_id(text)
    key = logins.lookup(subject, t, conn, text)
    if key is None:
        raise UserError(
            f"unknown member: no {subject.table}.{subject.login_column} equals the given id"
        )
    return int(key)


def lock_member(subject: Subject, t: Any, conn: Connection, member_id: int) -> Any:
    """``(key, withdrawn?, withdrawn at or None)`` of the member, locked; None if unknown."""
    q = select(t.c[subject.key], subject.state_expr(t), subject.withdrawn_at_col(t)).where(
        t.c[subject.key] == member_id
    )
    row = conn.execute(dbkind.for_update(q, conn, of=t)).first()
    if row is None:
        return None
    return (row[0], subject.is_withdrawn(row[1]), subject.withdrawn_at(row[2]))


def submit_withdrawal(
    subject: Subject,
    t: Any,
    member_id: int,
    *,
    actor: str | None = None,
    requester: Requester | None = None,
    kept_row_processed: KeptRowCheck | None = None,
) -> int:
    """What the website does on 회원탈퇴, in its own schema's terms (via the data map): mark the
    member withdrawn and record the request in one transaction. Returns the request id; the
    relay dispatches it.

    Refuses (UserError, nothing changed) an unknown member, a member whose withdrawal was
    already carried out, and a member with a withdrawal already in progress.
    """
    with db.session("primary") as s:
        conn = s.connection()
        row = lock_member(subject, t, conn, member_id)
        if row is None:
            _refuse_unknown(s, member_id)
        if row[1] and kept_row_processed is not None and kept_row_processed(conn, member_id):
            raise UserError(f"member {member_id} was already withdrawn and processed")
        open_req = s.execute(
            select(LifecycleRequest.id, LifecycleRequest.state).where(
                LifecycleRequest.member_id == member_id,
                LifecycleRequest.kind == "withdrawal",
                LifecycleRequest.state.in_([st.value for st in OPEN_STATES]),
            )
        ).first()
        if open_req is not None:
            raise UserError(
                f"member {member_id} already has withdrawal request {open_req[0]} in progress "
                f"({open_req[1]})"
            )
        if not row[1] or row[2] is None:
            subject.record_withdrawal(conn, t, member_id, row[2] or datetime.now(UTC))
        request_id = outbox.submit(s, "withdrawal", member_id, actor=actor)
        if requester is not None:
            req = s.get(LifecycleRequest, request_id)
            assert req is not None
            requester.record(req)
        return request_id


def _refuse_unknown(s: Any, member_id: int) -> NoReturn:
    """The one-line reason a member without a row cannot be withdrawn (always raises)."""
    earlier = s.scalar(
        select(LifecycleRequest.id)
        .where(
            LifecycleRequest.member_id == member_id,
            LifecycleRequest.kind == "withdrawal",
            LifecycleRequest.state.in_(
                [RequestState.DESTROYED.value, RequestState.COMPLETED.value]
            ),
        )
        .limit(1)
    )
    if earlier is not None:
        raise UserError(
            f"member {member_id} was already withdrawn and processed (request {earlier})"
        )
    failed = s.execute(
        select(LifecycleRequest.id, LifecycleRequest.steps_done)
        .where(
            LifecycleRequest.member_id == member_id,
            LifecycleRequest.kind == "withdrawal",
            LifecycleRequest.state == RequestState.FAILED.value,
            LifecycleRequest.steps_done.is_not(None),
        )
        .order_by(LifecycleRequest.id.desc())
        .limit(1)
    ).first()
    if failed is not None:
        # Its rows are gone, so a new request could not find the member: the failed one
        # resumes where it stopped.
        raise UserError(
            f"member {member_id}'s withdrawal request {failed[0]} failed after "
            f"{(failed[1] or '').replace(',', ', ')}; resume it with "
            f"`lifecycle requests retry {failed[0]}`"
        )
    raise UserError(f"unknown member {member_id}")
