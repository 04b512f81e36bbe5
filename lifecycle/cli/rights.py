"""The rights of the data subject as commands: `lifecycle access`, `erase`, `suspend`,
`unsuspend` (처리정지; `restrict`/`unrestrict` still work), `consent withdraw`, and
`lifecycle requests extend` (열람 연기).

Each records who asked (the member, a guardian, a delegate) and how they were verified; the
website does the same by inserting the request row itself. Bad input is refused before
anything is created; a requester the worker cannot accept is refused with a written answer.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_type_hints

import typer

from lifecycle.cli.app import app
from lifecycle.cli.members import HELP, member_id_from

if TYPE_CHECKING:  # the commands import what they use when run: `lifecycle --help` stays fast
    from sqlalchemy.orm import Session

    from models.requests import LifecycleRequest

consent_app = typer.Typer(help="Consent per purpose (동의 철회).", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
requests_app = typer.Typer(
    help="Requests: postpone an access request, refuse or answer one, retry a failed one.",
    no_args_is_help=True,
)
app.add_typer(requests_app, name="requests")

_F = TypeVar("_F", bound=Callable[..., int])

MemberArg = Annotated[str, typer.Argument(metavar="MEMBER_ID", help=HELP)]
RequesterOpt = Annotated[
    str, typer.Option("--requester", help="Who asks: member, guardian (법정대리인), delegate.")
]
NameOpt = Annotated[
    str | None, typer.Option("--requester-name", help="The guardian's or delegate's name.")
]
ContactOpt = Annotated[
    str | None, typer.Option("--requester-contact", help="Email for the written answer.")
]
VerifiedOpt = Annotated[
    str | None,
    typer.Option(
        "--verified-by",
        help="login (site session), document (checked by staff) or callback (staff called or "
        "wrote back to the member's recorded contact).",
    ),
]
ViaOpt = Annotated[
    str | None,
    typer.Option("--received-via", help="phone, letter, email or visit: staff took it."),
]
# Who asks, as every right's command takes it: (parameter, its option, default).
_ASKER: tuple[tuple[str, Any, str | None], ...] = (
    ("requester", RequesterOpt, "member"),
    ("requester_name", NameOpt, None),
    ("requester_contact", ContactOpt, None),
    ("verified_by", VerifiedOpt, None),
    ("received_via", ViaOpt, None),
)
WaitOpt = Annotated[bool, typer.Option("--wait", help="Block until done; non-zero if refused.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds --wait waits at most.")]


def _requester(  # type: ignore[no-untyped-def]
    kind: str, name: str | None, contact: str | None, verified: str | None, via: str | None
):
    from lifecycle.rights.intake import make_requester

    return make_requester(kind, name, contact, verified, via)


# What a right's command has to tell after the submission line (the access package's password
# file), filled by the right's function.
_notes: list[str] = []


def _done(what: str, request_id: int, member_id: int, wait: bool, timeout: float) -> None:
    typer.echo(f"{what} request {request_id} for member {member_id} submitted")
    for note in _notes:
        typer.echo(note)
    _notes.clear()
    if wait:
        _dispatch(request_id)
        from lifecycle.cli.waiting import wait_for_request

        state = wait_for_request(request_id, timeout=timeout)
        typer.echo(f"{what} request {request_id}: {state}")


def _dispatch(request_id: int) -> None:
    """Send a committed request now, for a command that waits for it. One that does not wait
    leaves it to the relay and so never imports Celery (a third of a second of its start)."""
    from lifecycle.requests.client import dispatch_now

    if not dispatch_now(request_id):
        typer.echo(
            f"request {request_id} stored; broker unreachable, the relay will dispatch it",
            err=True,
        )


def _prepare() -> None:
    from lifecycle.core.db import check_reachable

    check_reachable("primary")


def _right(
    group: typer.Typer,
    name: str,
    what: str,
    timeout: float,
    old_names: tuple[str, ...] = (),
    log_kind: str = "change",
    former: bool = False,
) -> Callable[[_F], _F]:
    """Register ``fn(member_id, requester, **its own options) -> request id`` as the command
    ``name``: MEMBER_ID, its own options, then what every right shares (who asks, how they were
    verified, --wait, --timeout). ``old_names`` keep working, hidden from --help, for scripts
    written before the command was renamed. Each submission is an access-log entry of kind
    ``log_kind`` naming the operator and the options given (names and flags, never values).
    ``former``: a right a former member keeps, so MEMBER_ID may name one (members.py)."""

    def register(fn: _F) -> _F:
        # Only its own options (the first two are the member and the requester), with their
        # typer annotations resolved (this module's annotations are strings).
        hints = get_type_hints(fn, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in list(inspect.signature(fn).parameters.values())[2:]
        ]

        def command(
            member_id: str,
            requester: str,
            requester_name: str | None,
            requester_contact: str | None,
            verified_by: str | None,
            received_via: str | None,
            wait: bool,
            timeout: float,
            **options: Any,
        ) -> None:
            # Every right's shape: check the input, then submit, then maybe wait.
            from lifecycle.cli.operator import current, record

            who = _requester(
                requester, requester_name, requester_contact, verified_by, received_via
            )
            # An OS account the operator register refuses changes nothing; the request row
            # names the operator, so the worker's access-log entry does too (not `website`).
            who = dataclasses.replace(who, actor=current())
            mid = member_id_from(member_id, former=former)
            _prepare()
            request_id = fn(mid, who, **options)
            given = sorted(k for k, v in options.items() if v not in (None, False, ""))
            record(log_kind, f"{name} (request)", member_id=mid, request_id=request_id,
                   details={"options": given, "requester": requester})  # fmt: skip
            _done(what, request_id, mid, wait, timeout)

        kw = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [
            inspect.Parameter("member_id", kw, annotation=MemberArg),
            *own,
            *(inspect.Parameter(n, kw, annotation=a, default=d) for n, a, d in _ASKER),
            inspect.Parameter("wait", kw, annotation=WaitOpt, default=False),
            inspect.Parameter("timeout", kw, annotation=TimeoutOpt, default=timeout),
        ]
        # Typer reads the command's parameters from its signature and type hints.
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__, command.__name__ = fn.__doc__, fn.__name__
        group.command(name)(command)
        for old in old_names:
            group.command(old, hidden=True)(command)
        return fn

    return register


@_right(app, "access", "access", 3600.0, log_kind="export", former=True)
def access_cmd(
    member_id: int,
    who: Any,
    out: Annotated[str, typer.Option("--out", help="The ZIP file to write (must not exist).")],
    password_file: Annotated[
        str | None,
        typer.Option(
            "--password-file",
            help="The ZIP's AES-256 password: this file's first line (default: a random one "
            "written to OUT.password.txt).",
        ),
    ] = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="Write an unencrypted ZIP (logged as such).")
    ] = False,
) -> int:
    """열람: everything held on the member, a former member's too (every mapped table, the
    archived records, provisions, purposes, periods, consents) in an encrypted ZIP."""
    from lifecycle.cli.operator import current
    from lifecycle.rights.access import password_path, submit_access

    # The worker's access-log entry for the package names the operator who submitted it.
    rid = submit_access(
        member_id, out, password_file, who, plain=plain, dispatch=False, actor=current()
    )
    if plain:
        typer.echo("warning: the package will NOT be encrypted (--plain, logged)", err=True)
    elif password_file is None:
        pw = password_path(str(Path(out).expanduser().resolve()))
        _notes.append(f"the package's password will be written to {pw}")
    return rid


@_right(app, "erase", "erasure", 3600.0, log_kind="destroy")
def erase_cmd(
    member_id: int,
    who: Any,
    fields: Annotated[
        str, typer.Option("--fields", help="Fields or categories to delete, e.g. rrn,hobbies.")
    ],
) -> int:
    """삭제: clear named items of a live member; recipients of them are told to delete them."""
    from lifecycle.rights.erase import submit_erasure

    return submit_erasure(member_id, fields, who, dispatch=False)


@_right(app, "suspend", "suspension", 600.0, old_names=("restrict",))
def restrict_cmd(
    member_id: int,
    who: Any,
    reason: Annotated[str, typer.Option("--reason", help="Why the member asks (recorded).")],
) -> int:
    """처리정지: stop using and providing the member's data until lifted."""
    from lifecycle.rights.suspension import submit_suspension

    return submit_suspension(member_id, reason, who, dispatch=False)


