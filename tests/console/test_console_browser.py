"""The privacy office's console in a real browser: Playwright drives Debian's Chromium
(``executable_path``, no browser download) against a real `lifecycle console serve` process on
each primary (PostgreSQL, MariaDB).

An officer logs in with a password and a TOTP code, enters an access request received by
phone, postpones it with a reason, and (once the worker, stood in for here by the pipeline run
in this process, has carried it out) answers it. A handler cannot refuse a request (the server
answers 403, not just a hidden button), a POST without its CSRF token is refused, logins are
rate limited, and no page or form puts personal data into a URL. On the 파기 관리대장 page the
officer filters by member (logged), records a paper destruction and signs off (the entry
verifies with `ledger verify`); the monthly access-log review runs and is logged; a handler
gets 403 for both. Screenshots of the main pages
are written to docs/console/ when CONSOLE_SCREENSHOTS_DIR names that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import httpx
import pyotp
import pytest
from sqlalchemy import func, select

from tests.helpers import LifecycleEnv, free_port, seed_site, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "안전한-콘솔-비밀번호-2026"
CALLER_EMAIL = "caller.private@example.test"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


@dataclass
class Console:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path
    secrets: dict[str, str] = field(default_factory=dict)

    def code(self, username: str) -> str:
        return pyotp.TOTP(self.secrets[username]).now()


def _account(env: LifecycleEnv, tmp: Path, username: str, role: str, name: str) -> str:
    """The account via the CLI, as an operator creates it; returns its TOTP secret."""
    pw = tmp / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    r = env.run("console", "user", "add", username, "--role", role, "--name", name,
                "--password-file", str(pw))  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = env.run("console", "user", "totp", username)
    assert r.returncode == 0, r.stderr
    uri = r.stdout.strip()
    assert uri.startswith("otpauth://totp/")
    return parse_qs(urlparse(uri).query)["secret"][0]


@pytest.fixture
def console(primary_env: LifecycleEnv, tmp_path: Path) -> Iterator[Console]:
    env = primary_env
    # The officer account's display name is the registered 개인정보 보호책임자.
    env.vars["LIFECYCLE_PRIVACY_OFFICERS"] = "김책임"
    seed_site(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 5)
    secrets = {
        "kim.officer": _account(env, tmp_path, "kim.officer", "officer", "김책임"),
        "lee.handler": _account(env, tmp_path, "lee.handler", "handler", "이담당"),
    }
    port = free_port()
    log = tmp_path / "console.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli.main", "console", "serve", "--port", str(port)],
        env=env.environ(),
        cwd=env.var_dir.parent,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # localhost: Chromium keeps Secure cookies from http://localhost (a secure context).
    c = Console(f"http://localhost:{port}", proc, log, secrets)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"console exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "console answering /healthz", interval=0.2)
        yield c
    finally:
        proc.terminate()
        proc.wait(30)
        # Shown by pytest when the test failed.
        print(log.read_text(errors="replace")[-5000:])


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield b
        finally:
            b.close()


def _login(page, c: Console, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{c.base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.fill("#code", c.code(username))
    page.click("#login")
    page.wait_for_url(f"{c.base}/requests")


def _shots() -> Path | None:
    raw = os.environ.get("CONSOLE_SCREENSHOTS_DIR")
    return Path(raw) if raw else None


def test_officer_enters_a_phone_request_extends_and_answers_it(
    console: Console, browser, primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    from lifecycle.core.db import session
    from lifecycle.engine.context import get_context
    from lifecycle.rights.access import ACCESS
    from lifecycle.rights.pipeline import run
    from lifecycle.vault import keystore
    from models.guards import AccessLogEntry
    from models.requests import LifecycleRequest

    c = console
    ctx = browser.new_context(locale="ko-KR", viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    _login(page, c, "kim.officer")
    cookie = next(x for x in ctx.cookies() if x["name"] == "lifecycle_console")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "김책임" in page.inner_text("header")

    # A member phoned and asked for their data; staff called back the recorded number.
    page.goto(f"{c.base}/requests/new")
    page.select_option("#kind", "access")
    page.fill("#member_id", "2")
    page.select_option("#received_via", "phone")
    page.select_option("#verified_by", "callback")
    page.fill("#requester_contact", CALLER_EMAIL)
    page.click("button:has-text('접수')")
    page.wait_for_url(f"{c.base}/requests/*")
    assert "열람 요청" in page.inner_text(".flash")
    rid = int(page.url.rsplit("/", 1)[1])
    assert CALLER_EMAIL in page.inner_text("#request")  # the officer handles it: shown
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None
        assert (req.kind, req.member_id, req.state) == ("access", 2, "received")
        assert (req.received_via, req.verified_by) == ("phone", "callback")
        assert req.actor == "console:kim.officer"
        due_before = req.due_at

    # Postponed with a reason (시행령 제41조④): recorded and the deadline moves.
    page.fill("#days", "10")
    page.fill("#ext-reason", "보관 자료가 많아 확인에 시간이 더 필요합니다")
    page.click("#extend")
    page.wait_for_selector("#extension")
    assert "연기했습니다" in page.inner_text(".flash")
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and req.due_at is not None and due_before is not None
        assert (req.due_at - due_before).days == 10
        assert req.extension_reason == "보관 자료가 많아 확인에 시간이 더 필요합니다"

    # Not carried out yet: the answer waits, and the page says why.
    page.click("#answer")
    assert "still received" in page.inner_text(".flash")
    # The worker carries it out (its finishers, which would answer, left out).
    out = run(ACCESS, rid, ctx=get_context(), steps=10)
    assert out["state"] == "completed"
    page.reload()
    page.click("#answer")
    page.wait_for_selector(".flash.ok")
    assert "보냄" in page.inner_text("#answered")
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and req.answered_at is not None and req.answer_notice_id

    # Every view of the request's personal data is on record, naming the person and client.
    with session("archive") as a:
        ref = keystore.subject_ref(a, 2)
        views = list(
            a.scalars(
                select(AccessLogEntry).where(
                    AccessLogEntry.action == "console request view",
                    AccessLogEntry.request_id == rid,
                )
            )
        )
        actions = set(
            a.scalars(
                select(AccessLogEntry.action).where(
                    AccessLogEntry.operator == "console:kim.officer"
                )
            )
        )
    assert len(views) >= 3
    assert {v.operator for v in views} == {"console:kim.officer"}
    assert {v.subject_ref for v in views} == {ref}
    assert {v.details["ip"] for v in views} <= {"127.0.0.1", "::1"}
    assert {"console login", "console request enter", "requests extend", "requests answer"} <= (
        actions
    )

    # The other pages, as the officer sees them (with a hold on a member to list).
    r = primary_env.run("hold", "add", "--member", "4", "--reason", "2026가합1234 소송 대응",
                        "--until", "2027-06-30")  # fmt: skip
    assert r.returncode == 0, r.stderr
    shots = tmp_path / "shots"
    shots.mkdir()
    for name, path in (
        ("requests", "/requests"),
        ("request", f"/requests/{rid}"),
        ("new-request", "/requests/new"),
        ("holds", "/holds"),
        ("ledger", "/ledger"),
        ("accesslog", "/accesslog"),
        ("incidents", "/incidents"),
        ("findings", "/findings"),
    ):
        resp = page.goto(f"{c.base}{path}")
        assert resp is not None and resp.status == 200, (name, resp and resp.status)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    page.goto(f"{c.base}/requests")
    assert f">{rid}<" in page.inner_html("#open-requests") + page.inner_html("#closed-requests")
    page.goto(f"{c.base}/accesslog")
    assert "console request view" in page.inner_text("#accesslog")
    target = _shots()
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        for png in shots.iterdir():
            shutil.copy(png, target / png.name)

    # Nothing personal went into any URL the browser asked for.
    assert urls
    for u in urls:
        assert CALLER_EMAIL not in u and "caller.private" not in u, u
        assert "member" not in urlparse(u).query, u
    ctx.close()


def test_a_handler_cannot_refuse_csrf_is_required_and_logins_are_rate_limited(
    console: Console, browser
) -> None:
    from lifecycle.core.db import session
    from lifecycle.rights.common import Requester
    from lifecycle.rights.suspension import submit_suspension
    from models.requests import LifecycleRequest

    c = console
    rid = submit_suspension(3, "마케팅 이용 중지 요청", Requester(), dispatch=False)
    ctx = browser.new_context(locale="ko-KR")
    page = ctx.new_page()
    _login(page, c, "lee.handler")
    page.goto(f"{c.base}/requests/{rid}")
    assert page.locator("#answer").count() == 1
    assert page.locator("#refuse").count() == 0  # hidden from a handler ...
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    # ... and refused by the server, with a valid token, all the same.
    r = page.request.post(
        f"{c.base}/requests/{rid}/refuse", form={"csrf_token": token, "reason": "사유"}
    )
    assert r.status == 403
    assert "권한이 없습니다" in r.text()
    # The access log is for oversight: not a handler's page either.
    assert page.request.get(f"{c.base}/accesslog").status == 403
    # A POST without its CSRF token is refused, whoever sends it.
    r = page.request.post(f"{c.base}/requests/{rid}/answer", form={})
    assert r.status == 400 and "CSRF" in r.text()
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and req.state == "received" and req.error is None
        assert req.answered_at is None

    # The officer may refuse it: the reason is recorded and answered.
    octx = browser.new_context(locale="ko-KR")
    opage = octx.new_page()
    _login(opage, c, "kim.officer")
    opage.goto(f"{c.base}/requests/{rid}")
    opage.fill("#refuse-reason", "요청인의 본인 확인이 되지 않았습니다")
    opage.click("#refuse")
    opage.wait_for_selector("#error")
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and req.state == "failed"
        assert req.error == "요청인의 본인 확인이 되지 않았습니다"
        assert req.answered_at is not None

    # Logins: 5 a minute from one address; then even the right password and code are refused.
    # A browser of its own (no session), from the same address as the two logins above.
    actx = browser.new_context(locale="ko-KR")
    # One page for every attempt: closing a page while its answer still renders could hang
    # Chromium's close under load; the context is closed at the end.
    lp = actx.new_page()

    def attempt(password: str, code: str) -> int:
        lp.goto(f"{c.base}/login")
        lp.fill("#username", "lee.handler")
        lp.fill("#password", password)
        lp.fill("#code", code)
        with lp.expect_response(lambda r: r.request.method == "POST") as info:
            lp.click("#login")
        status = info.value.status
        lp.wait_for_load_state()
        return status

    # Two logins so far; three more wrong ones fill the minute's five.
    statuses = [attempt("wrong-password-123", "000000") for _ in range(4)]
    assert statuses == [401, 401, 401, 429], statuses
    assert attempt(PASSWORD, c.code("lee.handler")) == 429
    actx.close()
    octx.close()
    ctx.close()


def test_officer_filters_signs_off_the_ledger_and_reviews_the_access_log(
    console: Console, browser, primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    from lifecycle.core.db import session
    from lifecycle.vault import keystore, ledger, register
    from models.archive import LedgerEntry
    from models.base import utcnow
    from models.guards import AccessLogEntry

    c = console
    # One destruction of member 2's records and one of member 3's, as a withdrawal records it.
    with session("archive") as a:
        refs = {m: keystore.subject_ref(a, m) for m in (2, 3)}
        for m, ref in refs.items():
            ledger.append(
                a, action="destroy", categories=["profile"], tables=["members"], subjects=1,
                rows=1, reason="회원탈퇴", legal_basis="개인정보 보호법 제21조", method="DELETE",
                actor="lifecycle.rights.withdraw", task_id=f"task-{m}", subject_ref=ref,
            )  # fmt: skip
    ctx = browser.new_context(locale="ko-KR", viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    _login(page, c, "kim.officer")

    # Filtered by member (in the POST body) and kind: member 2's destruction only, logged.
    page.goto(f"{c.base}/ledger")
    page.fill("#member", "2")
    page.uncheck("#kind-archive-move")
    page.uncheck("#kind-paper")
    page.click("#filter")
    page.wait_for_selector("#ledger")
    table = page.inner_text("#ledger")
    assert "task-2" in table and "task-3" not in table, table
    with session("archive") as a:
        reads = list(a.scalars(select(AccessLogEntry).where(
            AccessLogEntry.action == "console ledger register")))  # fmt: skip
    assert [(e.operator, e.subject_ref) for e in reads] == [("console:kim.officer", refs[2])]
    assert reads[0].details["ip"] in {"127.0.0.1", "::1"}

    # A paper destruction, entered by the form.
    page.goto(f"{c.base}/ledger")
    page.fill("#what", "2019년 상담 신청서 원본")
    page.fill("#handler", "박직원")
    page.fill("#witness", "최입회")
    page.fill("#count", "3")
    page.click("#paper")
    page.wait_for_selector(".flash.ok")
    with session("archive") as a:
        paper = a.scalars(select(LedgerEntry).where(LedgerEntry.action == register.PAPER)).one()
        assert paper.details["recorded_by"] == "console:kim.officer"
        assert paper.details["witness"] == "최입회" and paper.rows == 3

    # The officer signs off everything so far; the entry names them and the chain verifies.
    page.goto(f"{c.base}/ledger")
    page.click("#signoff")
    page.wait_for_selector(".flash.ok")
    assert "확인했습니다" in page.inner_text(".flash")
    with session("archive") as a:
        signed = register.signoffs(a)
    assert len(signed) == 1 and signed[0].officer == "김책임"
    assert signed[0].through_seq == paper.seq
    assert "김책임" in page.inner_text("#ledger")
    r = primary_env.run("ledger", "verify")
    assert r.returncode == 0, r.stderr
    shots = tmp_path / "shots"
    shots.mkdir()
    page.screenshot(path=str(shots / "ledger-signoff.png"), full_page=True)

    # The monthly review of this month, through the same function as the command, logged.
    month = utcnow().astimezone(ZoneInfo("Asia/Seoul")).strftime("%Y-%m")
    page.goto(f"{c.base}/accesslog/review")
    page.fill("#month", month)
    page.click("#review")
    page.wait_for_selector("#review-flags")
    assert "console:kim.officer" in page.inner_text("main")
    page.screenshot(path=str(shots / "accesslog-review.png"), full_page=True)
    with session("archive") as a:
        runs = list(a.scalars(select(AccessLogEntry).where(
            AccessLogEntry.action == "accesslog review")))  # fmt: skip
    assert [(e.operator, e.kind, e.details["month"]) for e in runs] == [
        ("console:kim.officer", "read", month)
    ]
    assert runs[0].details["entries"] >= 3
    # A bad month: one line, nothing logged.
    page.fill("#month", "2026-13")
    page.click("#review")
    assert "--month must be YYYY-MM" in page.inner_text(".flash.error")
    target = _shots()
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        for png in shots.iterdir():
            shutil.copy(png, target / png.name)

    # A handler: no sign-off (403 from the server, with a valid token) and no review.
    hctx = browser.new_context(locale="ko-KR")
    hpage = hctx.new_page()
    _login(hpage, c, "lee.handler")
    hpage.goto(f"{c.base}/ledger")
    assert hpage.locator("#signoff").count() == 0
    token = hpage.locator("input[name=csrf_token]").first.get_attribute("value")
    resp = hpage.request.post(
        f"{c.base}/ledger/signoff", form={"csrf_token": token, "through": str(paper.seq)}
    )
    assert resp.status == 403 and "권한이 없습니다" in resp.text()
    assert hpage.request.get(f"{c.base}/accesslog/review").status == 403
    resp = hpage.request.post(
        f"{c.base}/accesslog/review", form={"csrf_token": token, "month": month}
    )
    assert resp.status == 403
    with session("archive") as a:
        assert len(register.signoffs(a)) == 1
        assert a.scalar(select(func.count()).select_from(AccessLogEntry).where(
            AccessLogEntry.action == "accesslog review")) == 1  # fmt: skip

    # An officer account whose name is not the registered officer: refused, nothing written.
    c.secrets["park.officer"] = _account(primary_env, tmp_path, "park.officer", "officer", "박부장")
    pctx = browser.new_context(locale="ko-KR")
    ppage = pctx.new_page()
    _login(ppage, c, "park.officer")
    ppage.goto(f"{c.base}/ledger")
    ppage.click("#signoff")
    assert "not a registered privacy officer" in ppage.inner_text(".flash.error")
    # A paper destruction witnessed by the one who did it: refused in one line.
    ppage.fill("#what", "2020년 상담 신청서 원본")
    ppage.fill("#handler", "박직원")
    ppage.fill("#witness", "박직원")
    ppage.click("#paper")
    assert "--witness must be someone other" in ppage.inner_text(".flash.error")
    with session("archive") as a:
        assert len(register.signoffs(a)) == 1
        assert a.scalar(select(func.count()).select_from(LedgerEntry).where(
            LedgerEntry.action == register.PAPER)) == 1  # fmt: skip

    for u in urls:
        assert "member" not in urlparse(u).query, u
    pctx.close()
    hctx.close()
    ctx.close()
