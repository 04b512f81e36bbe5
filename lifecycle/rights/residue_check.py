"""The residue check inside a request's destroying step (withdrawal) or erasing step (erasure),
and its re-run when the operator retries a request parked for it.

The step captures the identities before it destroys them (:mod:`lifecycle.engine.residue`),
then calls :func:`check` after: the search runs in the step's transaction and its verdict
(names and counts) is recorded on the request in the same commit as the destruction. The run's
result (what Flower shows) gets the verdict's counts only.

*Re-checking.* Once the member's row is gone the lifecycle has no other copy of what to look
for, so a request parked for its residue keeps the identities **sealed** on its verdict:
AES-256-GCM under a key derived from the master key for this purpose only, bound to the
request's id. ``lifecycle requests retry`` (:func:`retry_parked`) unseals them, searches again
and completes the request only if nothing is left; ``--acknowledge --reason`` accepts a finding
the operator knows of, recorded with the operator. Either way the sealed copy goes when the
request leaves the parking; it never reaches a log, a task argument or a result.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.datamap.model import DataMap
from lifecycle.engine import residue
from lifecycle.requests import residue as verdicts
from lifecycle.rights.pipeline import Job
from lifecycle.vault import crypto, ledger
from models.requests import LifecycleRequest, RequestKind

log = logging.getLogger(__name__)

_SEAL_INFO = b"residue-recheck-identities"
MIN_REASON_CHARS = 4


def check(job: Job, dm: DataMap, ids: residue.Identities, kept: Callable[[Any], bool]) -> None:
    result = residue.scan(
        job.s.connection(), dm, ids, kept=kept, budget=residue.Budget.from_settings(get_settings())
    )
    record(job, ids, result)


def check_many(
    jobs: list[Job], dm: DataMap, ids: list[residue.Identities], kept: Callable[[Any], bool]
) -> None:
    """:func:`check` for requests destroyed in one transaction (a group of withdrawals): one
    search for all their identities, each request's own verdict recorded on it."""
    results = residue.scan_many(
        jobs[0].s.connection(), dm, ids, kept=kept,
        budget=residue.Budget.from_settings(get_settings()),
    )  # fmt: skip
    for job, one, result in zip(jobs, ids, results, strict=True):
        record(job, one, result)


def record(job: Job, ids: residue.Identities, result: residue.Result) -> None:
    """The request's verdict from its search ``result`` (names and counts)."""
    if result.skipped:
        # Nothing to look for: the member's row held no login id, email or mobile number.
        verdicts.record(job.req, {"found": {}, "incomplete": None, "nothing_to_search": True})
        job.run.out["residue"] = {"found": 0, "nothing_to_search": True}
        return
    verdicts.record(job.req, result.as_dict(), seal(job.req.id, ids))
    show(job)
    line = verdicts.open_reason(job.req)
    if line is not None:
        log.warning("%s request %s: %s", job.req.kind, job.request_id, line)
        return
    note = verdicts.sampled_line(verdicts.verdict(job.req))
    if note is not None and not job.req.error:
        # Said to the end: the completed request keeps it as its note (lifecycle status).
        job.req.error = note
    log.info(
        "%s request %s: residue check clean (%d columns searched, %d probed, %.2fs)",
        job.req.kind, job.request_id, result.searched, result.probed, result.seconds,
    )  # fmt: skip


def show(job: Job) -> None:
    """The verdict in the run's result (Flower): column names and counts, never values."""
    v = verdicts.verdict(job.req)
    if v is None:
        return
    found = dict(v.get("found") or {})
    job.run.out["residue"] = {
        "found": sum(int(n) for n in found.values()),
        "columns": found,
        "incomplete": bool(v.get("incomplete")),
        "sampled": len(v.get("sampled") or []),
        "searched": int(v.get("searched", 0)),
        "seconds": v.get("seconds", 0),
    }


# -- sealing ------------------------------------------------------------------------------------


def _key() -> bytes:
    return crypto.derive_key(get_settings().master_key_bytes(), _SEAL_INFO)


def _aad(request_id: int) -> bytes:
    return f"residue:{request_id}".encode()


def seal(request_id: int, ids: residue.Identities) -> dict[str, str]:
    """``ids`` encrypted for this request only (names no value in clear)."""
    plain = orjson.dumps(
        {
            "login": ids.login,
            "emails": sorted(ids.emails),
            "mobiles": sorted(ids.mobiles),
            "raw": sorted(ids.raw),
            "links": [[k, v] for k, v in ids.links.items()],
        }
    )
    nonce, data = crypto.encrypt_record(_key(), plain, _aad(request_id))
    return {"nonce": base64.b64encode(nonce).decode(), "data": base64.b64encode(data).decode()}


def unseal(request_id: int, sealed: dict[str, str]) -> residue.Identities:
    plain = crypto.decrypt_record(
        _key(), base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["data"]),
        _aad(request_id),
    )  # fmt: skip
    d = orjson.loads(plain)
    return residue.Identities(
        d["login"], frozenset(d["emails"]), frozenset(d["mobiles"]), frozenset(d["raw"]),
        {k: v for k, v in d["links"]},
    )  # fmt: skip


# -- retry --------------------------------------------------------------------------------------


def _kept(req: LifecycleRequest, dm: DataMap) -> Callable[[Any], bool]:
    if req.kind == RequestKind.ERASURE.value:
        return residue.kept_in_erasure(dm)
    return residue.kept_in_withdrawal


def check_reason(reason: str | None) -> str:
    """An acknowledgement's reason, normalised; one line (UserError) when it will not do."""
    text = " ".join((reason or "").split())
    if len(text) < MIN_REASON_CHARS:
        raise UserError(
            "--acknowledge needs --reason TEXT saying why the finding is accepted "
            "(e.g. '관리자 메모, 다른 회원의 기록: 보존')"
        )
    if len(text) > 200:
        raise UserError("--reason must be at most 200 characters")
    ledger.refuse_personal_shapes(reason=text)
    return text


def retry_parked(
    s: Session,
    req: LifecycleRequest,
    dm: DataMap,
    *,
    operator: str,
    acknowledge: bool = False,
    reason: str | None = None,
) -> tuple[str | None, str | None]:
    """`lifecycle requests retry` on ``req`` (locked, in ``s``): ``(state it re-opens at,
    None)`` when it may go on, ``(None, why)`` when it stays parked, ``(None, None)`` when it
    is not parked for its residue (an ordinary failed request)."""
    if not verdicts.parked(req):
        if acknowledge:
            raise UserError(f"request {req.id} is not waiting on a residue finding")
        return None, None
    why = check_reason(reason) if acknowledge else None
    v = verdicts.verdict(req)
    sealed = verdicts.sealed_of(v)
    if sealed is not None:
        ids = unseal(req.id, sealed)
        result = residue.scan(
            s.connection(), dm, ids, kept=_kept(req, dm),
            budget=residue.Budget.from_settings(get_settings()),
        )  # fmt: skip
        verdicts.record(req, result.as_dict(), sealed)
        del ids
        if verdicts.open_reason(req) is None:
            return verdicts.reopen_parked(req), None
    elif not acknowledge:
        raise UserError(
            f"request {req.id}: its residue cannot be searched again (checked before "
            "re-checks were kept); accept it with --acknowledge --reason TEXT"
        )
    line = verdicts.open_reason(req)
    if acknowledge:
        assert why is not None
        verdicts.acknowledge(req, operator, why)
        return verdicts.reopen_parked(req), None
    req.error = (line or "")[:500]
    return None, line
