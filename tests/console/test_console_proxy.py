"""Behind a reverse proxy, on each primary: the console believes X-Forwarded-For and
X-Forwarded-Proto only from the proxies the operator configured
(LIFECYCLE_CONSOLE_TRUSTED_PROXIES); by default a spoofed header changes neither the access
log's 접속지 nor the scheme. Flask's test client against the real app and databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers import LifecycleEnv, seed_site, set_env

pytestmark = pytest.mark.integration
PASSWORD = "프록시-뒤의-콘솔-비밀번호-7"
PEER = "10.9.8.7"  # the proxy, as the console's TCP peer
CLIENT = "203.0.113.7"  # the browser, as the proxy saw it


def _client(account_id: int, epoch: int) -> Any:
    from lifecycle.console.web import create_app
    from models.base import utcnow

    app = create_app()
    c = app.test_client()
    with c.session_transaction() as sess:
        sess.update(aid=account_id, epoch=epoch, seen=utcnow().isoformat())
    return c


def _logged_ips(request_id: int) -> list[str]:
    from lifecycle.core.db import session
    from models.guards import AccessLogEntry

    with session("archive") as a:
        rows = a.scalars(
            select(AccessLogEntry)
            .where(
                AccessLogEntry.action == "console request view",
                AccessLogEntry.request_id == request_id,
            )
            .order_by(AccessLogEntry.seq)
        )
        return [str(e.details["ip"]) for e in rows]


def test_forwarded_headers_count_only_from_configured_proxies(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.console import accounts
    from lifecycle.core.db import session
    from lifecycle.rights.common import Requester
    from lifecycle.rights.suspension import submit_suspension

    env = primary_env
    seed_site(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 5)
    with session("primary") as s:
        acc = accounts.add(s, "kim.officer", "김책임", "officer", PASSWORD)
        aid, epoch = acc.id, acc.session_epoch
    rid = submit_suspension(3, "마케팅 이용 중지 요청", Requester(), dispatch=False)
    spoofed = {"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"}

    # Default: no proxy trusted; the headers are whatever a client wrote.
    c = _client(aid, epoch)
    r = c.get(f"/requests/{rid}", headers=spoofed, environ_base={"REMOTE_ADDR": PEER})
    assert r.status_code == 200, r.text
    assert "Strict-Transport-Security" not in r.headers  # still plain HTTP
    assert _logged_ips(rid) == [PEER]

    # One trusted proxy: its X-Forwarded-For entry is the client, and only its own (the last):
    # an address the client put in front is not believed.
    set_env(env, monkeypatch, LIFECYCLE_CONSOLE_TRUSTED_PROXIES="1")
    c = _client(aid, epoch)
    r = c.get(f"/requests/{rid}", headers=spoofed, environ_base={"REMOTE_ADDR": PEER})
    assert r.status_code == 200, r.text
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    chained = {"X-Forwarded-For": f"198.51.100.1, {CLIENT}", "X-Forwarded-Proto": "https"}
    r = c.get(f"/requests/{rid}", headers=chained, environ_base={"REMOTE_ADDR": PEER})
    assert r.status_code == 200, r.text
    assert _logged_ips(rid) == [PEER, CLIENT, CLIENT]

    # A bad setting is refused at start, not read as "trust everything".
    r2 = env.run("console", "serve", "--port", "1", LIFECYCLE_CONSOLE_TRUSTED_PROXIES="-1")
    assert r2.returncode != 0, r2.stderr
    assert "LIFECYCLE_CONSOLE_TRUSTED_PROXIES" in r2.stderr.strip().splitlines()[-1], r2.stderr
