"""The console's handover of an access package (열람) entered by phone, letter, email or visit
(lifecycle/rights/handover.py): staff download the encrypted ZIP from the request's page and
have its password shown once. Both are POSTs addressed by the request id only; the download is
an ``export`` entry of the access log with its counts, the showing a ``read`` entry, each
written before the request's record of it commits."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, send_file, url_for

from lifecycle.console.guard import logged, login_required, need, who
from lifecycle.console.roles import may
from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.rights import handover
from models.requests import LifecycleRequest

bp = Blueprint("handover", __name__)


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    def handover_of(request_id: int) -> dict[str, Any] | None:
        """The request page's handover box (access requests, staff only)."""
        if not may(who().role, "requests.handover"):
            return None
        with db.session("primary") as p:
            req = p.get(LifecycleRequest, request_id)
            return handover.status(req) if req is not None else None

    return {"handover_of": handover_of, "HANDOVER_HOW": handover.HOW}


@bp.post("/requests/<int:request_id>/package", endpoint="download")
@login_required
def download(request_id: int) -> Any:
    need("requests.handover")
    how = request.form.get("how", "")
    try:
        with db.session("primary") as p:
            pkg = handover.hand_over(p, request_id, how, who().operator)
            logged("export", "console access package", member_id=pkg.member_id,
                   request_id=request_id, details={**pkg.counts, "how": how})  # fmt: skip
    except UserError as exc:
        flash(str(exc), "error")
        return redirect(url_for("request_view", request_id=request_id))
    # The file name says which request, nothing about whose.
    return send_file(
        pkg.path, mimetype="application/zip", as_attachment=True,
        download_name=f"access-request-{request_id}.zip", max_age=0,
    )  # fmt: skip


@bp.post("/requests/<int:request_id>/package/password", endpoint="password")
@login_required
def password(request_id: int) -> Any:
    need("requests.handover")
    try:
        with db.session("primary") as p:
            req = p.get(LifecycleRequest, request_id)
            member_id = req.member_id if req is not None else None
            secret, path = handover.show_password(p, request_id, who().operator)
            logged("read", "console access package password", member_id=member_id,
                   request_id=request_id)  # fmt: skip
    except UserError as exc:
        flash(str(exc), "error")
        return redirect(url_for("request_view", request_id=request_id))
    handover.forget_password(path)
    resp: Response = Response(
        render_template("package_password.html", request_id=request_id, secret=secret)
    )
    return resp
