"""A breach (개인정보 유출등, 법 제34조) handled from the console, by the officer: open it
(categories, tables, time range), tell the members, draft the report to the regulator, close
it with a record; anyone with the view permission sees one incident's page, which says whether
the report is only drafted or recorded as submitted (recording the submission is
`lifecycle incident submitted`; the page shows it read-only).

The same domain functions as `lifecycle incident open|notify|report|close`
(lifecycle.incidents.actions: the same transactions, ledger and access-log entries), naming the
logged-in person; the access log also gets the client's address.

Telling the members here prepares the notice and its recipients exactly as the command does;
the console never talks to the job runtime, so the e-mails go out when the beat's re-send of
unfinished notices picks the notice up (lifecycle.notices.members.STALE_AFTER), or at once
with `lifecycle incident notify ID`, which resumes the same notice (nobody gets two copies).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from lifecycle.console.guard import client_ip, login_required, need, tz, who
from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.core.timeutil import as_utc
from lifecycle.engine.context import get_context
from lifecycle.incidents import actions, breach
from models.base import utcnow
from models.incidents import Incident

blueprint = Blueprint("incidentactions", __name__)

DESCRIPTION_TEMPLATE = "[how]\n\n[advice]\n\n[measures]\n\n[contact]\n"


def _when(raw: str, what: str) -> datetime:
    """A date-time from the form, the site's local time unless it has an offset."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise UserError(f"{what}은(는) YYYY-MM-DDTHH:MM 형식의 일시입니다.") from None
    return as_utc(value if value.tzinfo else value.replace(tzinfo=tz()))


def _split(raw: str) -> list[str]:
    return [v for v in raw.replace("\n", ",").split(",") if v.strip()]


def _new_page(form: Any, status: int = 200) -> tuple[str, int]:
    dm = get_context().datamap
    return render_template(
        "incident_new.html", form=form, categories=sorted(dm.categories_in_use()),
        tables=sorted(dm.tables), template=DESCRIPTION_TEMPLATE,
        chosen=form.getlist("categories") if hasattr(form, "getlist") else [],
    ), status  # fmt: skip


@blueprint.route("/incidents/new", methods=["GET", "POST"])
@login_required
def incident_new() -> Any:
    need("incidents.change")
    if request.method == "GET":
        return _new_page({})
    f = request.form
    operator = who().operator
    try:
        for key, label in (("from", "노출 시작"), ("to", "노출 끝"), ("detected_at", "인지 일시")):
            if not (f.get(key) or "").strip():
                raise UserError(f"{label}을(를) 입력하십시오.")
        start, end = _when(f["from"], "노출 시작"), _when(f["to"], "노출 끝")
        detected = _when(f["detected_at"], "인지 일시")
        breach.check_times(start, end, detected, utcnow())
        description = (f.get("description") or "").replace("\r\n", "\n")
        breach.parse_description(description)
        ctx = get_context()
        scope = breach.check_scope(
            ctx.datamap, f.getlist("categories"), _split(f.get("tables", ""))
        )
        opened = actions.open_incident(
            operator, scope=scope, occurred_from=start, occurred_to=end, detected_at=detected,
            description=description, external_access=bool(f.get("external_access")),
            extra={"ip": client_ip()},
        )  # fmt: skip
        iid, members = opened.incident_id, opened.members
    except UserError as exc:
        flash(str(exc), "error")
        return _new_page(f, 422)
    flash(f"사고 {iid}번을 등록했습니다: 영향받은 회원 {members}명.", "ok")
    return redirect(url_for("incidentactions.incident_view", incident_id=iid))


@blueprint.get("/incidents/<int:incident_id>")
@login_required
def incident_view(incident_id: int) -> Any:
    need("incidents.view")
    with db.session("primary") as p:
        inc = p.get(Incident, incident_id)
        if inc is None:
            abort(404)
        r = breach.summary(p, inc, utcnow(), get_context().datamap)
        r["closing_record"] = inc.closing_record
        r["no_report_reason"] = inc.no_report_reason
    return render_template("incident_view.html", r=r, recipients=breach.RECIPIENTS)


def _back(incident_id: int) -> Response:
    return redirect(url_for("incidentactions.incident_view", incident_id=incident_id))


@blueprint.post("/incidents/<int:incident_id>/notify")
@login_required
def incident_notify(incident_id: int) -> Any:
    need("incidents.change")
    operator = who().operator
    try:
        notified = actions.notify(operator, incident_id, tz(), extra={"ip": client_ip()})
        notice_id, affected = notified.notice_id, notified.affected
    except UserError as exc:
        flash(str(exc), "error")
        return _back(incident_id)
    flash(f"회원 {affected}명에게 보낼 통지 {notice_id}번을 준비했습니다.", "ok")
    return _back(incident_id)


@blueprint.post("/incidents/<int:incident_id>/report")
@login_required
def incident_report(incident_id: int) -> Any:
    """The draft report (법 제34조③, 시행령 제40조) as a download, recorded as drafted."""
    need("incidents.change")
    operator = who().operator
    try:
        text = actions.report(operator, incident_id, tz(), utcnow(), extra={"ip": client_ip()})
    except UserError as exc:
        flash(str(exc), "error")
        return _back(incident_id)
    resp = make_response(text)
    resp.headers["Content-Type"] = "text/plain; charset=utf-8"
    resp.headers["Content-Disposition"] = (
        f'attachment; filename="incident-{incident_id}-report.txt"'
    )
    return resp


@blueprint.post("/incidents/<int:incident_id>/close")
@login_required
def incident_close(incident_id: int) -> Any:
    need("incidents.change")
    operator = who().operator
    text = (request.form.get("record") or "").replace("\r\n", "\n")
    reason = (request.form.get("no_report_reason") or "").replace("\r\n", "\n").strip() or None
    try:
        if not text.strip():
            raise UserError("종결 기록(무엇을 했는지)을 입력하십시오.")
        actions.close(
            operator, incident_id, text, no_report_reason=reason, extra={"ip": client_ip()}
        )
    except UserError as exc:
        flash(str(exc), "error")
        return _back(incident_id)
    flash(f"사고 {incident_id}번을 종결했습니다.", "ok")
    return _back(incident_id)
