"""The operator register: once anyone is registered, the access log names the registered
operator of the OS account running a command, and an unregistered account is refused before it
does anything. On PostgreSQL and MariaDB (the register lives in the primary DB)."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, text

from tests.helpers import LifecycleEnv, table_dump


def _last(env: LifecycleEnv) -> tuple[str, str, dict[str, object]]:
    eng = create_engine(env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"])
    with eng.connect() as c:
        op, action, details = c.execute(
            text("SELECT operator, action, details FROM access_log ORDER BY seq DESC LIMIT 1")
        ).one()
    eng.dispose()
    return op, action, json.loads(details) if isinstance(details, str) else details


def test_registered_operators_are_who_the_log_names(primary_env: LifecycleEnv) -> None:
    env = primary_env
    # LOGNAME is what the OS login says (getpass reads it first): two accounts on one host.
    kim, park, eve = {"LOGNAME": "kim"}, {"LOGNAME": "park"}, {"LOGNAME": "eve"}
    review = ("accesslog", "review", "--month", "2026-10")

    r = env.run("operators", "list", **kim)
    assert r.returncode == 0 and "no operators registered" in r.stdout
    # Nobody registered: --operator as given, the OS account beside it.
    assert env.run("--operator", "clerk-park", *review, **eve).returncode == 0
    op, _, details = _last(env)
    assert (op, details["os_user"]) == ("clerk-park", "eve")

    assert env.run("operators", "add", "kim", "--name", "김보호", **kim).returncode == 0
    r = env.run("operators", "add", "park", "--name", "박담당", **kim)
    assert r.returncode == 0, r.stderr
    assert env.run(*review, **park).returncode == 0
    assert _last(env)[0] == "박담당 [park]"
    assert env.run("--operator", "박담당", *review, **park).returncode == 0

    # Refused in one line, nothing logged: an unregistered account, a name not one's own, an
    # account adding itself, a disabled account.
    eng = create_engine(env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"])
    before = table_dump(eng, "access_log")
    for args, who, says in (
        (review, eve, "OS account 'eve' is not a registered operator"),
        (("--operator", "김보호", *review), park, "is not the operator registered for"),
        (("operators", "add", "eve", "--name", "이브"), eve, "not a registered operator"),
        (("operators", "add", "kim", "--name", "김"), kim, "already registered"),
        (("operators", "add", "lee", "--name", " "), kim, "--name must be"),
    ):
        r = env.run(*args, **who)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert table_dump(eng, "access_log") == before

    assert env.run("operators", "disable", "park", **kim).returncode == 0
    op, action, _ = _last(env)
    assert (op, action) == ("김보호 [kim]", "operators disable")
    r = env.run(*review, **park)
    assert r.returncode == 2 and "not a registered operator" in r.stderr
    r = env.run("operators", "list", **kim)
    assert "kim" in r.stdout and "disabled" in r.stdout
    eng.dispose()
