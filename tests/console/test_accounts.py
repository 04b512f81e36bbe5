"""Console accounts on each primary: `lifecycle console user ...` refuses bad input in one line and
changes nothing; a TOTP code logs in once; a password change, a new TOTP secret or a disabled
account ends the open sessions; and `requests refuse|answer` from the CLI use the same domain
functions as the console."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from sqlalchemy import func, select

from tests.helpers import LifecycleEnv, seed_site

pytestmark = pytest.mark.integration
PASSWORD = "충분히-긴-비밀번호-0426"


def _count() -> int:
    from lifecycle.core.db import session
    from models.console import ConsoleAccount

    with session("primary") as s:
        return int(s.scalar(select(func.count()).select_from(ConsoleAccount)) or 0)


def test_user_commands_refuse_bad_input_and_sessions_end_on_change(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    from lifecycle.console import accounts
    from lifecycle.core.db import session

    env = primary_env
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    short = tmp_path / "short"
    short.write_text("짧음\n")
    bad = [
        ("add", "Kim", "--role", "officer", "--name", "김", "--password-file", str(pw)),
        ("add", "kim", "--role", "boss", "--name", "김", "--password-file", str(pw)),
        ("add", "kim", "--role", "officer", "--name", "김", "--password-file", str(short)),
        ("add", "kim", "--role", "officer", "--name", "  ", "--password-file", str(pw)),
        ("add", "kim", "--role", "officer", "--name", "김", "--password-file", "/nonexistent"),
        ("passwd", "nobody", "--password-file", str(pw)),
        ("totp", "nobody"),
    ]
    for args in bad:
        r = env.run("console", "user", *args)
        assert r.returncode != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lifecycle: error: "), (args, r.stderr)
        assert _count() == 0
    ok = env.run("console", "user", "add", "kim", "--role", "officer", "--name", "김책임",
                 "--password-file", str(pw))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    again = env.run("console", "user", "add", "kim", "--role", "handler", "--name", "김",
                    "--password-file", str(pw))  # fmt: skip
    assert again.returncode != 0 and "already exists" in again.stderr
    assert _count() == 1

    # No second factor yet: no login, whatever the password.
    with session("primary") as s:
        assert accounts.authenticate(s, "kim", PASSWORD, "123456") is None
    r = env.run("console", "user", "totp", "kim")
    secret = parse_qs(urlparse(r.stdout.strip()).query)["secret"][0]
    code = pyotp.TOTP(secret).now()
    with session("primary") as s:
        who = accounts.authenticate(s, "kim", PASSWORD, code)
    assert who is not None and who.role == "officer"
    with session("primary") as s:  # the same code again: a replay
        assert accounts.authenticate(s, "kim", PASSWORD, code) is None
    with session("primary") as s:
        assert accounts.authenticate(s, "kim", "wrong-password-xyz", code) is None
        assert accounts.current(s, who.id, who.epoch) == who

    # A password change ends the session; so does disabling the account.
    assert env.run("console", "user", "passwd", "kim", "--password-file", str(pw)).returncode == 0
    with session("primary") as s:
        assert accounts.current(s, who.id, who.epoch) is None
        acc = accounts.get(s, "kim")
        epoch = acc.session_epoch
        # The stored secret is not the one the app shows: encrypted under the master key.
        assert acc.totp_secret and secret not in acc.totp_secret
    assert env.run("console", "user", "disable", "kim").returncode == 0
    with session("primary") as s:
        assert accounts.current(s, who.id, epoch) is None
    # The next step's code (not used yet): a disabled account still cannot log in.
    nxt = pyotp.TOTP(secret).at(int(time.time()) + 30)
    with session("primary") as s:
        assert accounts.authenticate(s, "kim", PASSWORD, nxt) is None
    listing = env.run("console", "user", "list")
    assert "kim" in listing.stdout and "disabled" in listing.stdout

    # The account changes are in the access log, naming who made them.
    from lifecycle.vault import accesslog

    with session("archive") as a:
        actions = [e["action"] for e in accesslog.iter_entries(a)]
    for action in ("console user add", "console user totp", "console user passwd",
                   "console user disable"):  # fmt: skip
        assert action in actions


def test_cli_refuse_and_answer_use_the_same_rules(primary_env: LifecycleEnv) -> None:
    from lifecycle.core.db import session
    from lifecycle.rights.common import Requester
    from lifecycle.rights.suspension import submit_suspension
    from models.requests import LifecycleRequest

    env = primary_env
    seed_site(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 3)
    rid = submit_suspension(2, "이용 중지 요청", Requester(), dispatch=False)
    r = env.run("requests", "answer", str(rid))
    assert r.returncode != 0 and "still received" in r.stderr
    r = env.run("requests", "refuse", str(rid), "--reason", "   ")
    assert r.returncode != 0 and "--reason" in r.stderr
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and req.state == "received" and req.answered_at is None
    r = env.run("requests", "refuse", str(rid), "--reason", "본인 확인이 되지 않았습니다")
    assert r.returncode == 0, r.stderr
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and req.state == "failed" and req.answered_at is not None
        first = req.answer_notice_id
    r = env.run("requests", "refuse", str(rid), "--reason", "다시")
    assert r.returncode != 0 and "already failed" in r.stderr
    # Answering an answered request gives the same answer, not a second one.
    r = env.run("requests", "answer", str(rid))
    assert r.returncode == 0 and f"notice {first}" in r.stdout


def test_cli_takes_a_request_received_by_letter_with_its_identity_check(
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.core.db import session
    from models.requests import LifecycleRequest

    env = primary_env
    seed_site(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 2)
    for extra, message in (
        (("--received-via", "phone"), "needs --verified-by document or callback"),
        (("--received-via", "fax", "--verified-by", "callback"), "--received-via must be"),
    ):
        r = env.run("suspend", "1", "--reason", "우편 요청", *extra)
        assert r.returncode != 0 and message in r.stderr, r.stderr
        with session("primary") as s:
            assert s.scalar(select(func.count()).select_from(LifecycleRequest)) == 0
    r = env.run("suspend", "1", "--reason", "우편 요청", "--received-via", "letter",
                "--verified-by", "callback")  # fmt: skip
    assert r.returncode == 0, r.stderr
    with session("primary") as s:
        req = s.scalars(select(LifecycleRequest)).one()
        assert (req.received_via, req.verified_by) == ("letter", "callback")
