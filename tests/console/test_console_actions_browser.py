"""The officer's actions on holds and incidents, and the OIDC login, in a real browser (Playwright
and Debian's Chromium) against a real `lifecycle console serve` on each primary.

An officer logs in through the loopback OIDC provider (tests/console/oidc_provider.py), places
a legal hold on a member and releases it; another officer (password and TOTP) opens an
incident, drafts its report, closes it; each action writes the ledger and access-log entries
the CLI writes, naming the person. A handler gets 403 from the server for every one of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.console.oidc_provider import Provider

# The fixtures `browser`, `console` and `provider` come from the other console tests, imported
# under their own names so pytest finds them here.
from tests.console.test_console_browser import CHROMIUM, Console, _login
from tests.console.test_console_browser import browser as browser
from tests.console.test_console_browser import console as console
from tests.console.test_oidc import oidc_settings
from tests.console.test_oidc import provider as provider
from tests.helpers import LifecycleEnv, sql_rows

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]

DESCRIPTION = """[how]
결제 내역 조회 화면의 권한 확인 누락으로 다른 회원의 결제 내역이 보였습니다.
[advice]
카드사에 부정 사용 여부를 확인하십시오.
[measures]
해당 화면을 닫고 권한 확인을 고쳤습니다.
[contact]
개인정보 보호책임자 02-000-0000
"""


@pytest.fixture
def oidc_console(
    primary_env: LifecycleEnv, provider: Provider, tmp_path: Path, request: Any
) -> Console:
    """The console fixture's server, started with the provider configured."""
    secrets_dir = tmp_path / "oidc"
    secrets_dir.mkdir()
    primary_env.vars.update(oidc_settings(provider, secrets_dir))
    return request.getfixturevalue("console")  # type: ignore[no-any-return]


def _flash(page: Any) -> str:
    return str(page.inner_text(".flash"))


def _entries(action: str) -> list[Any]:
    from lifecycle.core.db import session
    from models.guards import AccessLogEntry

    with session("archive") as a:
        rows = list(a.scalars(select(AccessLogEntry).where(AccessLogEntry.action == action)))
        a.expunge_all()
    return rows


def _ledger(action: str) -> list[Any]:
    from lifecycle.core.db import session
    from models.archive import LedgerEntry

    with session("archive") as a:
        rows = list(a.scalars(select(LedgerEntry).where(LedgerEntry.action == action)))
        a.expunge_all()
    return rows


