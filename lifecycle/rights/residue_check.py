"""The residue check inside a request's destroying step (withdrawal) or erasing step (erasure).

The step captures the identities before it destroys them (:mod:`lifecycle.engine.residue`),
then calls :func:`check` after: the search runs in the step's transaction and its verdict
(names and counts) is recorded on the request in the same commit as the destruction. The
identities stay in the step's local variables; the run's result (what Flower shows) gets the
verdict's counts only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from lifecycle.core.settings import get_settings
from lifecycle.datamap.model import DataMap
from lifecycle.engine import residue
from lifecycle.requests import residue as verdicts
from lifecycle.rights.pipeline import Job

log = logging.getLogger(__name__)


def check(job: Job, dm: DataMap, ids: residue.Identities, kept: Callable[[Any], bool]) -> None:
    result = residue.scan(
        job.s.connection(), dm, ids, kept=kept, budget=residue.Budget.from_settings(get_settings())
    )
    if result.skipped:
        # Nothing to look for: the member's row held no login id, email or mobile number.
        verdicts.record(job.req, {"found": {}, "incomplete": None, "nothing_to_search": True})
        job.run.out["residue"] = {"found": 0, "nothing_to_search": True}
        return
    verdicts.record(job.req, result.as_dict())
    show(job)
    line = verdicts.open_reason(job.req)
    if line is not None:
        log.warning("%s request %s: %s", job.req.kind, job.request_id, line)
    else:
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
        "searched": int(v.get("searched", 0)),
        "seconds": v.get("seconds", 0),
    }
