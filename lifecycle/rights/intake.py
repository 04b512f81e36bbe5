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
from lifecycle.datamap import identities, logins
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
# The (kind, canonical value) identities typed -> the former members holding one of them
# (lifecycle/vault/former.py, in the archive DB); the caller opens that database.
FormerLookup = Callable[[list[tuple[str, str]]], set[int]]


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

    def columns(self) -> dict[str, Any]:
        """Who asked, as the request row's columns (``outbox.submit``'s ``requester``)."""
        out: dict[str, Any] = {
            "requester_kind": self.kind,
            "requester_name": self.name,
            "requester_contact": self.contact,
            "verified_by": self.verified_by,
            "received_via": self.received_via,
        }
        if self.actor is not None:
            out["actor"] = self.actor
        return out

    def record(self, req: LifecycleRequest) -> None:
        """Who asked, on the request row (in the caller's transaction)."""
        for name, value in self.columns().items():
            setattr(req, name, value)


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
    # MEMBER_ID may be the member's email or mobile (resolve_member).
    for col in (subject.email_column, subject.mobile_column):
        if col:
            cols.setdefault(col, String())
    if subject.marker_store is not None:
        pass  # the marker is kept in a meta row or the lifecycle's own table, not here
    elif subject.marker_column:
        cols.setdefault(subject.marker_column, String())
    else:
        assert subject.status_column is not None and subject.withdrawn_at_column is not None
        cols.setdefault(subject.status_column, String())
        cols.setdefault(subject.withdrawn_at_column, DateTime())
    return table(subject.table, *(column(name, type_) for name, type_ in cols.items()))


def typed_identities(subject: Subject, text: str) -> list[tuple[str, str]]:
    """What ``text`` may be among the member's declared identities, each in its canonical form
    (lifecycle/datamap/identities.py): a login id, an email address, a mobile number."""
    declared = (
        ("login", subject.login_column),
        ("email", subject.email_column),
        ("mobile", subject.mobile_column),
    )
    out: list[tuple[str, str]] = []
    for kind, col in declared:
        canon = identities.normalise(kind, text) if col else None  # type: ignore[arg-type]
        if canon is not None:
            out.append((kind, canon))
    return out


def _live_matches(
    subject: Subject, t: Any, conn: Connection, text: str, typed: list[tuple[str, str]]
) -> set[int]:
    found: set[int] = set()
    if subject.login_column and any(k == "login" for k, _ in typed):
        q = select(t.c[subject.key]).where(logins.login_where(subject, t, text)).limit(2)
        found.update(int(k) for (k,) in conn.execute(q))
    columns = {"email": subject.email_column, "mobile": subject.mobile_column}
    for kind, canon in typed:
        col = columns.get(kind)
        if not col or col == subject.login_column:
            continue
        expr = identities.sql_normalised(kind, t.c[col], conn.dialect.name)  # type: ignore[arg-type]
        values = identities.mobile_forms(canon) if kind == "mobile" else [canon]
        q = select(t.c[subject.key]).where(expr.in_(values)).limit(2)
        found.update(int(k) for (k,) in conn.execute(q))
    return found


def resolve_member(
    subject: Subject, t: Any, conn: Connection, raw: str, *, former: FormerLookup | None = None
) -> int:
    """The lifecycle's member id for what an operator typed: the numeric key, or any identity
    the map declares on the member table (the site's own login id, e.g. ``lee_mh7``; the email
    address; the mobile number), compared in canonical form. ``former`` (given by the rights
    a former member keeps: 열람, consent withdrawal, archive retrieval) finds a withdrawn
    member through the hashes of their identities kept while their records are. Two members
    matching (live or former) is refused in one line; the value is never repeated in it.
    ``t``: the member table (:func:`subject_table` or the reflected one)."""
    text = raw.strip()
    # Digits alone are the member id, unless the site's own login id may be digits.
    if text.isdigit() and (not subject.login_column or subject.login_is_contact):
        return parse_member_id(text)
    typed = typed_identities(subject, text)
    if not typed:
        if not subject.login_column:
            return parse_member_id(text)
        raise UserError("unknown member: the given id is no login id, email or mobile number")
    live = _live_matches(subject, t, conn, text, typed)
    gone = former(typed) - live if former is not None else set()
    if len(live) + len(gone) > 1:
        who = "members" if not gone else "members, live or former,"
        raise UserError(
            f"several {who} have that login id, email or mobile: give the member number"
        )
    if live or gone:
        return (live or gone).pop()
    if subject.login_column and former is None:
        raise UserError(
            f"unknown member: no {subject.table}.{subject.login_column} equals the given id"
        )
    whom = "nobody, live or former (with records still kept)," if former else "no member"
    raise UserError(f"unknown member: {whom} has that login id, email or mobile")


def lock_member(subject: Subject, t: Any, conn: Connection, member_id: int) -> Any:
    """``(key, withdrawn?, withdrawn at or None)`` of the member, locked; None if unknown."""
    q = select(t.c[subject.key], subject.state_expr(t), subject.withdrawn_at_col(t)).where(
        t.c[subject.key] == member_id
    )
    row = conn.execute(dbkind.for_update(q, conn, of=t)).first()
    if row is None:
        return None
    return (row[0], subject.is_withdrawn(row[1]), subject.withdrawn_at(row[2]))


def lock_members(
    subject: Subject, t: Any, conn: Connection, member_ids: list[int]
) -> dict[int, Any]:
    """:func:`lock_member` for several members in one statement: member id -> its tuple (an
    unknown member is left out)."""
    key = t.c[subject.key]
    q = select(key, subject.state_expr(t), subject.withdrawn_at_col(t)).where(
        key.in_(sorted(set(member_ids)))
    )
    if key.primary_key and dbkind.is_mysql(conn):
        # On a small table the optimiser may prefer a full scan for an IN list, and a locking
        # full scan locks every row it reads (InnoDB), other members' too.
        q = q.with_hint(t, "FORCE INDEX (PRIMARY)", dialect_name=conn.dialect.name)
    return {
        int(r[0]): (r[0], subject.is_withdrawn(r[1]), subject.withdrawn_at(r[2]))
        for r in conn.execute(dbkind.for_update(q, conn, of=t))
    }


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
        who = requester.columns() if requester is not None else None
        return outbox.submit(s, "withdrawal", member_id, actor=actor, requester=who)


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