def test_an_oidc_officer_places_and_releases_a_hold(
    oidc_console: Console, browser: Any, primary_env: LifecycleEnv
) -> None:
    from lifecycle.core.db import session
    from models.guards import LegalHold

    c = oidc_console
    ctx = browser.new_context(locale="ko-KR", viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    # Through the provider (another site: 127.0.0.1) and back.
    page.goto(f"{c.base}/login")
    page.click("#oidc-login")
    page.wait_for_url(f"{c.base}/requests")
    assert "박책임" in page.inner_text("header")
    assert any(u.startswith(f"{c.base}/oidc/callback?") for u in urls)
    [login] = _entries("console login")
    assert login.operator == "console:oidc:park.officer"

    page.goto(f"{c.base}/holds")
    page.select_option("#hold-target", "member")
    page.fill("#hold-value", "2")
    page.fill("#hold-until", "2030-12-31")
    page.fill("#hold-reason", "수사기관 보존 요청 2026-형-123")
    page.click("#hold-submit")
    page.wait_for_selector(".flash")
    assert "등록했습니다" in _flash(page), _flash(page)
    with session("primary") as s:
        [hold] = s.scalars(select(LegalHold)).all()
        assert (hold.scope, hold.member_id) == ("member", 2)
        assert hold.created_by == "console:oidc:park.officer"
        hid = hold.id
    [placed] = _ledger("hold")
    assert placed.actor == "operator:console:oidc:park.officer"
    [logged] = _entries("hold add")
    assert (logged.operator, logged.kind) == ("console:oidc:park.officer", "hold")
    # The member, by the same pseudonym in both records.
    assert placed.subject_ref and logged.subject_ref == placed.subject_ref
    assert logged.details["hold_id"] == hid

    page.click(f"#release-{hid}")
    page.wait_for_selector(".flash")
    assert "해제했습니다" in _flash(page), _flash(page)
    with session("primary") as s:
        hold = s.get(LegalHold, hid)
        assert hold is not None and hold.released_by == "console:oidc:park.officer"
    [released] = _ledger("hold_release")
    assert released.actor == "operator:console:oidc:park.officer"
    [logged] = _entries("hold release")
    assert logged.operator == "console:oidc:park.officer"
    assert logged.subject_ref == placed.subject_ref
    # The member id went in POST bodies only.
    for u in urls:
        values = [v for vs in parse_qs(urlparse(u).query).values() for v in vs]
        assert "2" not in values and "member" not in u, u
    ctx.close()


def test_an_officer_opens_reports_and_closes_an_incident_a_handler_is_refused(
    console: Console, browser: Any, primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    from lifecycle.core.db import session
    from models.incidents import Incident
    from models.notices import Notice

    c = console
    ctx = browser.new_context(locale="ko-KR", viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    _login(page, c, "kim.officer")
    tz = ZoneInfo("Asia/Seoul")
    now = datetime.now(tz).replace(second=0, microsecond=0)
    page.goto(f"{c.base}/incidents")
    page.click("#incident-new-link")
    page.check("input[name=categories][value=payment]")
    page.fill("#tables", "payments")
    page.fill("#from", "2000-01-01T00:00")
    page.fill("#to", now.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#detected_at", (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("#description", DESCRIPTION)
    page.click("#open-incident")
    page.wait_for_url(f"{c.base}/incidents/*")
    assert "등록했습니다" in _flash(page), _flash(page)
    iid = int(page.url.rsplit("/", 1)[1])
    url = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    payers = sql_rows(url, "SELECT COUNT(DISTINCT member_id) FROM payments")[0][0]
    with session("primary") as s:
        inc = s.get(Incident, iid)
        assert inc is not None and inc.opened_by == "console:kim.officer"
        assert (inc.categories, inc.tables, inc.affected) == (["payment"], ["payments"], payers)
    assert f"{payers}명" in page.inner_text("#affected")
    [opened] = _ledger("incident_open")
    assert opened.actor == "console:kim.officer" and opened.details["incident_id"] == iid
    [logged] = _entries("incident open")
    assert logged.operator == "console:kim.officer" and logged.details["members"] == payers

    # The members' notice prepared (the beat's re-send of unfinished notices sends it).
    page.click("#notify")
    page.wait_for_selector(".flash")
    assert "준비했습니다" in _flash(page), _flash(page)
    with session("primary") as s:
        inc = s.get(Incident, iid)
        assert inc is not None and inc.notice_id is not None and inc.notified_at is not None
        notice = s.get(Notice, inc.notice_id)
        assert notice is not None and notice.total == payers
    [notified] = _ledger("incident_notify")
    assert notified.actor == "console:kim.officer"
    assert _entries("incident notify")[0].operator == "console:kim.officer"

    # The draft report to the regulator, as a download, recorded as drafted.
    with page.expect_download() as dl:
        page.click("#report")
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    assert "결제 내역 조회 화면" in text
    [reported] = _ledger("incident_report")
    assert reported.actor == "console:kim.officer"
    assert _entries("incident report")[0].kind == "export"
    # Drafted is not submitted: the page says which, read-only; the submission is recorded
    # with the command and then shown with when and to whom.
    page.goto(f"{c.base}/incidents/{iid}")
    assert "초안 작성" in page.inner_text("#reported")
    assert "제출" not in page.inner_text("#submitted")
    r = primary_env.run("incident", "submitted", str(iid), "--to", "pipc", "--receipt", "2026-77")
    assert r.returncode == 0, r.stderr
    page.reload()
    shown = page.inner_text("#submitted")
    assert "제출" in shown and "개인정보보호위원회" in shown and "접수번호 2026-77" in shown, shown
    page.goto(f"{c.base}/incidents")
    assert "제출" in page.inner_text("#incidents")
    page.goto(f"{c.base}/incidents/{iid}")

    # A handler: the server refuses each action, whatever the page shows.
    hctx = browser.new_context(locale="ko-KR")
    hpage = hctx.new_page()
    _login(hpage, c, "lee.handler")
    hpage.goto(f"{c.base}/holds")
    assert hpage.locator("#hold-add").count() == 0
    token = hpage.locator("input[name=csrf_token]").first.get_attribute("value")
    for path, form in (
        ("/holds/add", {"target": "member", "value": "2", "until": "2030-12-31",
                        "reason": "보존 요청 사건"}),
        ("/incidents/new", {"categories": "payment", "from": "2000-01-01T00:00"}),
        (f"/incidents/{iid}/notify", {}),
        (f"/incidents/{iid}/close", {"record": "종결"}),
    ):  # fmt: skip
        resp = hpage.request.post(f"{c.base}{path}", form={"csrf_token": str(token), **form})
        assert resp.status == 403 and "권한이 없습니다" in resp.text(), path
    assert hpage.request.get(f"{c.base}/incidents/new").status == 403
    hpage.goto(f"{c.base}/incidents/{iid}")
    assert hpage.locator("#close").count() == 0
    hctx.close()

    page.fill("#record", "영향받은 회원 모두에게 전자우편으로 알리고 신고를 마쳤습니다.")
    page.click("#close")
    page.wait_for_selector("#closed")
    assert "종결했습니다" in _flash(page), _flash(page)
    with session("primary") as s:
        inc = s.get(Incident, iid)
        assert inc is not None and inc.state == "closed"
        assert inc.closed_by == "console:kim.officer"
        assert inc.closing_record is not None and "신고를 마쳤습니다" in inc.closing_record
    [closed] = _ledger("incident_close")
    assert closed.actor == "console:kim.officer"
    [logged] = _entries("incident close")
    assert logged.operator == "console:kim.officer" and logged.kind == "change"

    # Unlawful access from outside makes a report due (시행령 제40조①3호): closing without a
    # recorded submission is refused until the officer gives a reason, which is kept.
    desc = tmp_path / "desc.txt"
    desc.write_text(DESCRIPTION, encoding="utf-8")
    r = primary_env.run(
        "incident", "open", "--categories", "payment", "--from", "2000-01-01T00:00", "--to",
        now.strftime("%Y-%m-%dT%H:%M"), "--detected-at", now.strftime("%Y-%m-%dT%H:%M"),
        "--description-file", str(desc), "--external-access",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    second = iid + 1
    page.goto(f"{c.base}/incidents/{second}")
    assert "제출 기록 없음" in page.inner_text("#submitted")
    page.fill("#record", "외부 접근 경로를 막았습니다.")
    page.click("#close")
    page.wait_for_selector(".flash")
    assert "--no-report-reason" in _flash(page), _flash(page)
    with session("primary") as s:
        inc = s.get(Incident, second)
        assert inc is not None and inc.state == "open"
    page.fill("#record", "외부 접근 경로를 막았습니다.")
    page.fill("#no_report_reason", "보호위원회 상담 결과 신고 대상 아님")
    page.click("#close")
    page.wait_for_selector("#closed")
    assert "보호위원회 상담 결과" in page.inner_text("#no-report-reason")
    with session("primary") as s:
        inc = s.get(Incident, second)
        assert inc is not None and inc.state == "closed"
        assert inc.no_report_reason == "보호위원회 상담 결과 신고 대상 아님"
    ctx.close()
