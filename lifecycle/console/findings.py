"""The console's 데이터 맵 점검 page: the stored discovery and linkage findings
(lifecycle/datamap/findings.py) and the requests parked for residue, each with when it was
found; the officer acknowledges an uncovered discovery finding with a reason, recorded with
their name on the finding and in the access log (as `requests retry --acknowledge` records a
residue's). Names and counts only: no value, no member."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from lifecycle.console.guard import logged, login_required, need, who
from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.datamap import findings
from lifecycle.datamap.discover import HANDLED_ELSEWHERE, IGNORED, KEY, MAPPED, NON_PERSONAL
from lifecycle.ops.status import last_job_runs
from lifecycle.requests import residue
from models.findings import FindingKind
from models.requests import LifecycleRequest, RequestState

bp = Blueprint("findings", __name__)
PAGE = 200

COVERAGE_LABELS = {
    MAPPED: "데이터 맵에 있음",
    KEY: "키·회원 연결 열",
    HANDLED_ELSEWHERE: "다른 곳에서 관리",
    IGNORED: "제외 테이블 (포함 안 됨)",
    NON_PERSONAL: "개인정보 아님으로 표시 (포함 안 됨)",
    "not covered": "데이터 맵에 없음",
    findings.WRONG_LINK: "다른 회원의 정보가 연결됨",
}
JOBS = (findings.JOB_SCAN, findings.JOB_DISCOVER, findings.JOB_LINKAGE)


def _row(f: Any) -> dict[str, Any]:
    return {
        "id": f.id, "table": f.table_name, "column": f.column_name,
        "patterns": ", ".join(f"{k} {n}" for k, n in sorted(f.patterns.items())),
        "rows": f.rows, "coverage": COVERAGE_LABELS.get(f.coverage, f.coverage),
        "covered": f.covered, "found_at": f.found_at, "run_id": f.run_id,
        "acknowledged_at": f.acknowledged_at, "acknowledged_by": f.acknowledged_by,
        "ack_reason": f.ack_reason,
    }  # fmt: skip


@bp.get("/findings", endpoint="page")
@login_required
def page() -> Any:
    need("findings.view")
    with db.session("primary") as p:
        parked = list(
            p.scalars(
                select(LifecycleRequest)
                .where(LifecycleRequest.state == RequestState.NEEDS_ATTENTION.value)
                .order_by(LifecycleRequest.id.desc())
                .limit(PAGE)
            )
        )
        rows = [
            {
                "id": r.id,
                "kind": r.kind,
                "since": r.updated_at,
                "reason": residue.open_reason(r) or r.error or "",
            }
            for r in parked
        ]
        discovery = [_row(f) for f in findings.open_findings(p, FindingKind.DISCOVERY.value)]
        links = [_row(f) for f in findings.open_findings(p, FindingKind.LINKAGE.value)]
        runs = [
            {"job": r.job, "id": r.id, "outcome": r.outcome, "at": r.finished_at or r.started_at}
            for r in last_job_runs(p, JOBS)
        ]
    return render_template("findings.html", rows=rows, discovery=discovery, links=links, runs=runs)


@bp.post("/findings/<int:finding_id>/acknowledge", endpoint="acknowledge")
@login_required
def acknowledge(finding_id: int) -> Any:
    need("findings.acknowledge")
    reason = request.form.get("reason", "")
    try:
        with db.session("primary") as p:
            f = findings.acknowledge(p, finding_id, reason, who().display_name)
            where = {"table": f.table_name, "column": f.column_name}
            why = f.ack_reason
            # The entry goes in before the acknowledgement commits: none without its record.
            logged("change", "datamap finding acknowledge",
                   details={"finding": finding_id, **where, "acknowledged": why})  # fmt: skip
    except UserError as exc:
        flash(str(exc), "error")
        return redirect(url_for("findings.page"))
    flash(f"점검 결과 {finding_id}번 ({where['table']}.{where['column']})을 확인했습니다.", "ok")
    return redirect(url_for("findings.page"))
