"""What the privacy office does to a request by hand, from `lifecycle requests refuse|answer`
and from the console alike: refuse it with a reason before the worker has started on it, and
send its written answer once it has ended.

A refusal goes through the kind's pipeline (its ``on_refuse`` undoes what the request held) and
is answered like any other ended request (시행령 제41조⑤·제43조③·제44조: the reason and how
to object). The reason is the staff's own words; it goes into the answer, so it must be free of
anyone's personal data, which the form says.
"""

from __future__ import annotations

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.requests.outbox import load_for_update
from lifecycle.requests.states import TERMINAL
from lifecycle.rights import answers
from lifecycle.rights.access import ACCESS
from lifecycle.rights.consent import CONSENT_WITHDRAWAL
from lifecycle.rights.correction import CORRECTION
from lifecycle.rights.erase import ERASURE
from lifecycle.rights.pipeline import Job, Pipeline, Run, refuse
from lifecycle.rights.suspension import SUSPENSION, SUSPENSION_LIFT
from lifecycle.rights.withdrawal import WITHDRAWAL
from models.requests import RequestState

PIPELINES: dict[str, Pipeline] = {
    p.kind: p
    for p in (ACCESS, CONSENT_WITHDRAWAL, CORRECTION, ERASURE, SUSPENSION, SUSPENSION_LIFT,
              WITHDRAWAL)
}  # fmt: skip
# Before a worker took the first step: nothing is half done that a refusal would strand.
REFUSABLE = frozenset({RequestState.RECEIVED.value, RequestState.DISPATCHED.value})
MAX_REASON = 500


def clean_reason(reason: str) -> str:
    text = " ".join((reason or "").split())
    if not text or len(text) > MAX_REASON:
        raise UserError(f"--reason must be 1-{MAX_REASON} characters")
    return text


def refuse_request(request_id: int, reason: str) -> int | None:
    """Refuse an open request that no worker has started, with ``reason`` (sent in the answer);
    returns the answer's notice id. A one-line UserError, nothing changed, otherwise."""
    text = clean_reason(reason)
    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        if req is None:
            raise UserError(f"request {request_id} does not exist")
        if req.state in TERMINAL:
            raise UserError(f"request {request_id} is already {req.state}")
        if req.state not in REFUSABLE:
            raise UserError(
                f"request {request_id} is being carried out ({req.state}); it can no longer be "
                "refused by hand"
            )
        pipeline = PIPELINES.get(req.kind)
        if pipeline is None:
            raise UserError(f"request {request_id} is of an unknown kind {req.kind!r}")
        job = Job(s, req, Run(pipeline, request_id))
        refuse(job, text)
    for fn in job.after:
        fn()
    return answers.answer(request_id)


def answer_request(request_id: int) -> int | None:
    """Send the written answer of an ended request now (once: a second call returns the same
    notice); a one-line UserError while the request is still being carried out."""
    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        if req is None:
            raise UserError(f"request {request_id} does not exist")
        if req.state not in answers.ANSWERABLE:
            raise UserError(
                f"request {request_id} is still {req.state}; it can be answered once it is "
                "carried out (or refuse it with a reason)"
            )
    return answers.answer(request_id)
