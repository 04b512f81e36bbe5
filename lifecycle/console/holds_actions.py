"""Placing and releasing a legal hold (보존 명령) from the console: the officer's decision.

The same domain functions as `lifecycle hold add|release` (lifecycle.rights.hold_actions: the
same transactions, ledger and access-log entries), naming the logged-in person; the access log
also gets the client's address. The member id travels in the POST body only.

A release does not send a held withdrawal on by itself as the command does (the console never
talks to the job runtime): the relay re-sends stalled requests, so it resumes on its own.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, flash, redirect, request, url_for

from lifecycle.console.guard import client_ip, login_required, need, who
from lifecycle.core.errors import UserError
from lifecycle.rights import hold_actions

blueprint = Blueprint("holdactions", __name__)


def _positive(raw: str, what: str) -> int | None:
    text = raw.strip()
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0 or len(text) > 18:
        raise UserError(f"{what}은(는) 양의 정수입니다.")
    return int(text)


def _until(raw: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise UserError("기한은 YYYY-MM-DD 형식의 날짜입니다.") from None


@blueprint.post("/holds/add")
@login_required
def hold_add() -> Any:
    need("holds.change")
    f = request.form
    try:
        target = f.get("target", "")
        value = f.get("value", "")
        mid = _positive(value, "회원 번호") if target == "member" else None
        rid = _positive(value, "요청 번호") if target == "request" else None
        category = value.strip() or None if target == "category" else None
        if target not in ("member", "request", "category"):
            raise UserError("보존 대상의 종류(회원, 요청, 항목)를 고르십시오.")
        day = _until(f.get("until", ""))
        placed = hold_actions.add(
            who().operator, member_id=mid, request_id=rid, category=category,
            reason=f.get("reason", ""), until=day, extra={"ip": client_ip()},
        )  # fmt: skip
        hid = placed.hold_id
    except UserError as exc:
        flash(str(exc), "error")
        return redirect(url_for("holds_list"))
    flash(f"보존 명령 {hid}번을 등록했습니다 ({day.isoformat()}까지).", "ok")
    return redirect(url_for("holds_list"))


@blueprint.post("/holds/<int:hold_id>/release")
@login_required
def hold_release(hold_id: int) -> Any:
    need("holds.change")
    operator = who().operator
    try:
        parked = hold_actions.release(
            operator, hold_id, extra={"ip": client_ip()}
        ).parked_withdrawals
    except UserError as exc:
        flash(str(exc), "error")
        return redirect(url_for("holds_list"))
    more = f" 멈춰 있던 탈퇴 요청 {len(parked)}건은 릴레이가 다시 보냅니다." if parked else ""
    flash(f"보존 명령 {hold_id}번을 해제했습니다.{more}", "ok")
    return redirect(url_for("holds_list"))
