"""The console's Flask application: `create_app()` for `lifecycle console serve` (Waitress).

Security the pages rely on, in one place:
- a session is a signed cookie (Secure, HttpOnly, SameSite=Strict) holding the account id and
  its ``session_epoch`` only; every request re-reads the account, so a password or TOTP change
  or a deactivation ends its sessions at once; 30 minutes idle end one too;
- every POST carries a CSRF token (Flask-WTF); a missing or wrong one is refused with 400;
- login: password and TOTP code together, one answer for any failure, at most 5 tries a minute
  and 20 an hour per client address (Flask-Limiter), then 429;
- roles are checked here for every action (``guard.need``), whatever the page shows;
- no personal data in a URL: member ids and requesters' details travel in POST bodies only,
  pages are addressed by request, hold and incident ids;
- every page that shows personal data writes an access-log entry first, naming the logged-in
  person and the client address; if the entry cannot be written the page is not shown.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from lifecycle.console import (
    accounts,
    findings,
    guard,
    handover,
    holds_actions,
    incident_actions,
    oidc,
)
from lifecycle.console.roles import ROLE_LABELS, may
from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.current import current_datamap
from lifecycle.requests import deadlines, holds, residue
from lifecycle.requests.states import KINDS, TERMINAL
from lifecycle.rights.access import submit_access
from lifecycle.rights.answers import postpone_notice
from lifecycle.rights.consent import submit_consent_withdrawal
from lifecycle.rights.erase import submit_erasure
from lifecycle.rights.intake import (
    make_requester,
    parse_member_id,
    resolve_member,
    subject_table,
    typed_identities,
)
from lifecycle.rights.staff import answer_request, refuse_request
from lifecycle.rights.suspension import submit_lift, submit_suspension
from lifecycle.vault import accesslog, accessreview, checkpoints, keystore, register
from lifecycle.vault.former import find as find_former
from models.archive import LedgerEntry
from models.base import utcnow
from models.guards import AccessLogEntry, LegalHold
from models.incidents import Incident
from models.requests import LifecycleRequest, RequestState

log = logging.getLogger(__name__)

IDLE = timedelta(minutes=30)
PAGE = 200

KIND_LABELS = {
    "withdrawal": "회원탈퇴",
    "correction": "정정",
    "access": "열람",
    "erasure": "삭제",
    "suspension": "처리정지",
    "suspension_lift": "처리정지 해제",
    "consent_withdrawal": "동의 철회",
}
STATE_LABELS = {
    "received": "접수",
    "dispatched": "처리 대기",
    "restricted": "이용 중지",
    "archived": "분리보관",
    "destroyed": "파기",
    "corrected": "정정 완료",
    "packaged": "열람 자료 작성",
    "erased": "삭제 완료",
    "consent_withdrawn": "동의 철회 완료",
    "notifying": "제3자 통지 중",
    "completed": "완료",
    "failed": "거절·실패",
    "needs_attention": "확인 필요",
}
VIA_LABELS = {"phone": "전화", "letter": "우편", "email": "전자우편", "visit": "방문"}
VERIFIED_LABELS = {
    "login": "웹사이트 로그인",
    "document": "신분증·위임장 등 서류 확인",
    "callback": "등록된 연락처로 회신 확인",
}
REQUESTER_LABELS = {"member": "정보주체 본인", "guardian": "법정대리인", "delegate": "대리인"}
# What staff may enter by hand: the rights a person asks for by phone, letter or email.
# Withdrawal (회원탈퇴) and correction go through the website or their own commands.
ENTERABLE = ("access", "erasure", "suspension", "suspension_lift", "consent_withdrawal")


def create_app() -> Flask:
    s = get_settings()
    oidc.check_settings(s)
    app = Flask(__name__, template_folder=str(Path(__file__).with_name("templates")))
    app.config.update(
        SECRET_KEY=s.console_secret_value(),
        SESSION_COOKIE_NAME="lifecycle_console",
        SESSION_COOKIE_SECURE=s.console_cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=IDLE,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    if s.console_trusted_proxies:
        # Only the operator's own proxies: their X-Forwarded-For names the client (the access
        # log's 접속지, the login rate limit's key), X-Forwarded-Proto the scheme. Without the
        # setting a client could write any address it likes into these headers.
        hops = s.console_trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    CSRFProtect(app)
    app.register_blueprint(findings.bp)
    app.register_blueprint(handover.bp)
    limiter = Limiter(
        get_remote_address, app=app, storage_uri=s.console_ratelimit_storage, default_limits=[]
    )
    app.jinja_env.globals.update(
        may=may,
        KIND_LABELS=KIND_LABELS,
        STATE_LABELS=STATE_LABELS,
        VIA_LABELS=VIA_LABELS,
        VERIFIED_LABELS=VERIFIED_LABELS,
        REQUESTER_LABELS=REQUESTER_LABELS,
        ROLE_LABELS=ROLE_LABELS,
        local=guard.local,
        organisation=s.organisation_name or "",
        oidc_enabled=oidc.enabled(s),
    )
    app.register_blueprint(holds_actions.blueprint)
    app.register_blueprint(incident_actions.blueprint)
    if oidc.enabled(s):
        app.register_blueprint(oidc.blueprint)

    @app.before_request
    def load_account() -> None:
        g.who = None
        aid, epoch, seen = session.get("aid"), session.get("epoch"), session.get("seen")
        if seen is None:
            return
        now = utcnow()
        if now - datetime.fromisoformat(str(seen)) > IDLE:
            session.clear()
            return
        if session.get("oidc") is not None:
            g.who = oidc.current(session)
        elif aid is not None and epoch is not None:
            with db.session("primary") as p:
                g.who = accounts.current(p, int(aid), int(epoch))
        if g.who is None:
            session.clear()
            return
        session["seen"] = now.isoformat()

    @app.after_request
    def headers(resp: Response) -> Response:
        # Pages may hold personal data: never cached, never framed, no referrer to elsewhere.
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.is_secure:
            resp.headers["Strict-Transport-Security"] = "max-age=31536000"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'"
        )
        return resp

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError) -> tuple[str, int]:
        return render_template(
            "error.html", message="보안 토큰이 없거나 맞지 않습니다 (CSRF)."
        ), 400

    @app.errorhandler(403)
    def forbidden(e: Any) -> tuple[str, int]:
        return render_template("error.html", message="이 작업을 할 권한이 없습니다."), 403

    @app.errorhandler(429)
    def too_many(e: Any) -> tuple[str, int]:
        msg = "로그인 시도가 너무 많습니다. 잠시 후 다시 시도하십시오."
        return render_template("error.html", message=msg), 429

    @app.errorhandler(500)
    def failed(e: Any) -> tuple[str, int]:
        return render_template("error.html", message="처리 중 오류가 났습니다."), 500

    @app.errorhandler(SQLAlchemyError)
    def db_error(e: SQLAlchemyError) -> tuple[str, int]:
        log.error("console: database error %s", type(e).__name__)
        msg = f"데이터베이스에 연결할 수 없습니다 ({type(e).__name__})."
        return render_template("error.html", message=msg), 503

    # -- login ----------------------------------------------------------------------------------

    @app.route("/login", methods=["GET", "POST"])
    @limiter.limit("5 per minute;20 per hour", methods=["POST"])
    def login() -> Any:
        if request.method == "GET":
            return render_template("login.html")
        form = request.form
        with db.session("primary") as p:
            who = accounts.authenticate(
                p, form.get("username", ""), form.get("password", ""), form.get("code", "")
            )
        if who is None:
            log.warning("console: failed login from %s", guard.client_ip())
            flash("아이디, 비밀번호 또는 인증 코드가 맞지 않습니다.", "error")
            return render_template("login.html"), 401
        session.clear()
        session.permanent = True
        session.update(aid=who.id, epoch=who.epoch, seen=utcnow().isoformat())
        session["nonce"] = secrets.token_hex(8)  # a new cookie value at every login
        g.who = who
        guard.logged("read", "console login")
        return redirect(url_for("requests_list"))

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        return "ok", 200

    @app.get("/")
    @guard.login_required
    def home() -> Any:
        return redirect(url_for("requests_list"))

    # -- requests -------------------------------------------------------------------------------

    @app.get("/requests")
    @guard.login_required
    def requests_list() -> Any:
        guard.need("requests.view")
        now = utcnow()
        with db.session("primary") as p:
            open_ = deadlines.open_requests(p)
            held = deadlines.held_now(p, now)
            recent = list(
                p.scalars(
                    select(LifecycleRequest)
                    .where(LifecycleRequest.state.in_(sorted(TERMINAL)))
                    .order_by(LifecycleRequest.id.desc())
                    .limit(50)
                )
            )
            ids = [r.id for r in open_]
            via: dict[int, str | None] = {
                int(i): v
                for i, v in p.execute(
                    select(LifecycleRequest.id, LifecycleRequest.received_via).where(
                        LifecycleRequest.id.in_(ids)
                    )
                )
            }
            closed = [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "state": r.state,
                    "created_at": r.created_at,
                    "completed_at": r.completed_at or r.updated_at,
                    "answered": r.answered_at is not None,
                    "via": r.received_via,
                }
                for r in recent
            ]
        rows = [
            {
                "id": r.id,
                "kind": r.kind,
                "state": r.state,
                "created_at": r.created_at,
                "due_at": r.due_at,
                "extended": r.extended,
                "held": r.id in held,
                "overdue": r.overdue(now) and r.id not in held,
                "soon": not r.overdue(now) and r.due_at - now <= timedelta(days=1),
                "via": via.get(r.id),
            }
            for r in open_
        ]
        return render_template("requests.html", rows=rows, closed=closed)

    @app.route("/requests/new", methods=["GET", "POST"])
    @guard.login_required
    def request_new() -> Any:
        guard.need("requests.enter")
        if request.method == "GET":
            return render_template("request_new.html", kinds=ENTERABLE, form={})
        f = request.form
        try:
            kind = f.get("kind", "")
            if kind not in ENTERABLE:
                raise UserError("요청 종류를 고르십시오.")
            who = make_requester(
                f.get("requester", "member"),
                f.get("requester_name") or None,
                f.get("requester_contact") or None,
                f.get("verified_by") or None,
                f.get("received_via") or None,
            )
            who = dataclasses.replace(who, actor=guard.who().operator)
            # A former member (열람, withdrawing a retention consent) may be named by an
            # identity they declared; a right they no longer have refuses them when submitted.
            member_id = _member_id(f.get("member_id", ""), former=True)
            rid = _submit(kind, member_id, who, f)
        except UserError as exc:
            flash(str(exc), "error")
            # The form comes back filled in; the page is not cached (no-store).
            return render_template("request_new.html", kinds=ENTERABLE, form=f), 422
        guard.logged("change", "console request enter", member_id=member_id, request_id=rid,
                details={"kind": kind, "received_via": who.received_via})  # fmt: skip
        flash(f"{KIND_LABELS[kind]} 요청 {rid}번을 접수했습니다.", "ok")
        return redirect(url_for("request_view", request_id=rid))

    @app.get("/requests/<int:request_id>")
    @guard.login_required
    def request_view(request_id: int) -> Any:
        guard.need("requests.view")
        personal = may(guard.who().role, "requests.personal")
        with db.session("primary") as p:
            req = p.get(LifecycleRequest, request_id)
            if req is None:
                abort(404)
            due = deadlines.due_of(req)
            info = {
                "id": req.id,
                "kind": req.kind,
                "state": req.state,
                "created_at": req.created_at,
                "due_at": due,
                "overdue": req.state not in TERMINAL and due <= utcnow(),
                "extension_reason": req.extension_reason,
                "error": req.error,
                "steps_done": req.steps_done,
                "answered_at": req.answered_at,
                "received_via": req.received_via,
                "verified_by": req.verified_by,
                "requester_kind": req.requester_kind,
                "actor": req.actor,
                "residue": residue.open_reason(req),
                "extendable": bool(KINDS.get(req.kind) and KINDS[req.kind].extendable),
                "terminal": req.state in TERMINAL,
                "refusable": req.state
                in (RequestState.RECEIVED.value, RequestState.DISPATCHED.value),
            }
            member_id = req.member_id
            if personal:
                info.update(
                    member_id=req.member_id,
                    requester_name=req.requester_name,
                    requester_contact=req.requester_contact,
                )
        if personal:
            # Shown only after the read is on record.
            guard.logged("read", "console request view", member_id=member_id, request_id=request_id)
        return render_template("request_view.html", r=info, personal=personal)

    @app.post("/requests/<int:request_id>/extend")
    @guard.login_required
    def request_extend(request_id: int) -> Any:
        guard.need("requests.extend")
        try:
            days = int(request.form.get("days", "") or "0")
            with db.session("primary") as p:
                req = _locked(p, request_id)
                member_id = req.member_id
                due = deadlines.extend(p, req, days, request.form.get("reason", ""))
        except (UserError, ValueError) as exc:
            flash(str(exc) if isinstance(exc, UserError) else "연기 일수는 숫자입니다.", "error")
            return redirect(url_for("request_view", request_id=request_id))
        postpone_notice(request_id)
        guard.logged("change", "requests extend", member_id=member_id, request_id=request_id,
                details={"days": days})  # fmt: skip
        flash(f"요청 {request_id}번을 연기했습니다. 새 기한: {guard.local(due)}", "ok")
        return redirect(url_for("request_view", request_id=request_id))

    @app.post("/requests/<int:request_id>/answer")
    @guard.login_required
    def request_answer(request_id: int) -> Any:
        guard.need("requests.answer")
        try:
            nid = answer_request(request_id)
        except UserError as exc:
            flash(str(exc), "error")
            return redirect(url_for("request_view", request_id=request_id))
        guard.logged("change", "requests answer", request_id=request_id, details={"notice": nid})
        flash(f"요청 {request_id}번의 답변을 보냈습니다.", "ok")
        return redirect(url_for("request_view", request_id=request_id))

    @app.post("/requests/<int:request_id>/refuse")
    @guard.login_required
    def request_refuse(request_id: int) -> Any:
        guard.need("requests.refuse")
        try:
            refuse_request(request_id, request.form.get("reason", ""))
        except UserError as exc:
            flash(str(exc), "error")
            return redirect(url_for("request_view", request_id=request_id))
        guard.logged("change", "requests refuse", request_id=request_id)
        flash(f"요청 {request_id}번을 거절하고 답변을 보냈습니다.", "ok")
        return redirect(url_for("request_view", request_id=request_id))

    # -- holds, incidents -------------------------------------------------------------------------

    @app.get("/holds")
    @guard.login_required
    def holds_list() -> Any:
        guard.need("holds.view")
        today = utcnow().astimezone(guard.tz()).date()
        with db.session("primary") as p:
            rows = [
                {
                    "id": h.id,
                    "scope": h.scope,
                    "member_id": h.member_id,
                    "request_id": h.request_id,
                    "category": h.category,
                    "until": h.until,
                    "reason": h.reason,
                    "created_by": h.created_by,
                    "active": h.released_at is None and h.until >= today,
                    "released_at": h.released_at,
                }
                for h in p.scalars(select(LegalHold).order_by(LegalHold.id.desc()).limit(PAGE))
            ]
        members = sorted({int(str(r["member_id"])) for r in rows if r["member_id"] is not None})
        # The list names members: a read of personal data, logged like `hold list`'s.
        for m in members:
            guard.logged("read", "console hold list", member_id=m)
        return render_template("holds.html", rows=rows, active=holds.active)

    @app.get("/incidents")
    @guard.login_required
    def incidents_list() -> Any:
        guard.need("incidents.view")
        from lifecycle.incidents import breach

        now = utcnow()
        with db.session("primary") as p:
            rows = [
                breach.summary(p, inc, now)
                for inc in p.scalars(select(Incident).order_by(Incident.id.desc()).limit(PAGE))
            ]
        return render_template("incidents.html", rows=rows, now=now)

    # -- ledger, access log, findings --------------------------------------------------------------

    @app.route("/ledger", methods=["GET", "POST"])
    @guard.login_required
    def ledger_list() -> Any:
        """The register (파기 관리대장). GET filters by dates and kinds in the query; the member
        filter comes in a POST body only, so no member id ever reaches a URL."""
        guard.need("ledger.view")
        src = request.form if request.method == "POST" else request.args
        start, end = _period(src)
        kinds = tuple(k for k in register.KINDS if k in src.getlist("kind")) or tuple(
            register.KINDS
        )
        raw_member = (src.get("member") or "").strip() if request.method == "POST" else ""
        member_id = None
        if raw_member:
            guard.need("ledger.member")
            try:
                member_id = _member_id(raw_member, former=True)
            except UserError as exc:
                flash(str(exc), "error")
                return _ledger_page(start, end, kinds, []), 422
        with db.session("archive") as a:
            ref = keystore.subject_ref(a, member_id) if member_id is not None else None
            flt = register.Filter(kinds=kinds, subject_ref=ref, since=start, until=end)
            rows = list(register.rows(a, flt))
        if member_id is not None:
            # Whose destructions were looked up is a read of that member's records, on record
            # before the rows are shown (as `ledger register --member` logs it).
            guard.logged("read", "console ledger register", member_id=member_id,
                    details={"entries": len(rows)})  # fmt: skip
        return _ledger_page(start, end, kinds, rows[::-1][:PAGE], member=raw_member)

    def _ledger_page(
        start: datetime, end: datetime, kinds: tuple[str, ...], rows: list[Any], member: str = ""
    ) -> str:
        with db.session("archive") as a:
            head = a.scalar(select(func.max(LedgerEntry.seq))) or 0
            signed = register.signoffs(a)
        return render_template(
            "ledger.html", rows=rows, start=start, end=end - timedelta(days=1), kinds=kinds,
            member=member, head=head, last_signoff=signed[-1] if signed else None,
            REGISTER_KINDS=register.KIND_LABELS, officers=get_settings().privacy_officers,
        )  # fmt: skip

    @app.post("/ledger/signoff")
    @guard.login_required
    def ledger_signoff() -> Any:
        """The officer confirms the register up to an entry, as `lifecycle ledger signoff`:
        the chain is verified first, the sign-off names the logged-in officer."""
        guard.need("ledger.signoff")
        s = get_settings()
        try:
            name = register.check_officer(guard.who().display_name, s.privacy_officers)
            with db.session("archive") as a:
                last = register.through_seq(a, request.form.get("through", ""), s.timezone)
            result = checkpoints.verify()
            if not result.ok:
                raise UserError(result.message() + "; nothing signed off")
            with db.session("archive") as a:
                signed, new = register.sign_off(
                    a, through=last, officer=name, officers=s.privacy_officers,
                    operator=guard.who().operator,
                )  # fmt: skip
        except UserError as exc:
            flash(str(exc), "error")
            return redirect(url_for("ledger_list"))
        if new:
            guard.logged("change", "ledger signoff", details={"entry": signed.seq, "through": last})
            flash(f"{signed.from_seq}-{signed.through_seq}번 항목의 파기 결과를 확인했습니다 "
                  f"(대장 {signed.seq}번).", "ok")  # fmt: skip
        else:
            flash(f"{signed.from_seq}-{signed.through_seq}번 항목은 이미 확인되었습니다.", "ok")
        return redirect(url_for("ledger_list"))

    @app.post("/ledger/paper")
    @guard.login_required
    def ledger_paper() -> Any:
        """A paper destruction, as `lifecycle ledger paper`."""
        guard.need("ledger.paper")
        f = request.form
        tz = guard.tz()
        try:
            raw_at = (f.get("at") or "").strip()
            try:
                parsed = datetime.fromisoformat(raw_at) if raw_at else datetime.now(tz)
            except ValueError:
                raise UserError("파기 일시는 YYYY-MM-DDTHH:MM 형식입니다.") from None
            when = parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
            raw_count = (f.get("count") or "0").strip()
            if not raw_count.isdigit():
                raise UserError("수량은 0 이상의 정수입니다.")
            with db.session("archive") as a:
                e = register.record_paper(
                    a, what=f.get("what", ""), method=f.get("method", ""),
                    handler=f.get("handler", ""), witness=f.get("witness", ""),
                    destroyed_at=as_utc(when), recorded_by=guard.who().operator,
                    count=int(raw_count), reason=f.get("reason") or "보유기간 경과",
                )  # fmt: skip
                seq = e.seq
        except UserError as exc:
            flash(str(exc), "error")
            return redirect(url_for("ledger_list"))
        guard.logged("destroy", "ledger paper", details={"entry": seq})
        flash(f"종이 문서 파기를 대장 {seq}번에 기록했습니다.", "ok")
        return redirect(url_for("ledger_list"))

    @app.get("/accesslog")
    @guard.login_required
    def accesslog_list() -> Any:
        guard.need("accesslog.view")
        start, end = _period()
        with db.session("archive") as a:
            rows = list(
                a.scalars(
                    select(AccessLogEntry)
                    .where(AccessLogEntry.occurred_at >= start, AccessLogEntry.occurred_at < end)
                    .order_by(AccessLogEntry.seq.desc())
                    .limit(PAGE)
                )
            )
            a.expunge_all()
        return render_template(
            "accesslog.html", rows=rows, start=start, end=end - timedelta(days=1)
        )

    @app.route("/accesslog/review", methods=["GET", "POST"])
    @guard.login_required
    def accesslog_review() -> Any:
        """The monthly review (안전성 확보조치 기준 제8조②), the function `lifecycle accesslog
        review` runs, logged as the command logs it."""
        guard.need("accesslog.review")
        t = accessreview.Thresholds.from_settings(get_settings())
        if request.method == "GET":
            last = utcnow().astimezone(guard.tz()).replace(day=1) - timedelta(days=1)
            return render_template("review.html", month=f"{last:%Y-%m}", r=None)
        month = (request.form.get("month") or "").strip()
        try:
            start, end = accessreview.month_bounds(month, t.tz)
        except UserError as exc:
            flash(str(exc), "error")
            return render_template("review.html", month=month, r=None), 422
        with db.session("archive") as a:
            r = accessreview.review(accesslog.iter_month(a, start, end), month, t)
            accesslog.record(a, operator=guard.who().operator, kind="read",
                             action="accesslog review", details={
                                 "month": r.month, "entries": r.entries,
                                 "flags": len(r.flags), "ip": guard.client_ip()})  # fmt: skip
        return render_template("review.html", month=month, r=r)

    return app


def _period(src: Any = None) -> tuple[datetime, datetime]:
    """The ``from``/``to`` dates of a list (local days, ``to`` included), the last 31 days by
    default; dates only, so the URL carries nothing personal. ``src``: the query (default) or
    a POST form."""
    args = request.args if src is None else src
    tz = guard.tz()
    today = utcnow().astimezone(tz).date()
    try:
        start_d = date.fromisoformat(args.get("from") or "") if args.get(
            "from") else today - timedelta(days=31)  # fmt: skip
        end_d = date.fromisoformat(args["to"]) if args.get("to") else today
    except ValueError:
        abort(400)
    start = datetime.combine(start_d, datetime.min.time(), tz)
    end = datetime.combine(end_d + timedelta(days=1), datetime.min.time(), tz)
    return start, end


def _member_id(raw: str, *, former: bool = False) -> int:
    """The member id for what staff typed, as every command's MEMBER_ID: the numeric key or an
    identity the map declares (login id, email, mobile); ``former``: a former member whose
    records are kept too (lifecycle/vault/former.py)."""
    subject = current_datamap().subject
    text = raw.strip()
    if not subject.login_column and (text.isdigit() or not typed_identities(subject, text)):
        return parse_member_id(raw)
    with db.engine("primary").connect() as conn:
        return resolve_member(
            subject, subject_table(subject), conn, raw, former=find_former if former else None
        )


def _locked(p: Any, request_id: int) -> LifecycleRequest:
    from lifecycle.requests.outbox import load_for_update

    req = load_for_update(p, request_id)
    if req is None:
        raise UserError(f"request {request_id} does not exist")
    return req


def _submit(kind: str, member_id: int, who: Any, f: Any) -> int:
    """The request through the CLI's own submit functions (the relay dispatches it)."""
    if kind == "access":
        folder = get_settings().var_dir / "access"
        folder.mkdir(parents=True, exist_ok=True)
        # The package's file name is random: the member id stays out of file names too.
        out = folder / f"access-{secrets.token_hex(8)}.zip"
        return submit_access(member_id, str(out), None, who, dispatch=False)
    if kind == "erasure":
        return submit_erasure(member_id, f.get("fields", ""), who, dispatch=False)
    if kind == "suspension":
        return submit_suspension(member_id, f.get("reason", ""), who, dispatch=False)
    if kind == "suspension_lift":
        return submit_lift(member_id, who, dispatch=False)
    return submit_consent_withdrawal(member_id, f.get("purpose", ""), who, dispatch=False)
