"""The console's findings page and the access-package handover in Chromium (Playwright), on each
primary: stored discovery findings are listed with when they were found, the officer
acknowledges one with a reason (on the finding, in the access log), a handler may not; an
access request taken by phone is carried out, its encrypted package downloaded from the
request's page (an ``export`` entry with counts, the handover recorded on the request) and its
password shown once, which opens the package; no personal data in any URL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import pyzipper
from sqlalchemy import select, text

from tests.console.test_console_browser import (  # noqa: F401 (fixtures)
    CALLER_EMAIL,
    Console,
    _login,
    browser,
    console,
)
from tests.helpers import LifecycleEnv, site_engine

pytestmark = [pytest.mark.browser, pytest.mark.integration]
LEAK = "findings.page.9b2d@leak.example"


def test_findings_are_listed_and_acknowledged_and_a_package_is_handed_over(
    console: Console,  # noqa: F811
    browser,  # noqa: F811
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.core.db import session
    from lifecycle.engine.context import get_context
    from lifecycle.rights.access import ACCESS
    from lifecycle.rights.pipeline import run
    from models.findings import DataMapFinding
    from models.guards import AccessLogEntry
    from models.requests import LifecycleRequest

    c, env = console, primary_env
    eng = site_engine(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"])
    with eng.begin() as conn:
        conn.execute(text("UPDATE members SET rrn = NULL"))
        conn.execute(text("CREATE TABLE contact_import (id INTEGER PRIMARY KEY, note TEXT)"))
        conn.execute(text("INSERT INTO contact_import VALUES (1, :n)"), {"n": f"문의 {LEAK}"})
    eng.dispose()
    r = env.run("datamap", "discover")
    assert r.returncode == 0, r.stderr
    with session("primary") as s:
        fid = s.scalar(
            select(DataMapFinding.id).where(
                DataMapFinding.table_name == "contact_import", DataMapFinding.closed_at.is_(None)
            )
        )
    assert fid is not None

    ctx = browser.new_context(locale="ko-KR", viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    urls: list[str] = []
    page.on("request", lambda req: urls.append(req.url))

    # A handler sees the finding but may not acknowledge it (the server refuses too).
    _login(page, c, "lee.handler")
    page.goto(f"{c.base}/findings")
    assert "contact_import.note" in page.inner_text("#discovery")
    assert page.locator(f"#ack-{fid}").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r2 = page.request.post(
        f"{c.base}/findings/{fid}/acknowledge", form={"csrf_token": token, "reason": "괜찮음"}
    )
    assert r2.status == 403
    page.click("button:has-text('로그아웃')")

    # The officer: listed with when it was found; acknowledged with a reason.
    _login(page, c, "kim.officer")
    page.goto(f"{c.base}/findings")
    row = page.inner_text("#discovery")
    assert "contact_import.note" in row and "데이터 맵에 없음" in row and "실행" in row
    assert LEAK not in page.content()
    page.click(f"#ack-{fid}")  # without a reason: the browser asks for one (required)
    assert page.locator(".flash").count() == 0
    page.fill(f"#reason-{fid}", "고객센터 이관용 임시 테이블, 이번 달 말 삭제")
    page.click(f"#ack-{fid}")
    page.wait_for_selector(".flash.ok")
    assert "김책임 확인" in page.inner_text("#discovery")
    with session("primary") as s:
        f = s.get(DataMapFinding, fid)
        assert f is not None and f.acknowledged_by == "김책임"
        assert f.ack_reason == "고객센터 이관용 임시 테이블, 이번 달 말 삭제"
    with session("archive") as a:
        ack = a.scalar(
            select(AccessLogEntry).where(AccessLogEntry.action == "datamap finding acknowledge")
        )
        assert ack is not None and ack.operator == "console:kim.officer"
        assert ack.details["finding"] == fid and ack.details["table"] == "contact_import"
        assert ack.details["acknowledged"].startswith("고객센터")

    # An access request taken by phone, carried out by the worker (here: in process).
    page.goto(f"{c.base}/requests/new")
    page.select_option("#kind", "access")
    page.fill("#member_id", "2")
    page.select_option("#received_via", "phone")
    page.select_option("#verified_by", "callback")
    page.fill("#requester_contact", CALLER_EMAIL)
    page.click("button:has-text('접수')")
    page.wait_for_url(f"{c.base}/requests/*")
    rid = int(page.url.rsplit("/", 1)[1])
    assert "아직 작성되지 않았습니다" in page.inner_text("#handover")
    assert run(ACCESS, rid, ctx=get_context(), steps=10)["state"] == "completed"
    page.reload()
    assert "아직 전달하지 않음" in page.inner_text("#handovers")

    # A bad choice of how is refused, nothing recorded.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    bad = page.request.post(
        f"{c.base}/requests/{rid}/package", form={"csrf_token": token, "how": "pigeon"}
    )
    assert bad.ok and "전달 방법을 고르십시오" in bad.text()
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and "handovers" not in (req.payload or {})

    page.select_option("#how", "visit")
    with page.expect_download() as dl:
        page.click("#download")
    download = dl.value
    assert download.suggested_filename == f"access-request-{rid}.zip"
    data = Path(download.path()).read_bytes()
    with pyzipper.AESZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert "요약.txt" in names
        with pytest.raises(RuntimeError):
            zf.read("요약.txt")  # encrypted: no password, no content

    # The password, shown once; it opens the package.
    page.reload()
    assert "방문 수령" in page.inner_text("#handovers")
    page.click("#show-password")
    secret = page.inner_text("#package-password").strip()
    assert len(secret) >= 12
    with pyzipper.AESZipFile(io.BytesIO(data)) as zf:
        zf.setpassword(secret.encode())
        assert "열람" in zf.read("요약.txt").decode("utf-8-sig")
    page.goto(f"{c.base}/requests/{rid}")
    assert "표시함" in page.inner_text("#password-state")
    assert page.locator("#show-password").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    again = page.request.post(f"{c.base}/requests/{rid}/package/password",
                              form={"csrf_token": token})  # fmt: skip
    assert "이미 한 번 표시되었습니다" in again.text() and secret not in again.text()

    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and req.payload is not None
        (h,) = req.payload["handovers"]
        assert (h["how"], h["by"]) == ("visit", "console:kim.officer")
        assert req.payload["password_shown"]["by"] == "console:kim.officer"
        out = str(req.payload["out"])
    assert not Path(out + ".password.txt").exists()
    with session("archive") as a:
        export = a.scalar(
            select(AccessLogEntry).where(
                AccessLogEntry.action == "console access package",
                AccessLogEntry.request_id == rid,
            )
        )
        assert export is not None and export.kind == "export"
        assert export.operator == "console:kim.officer"
        assert export.details["how"] == "visit" and export.details["rows"] >= 1
        shown = a.scalar(
            select(AccessLogEntry.operator).where(
                AccessLogEntry.action == "console access package password",
                AccessLogEntry.request_id == rid,
            )
        )
        assert shown == "console:kim.officer"

    assert urls
    for u in urls:
        assert CALLER_EMAIL not in u and LEAK not in u and "member" not in u, u
    ctx.close()