@_right(app, "unsuspend", "suspension lift", 600.0, old_names=("unrestrict",))
def unrestrict_cmd(member_id: int, who: Any) -> int:
    """처리정지 해제: lift the member's suspension."""
    from lifecycle.rights.suspension import submit_lift

    return submit_lift(member_id, who, dispatch=False)


@_right(consent_app, "withdraw", "consent withdrawal", 3600.0, former=True)
def consent_withdraw_cmd(
    member_id: int,
    who: Any,
    purpose: Annotated[
        str, typer.Option("--purpose", help="The consent to withdraw (the map's consents:).")
    ],
) -> int:
    """동의 철회: clear the consent, destroy what depended on it; recipients of data given
    under it are told to delete it."""
    from lifecycle.rights.consent import submit_consent_withdrawal

    return submit_consent_withdrawal(member_id, purpose, who, dispatch=False)


@consent_app.command("give")
def consent_give_cmd(
    member_id: MemberArg,
    purpose: Annotated[str, typer.Option("--purpose", help="The purpose (the map's consents:).")],
    version: Annotated[
        str, typer.Option("--version", help="The version of the consent text the member saw.")
    ],
    given_at: Annotated[
        str | None,
        typer.Option("--given-at", help="When it was given (ISO 8601; default: now)."),
    ] = None,
) -> None:
    """Record a consent the member gave (the history, and the site's column where the map
    names one): e.g. the separate consent to keep counselling records after leaving."""
    from datetime import UTC, datetime

    from lifecycle.cli.operator import record
    from lifecycle.core.errors import UserError
    from lifecycle.rights.consent import give_consent

    mid = member_id_from(member_id)
    when = None
    if given_at is not None:
        try:
            when = datetime.fromisoformat(given_at)
        except ValueError:
            raise UserError(
                "--given-at is not a date-time (YYYY-MM-DDTHH:MM[:SS][+09:00])"
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    _prepare()
    cid = give_consent(mid, purpose, version, given_at=when)
    record("change", "consent give", member_id=mid, details={"purpose": purpose, "consent": cid})
    typer.echo(f"consent {purpose} of member {mid} recorded (history row {cid})")


@consent_app.command("history")
def consent_history_cmd(member_id: MemberArg) -> None:
    """Every consent the lifecycle recorded for the member: purpose, text version, given and
    withdrawn times, where it was learnt (ids and times only)."""
    from lifecycle.rights.consent import history

    mid = member_id_from(member_id)
    _prepare()
    for c in history(mid):
        given = c.given_at.isoformat() if c.given_at else "-"
        gone = c.withdrawn_at.isoformat() if c.withdrawn_at else "-"
        typer.echo(
            f"{c.purpose}  version {c.text_version or '-'}  given {given}  withdrawn {gone}  "
            f"source {c.source}"
        )


def _locked_request(s: Session, request_id: int) -> LifecycleRequest:
    """The request row, locked for this transaction; one line if there is none."""
    from lifecycle.core.errors import UserError
    from lifecycle.requests.outbox import load_for_update

    req = load_for_update(s, request_id)
    if req is None:
        raise UserError(f"request {request_id} does not exist")
    return req


@requests_app.command("extend")
def extend_cmd(
    request_id: Annotated[int, typer.Argument(help="The request's id.")],
    days: Annotated[int, typer.Option("--days", help="How many days to postpone (1-30).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (sent to the requester).")],
) -> None:
    """Postpone an access request (시행령 제41조④): recorded, and the requester is told why."""
    from lifecycle.core.db import session
    from lifecycle.requests.deadlines import extend
    from lifecycle.rights.answers import postpone_notice

    _prepare()
    with session("primary") as s:
        due = extend(s, _locked_request(s, request_id), days, reason)
    postpone_notice(request_id)
    from lifecycle.cli.operator import record

    record("change", "requests extend", request_id=request_id, details={"days": days})
    typer.echo(f"request {request_id} postponed; now due {due.isoformat()}")


@requests_app.command("refuse")
def refuse_cmd(
    request_id: Annotated[int, typer.Argument(help="The request's id.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (Korean; sent in the answer, no personal data).")
    ],
) -> None:
    """Refuse a request no worker has started yet, with a reason; the requester is answered."""
    from lifecycle.cli.operator import record
    from lifecycle.rights.staff import refuse_request

    _prepare()
    refuse_request(request_id, reason)
    record("change", "requests refuse", request_id=request_id)
    typer.echo(f"request {request_id} refused; answer sent")


@requests_app.command("answer")
def answer_cmd(request_id: Annotated[int, typer.Argument(help="The request's id.")]) -> None:
    """Send the written answer of a request that has ended (once; again: the same answer)."""
    from lifecycle.cli.operator import record
    from lifecycle.rights.staff import answer_request

    _prepare()
    nid = answer_request(request_id)
    record("change", "requests answer", request_id=request_id, details={"notice": nid})
    typer.echo(f"request {request_id} answered (notice {nid})")


@requests_app.command("retry")
def retry_cmd(
    request_id: Annotated[int, typer.Argument(help="The failed request's id.")],
    acknowledge: Annotated[
        bool,
        typer.Option(
            "--acknowledge",
            help="Accept the residue a withdrawal or an erasure is parked for (with --reason).",
        ),
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why the residue found is accepted.")
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600,
) -> None:
    """Retry a failed request from the step that failed (the steps done stay done). A
    withdrawal or an erasure parked for its residue is searched again and completes only if
    nothing is left; --acknowledge --reason accepts a known finding (recorded with you)."""
    from lifecycle.cli.operator import current, record
    from lifecycle.core import dispatch
    from lifecycle.core.db import session
    from lifecycle.core.errors import UserError
    from lifecycle.engine.context import get_context
    from lifecycle.requests.states import IllegalTransition, reopen, steps_done, task_for
    from lifecycle.rights.residue_check import check_reason, retry_parked

    if reason is not None and not acknowledge:
        raise UserError("--reason goes with --acknowledge")
    if acknowledge:
        reason = check_reason(reason)
    operator = current()
    _prepare()
    with session("primary") as s:
        req = _locked_request(s, request_id)
        dm = get_context().datamap
        state, still = retry_parked(s, req, dm, operator=operator, acknowledge=acknowledge,
                                    reason=reason)  # fmt: skip
        if still is None:
            try:
                state = state or reopen(req)
            except IllegalTransition as exc:
                raise UserError(str(exc)) from None
        done, kind = steps_done(req), req.kind
    details: dict[str, Any] = {"from": state}
    if acknowledge:
        details["acknowledged"] = reason
    record("change", "requests retry", request_id=request_id, details=details)
    if still is not None:
        # The re-check's verdict is committed; the request stays parked.
        raise UserError(f"request {request_id} still needs attention: {still}")
    after = f" after {', '.join(done)}" if done else ""
    try:
        dispatch.send(task_for(kind) or "", request_id)
        typer.echo(f"request {request_id} ({kind}) re-opened at {state}{after}; dispatched")
    except Exception as exc:
        # Committed: the relay's stale-request check sends it once the broker is back.
        typer.echo(
            f"request {request_id} re-opened at {state}{after}; broker unreachable "
            f"({type(exc).__name__}), the relay will dispatch it",
            err=True,
        )
    if wait:
        from lifecycle.cli.waiting import wait_for_request

        final = wait_for_request(request_id, timeout=timeout)
        typer.echo(f"request {request_id}: {final}")
