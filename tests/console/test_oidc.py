"""The console's OIDC login against a real provider on loopback (tests/console/oidc_provider.py),
in-process through Flask's test client (the browser test is in test_console_actions_browser.py).

A mapped person gets a session named ``console:oidc:<name>`` (its access-log entry says so); a
wrong state, a replayed callback, a wrong nonce, an unknown signing key and a person without a
role are each refused and leave nobody logged in; a session ends once the role is taken off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from joserfc.jwk import RSAKey
from sqlalchemy import select

from tests.console import oidc_provider
from tests.console.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider
from tests.helpers import LifecycleEnv, set_env

BASE = "https://localhost"
OFFICER = {"sub": "a3f9c2e0-0001", "preferred_username": "park.officer", "name": "박책임"}

pytestmark = pytest.mark.integration


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = oidc_provider.start(dict(OFFICER))
    try:
        yield p
    finally:
        oidc_provider.stop(p)


def oidc_settings(p: Provider, secret_dir: Path) -> dict[str, str]:
    secret = secret_dir / "oidc-client.secret"
    secret.write_text(CLIENT_SECRET + "\n", encoding="utf-8")
    return {
        "LIFECYCLE_CONSOLE_OIDC_ISSUER": p.issuer,
        "LIFECYCLE_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
        "LIFECYCLE_CONSOLE_OIDC_CLIENT_SECRET_FILE": str(secret),
        "LIFECYCLE_CONSOLE_OIDC_ROLES": "park.officer=officer, choi.audit=auditor",
    }


@pytest.fixture
def client(
    lifecycle_env: LifecycleEnv, provider: Provider, tmp_path: Path, monkeypatch: Any
) -> Any:
    set_env(lifecycle_env, monkeypatch, **oidc_settings(provider, tmp_path))
    from lifecycle.console.web import create_app

    return create_app().test_client()


def _login(
    client: Any, p: Provider, tamper: Callable[[dict[str, str]], dict[str, str]] | None = None
) -> tuple[Any, str]:
    """Through the provider and back; returns the callback's answer and its query."""
    r = client.get("/oidc/login", base_url=BASE)
    assert r.status_code == 302, r.text
    to = r.headers["Location"]
    assert to.startswith(f"{p.issuer}/authorize?")
    q = parse_qs(urlparse(to).query)
    assert q["code_challenge_method"] == ["S256"] and q["nonce"][0] and q["state"][0]
    assert q["redirect_uri"] == [f"{BASE}/oidc/callback"]
    back = httpx.get(to, follow_redirects=False, timeout=10)
    assert back.status_code == 302, back.text
    cb = urlparse(back.headers["location"])
    assert cb.path == "/oidc/callback"
    args = {k: v[0] for k, v in parse_qs(cb.query).items()}
    query = urlencode(tamper(args) if tamper else args)
    return client.get(f"/oidc/callback?{query}", base_url=BASE), query


def _logged_in(client: Any) -> bool:
    r = client.get("/requests", base_url=BASE)
    return r.status_code == 200


def test_a_mapped_person_logs_in_and_is_named_in_the_access_log(client: Any, provider: Any) -> None:
    from lifecycle.core.db import session
    from models.guards import AccessLogEntry

    assert not _logged_in(client)
    r, query = _login(client, provider)
    assert r.status_code == 200 and "oidc-done" in r.text
    page = client.get("/requests", base_url=BASE)
    assert page.status_code == 200 and "박책임" in page.text
    with session("archive") as a:
        entry = a.scalars(
            select(AccessLogEntry).where(AccessLogEntry.action == "console login")
        ).one()
        assert entry.operator == "console:oidc:park.officer"
        assert entry.details["method"] == "oidc"
    # The same answer again (the flow's cookie is gone, the code used): refused.
    again = client.get(f"/oidc/callback?{query}", base_url=BASE)
    assert again.status_code == 400 and "state" in again.text


def test_a_wrong_state_is_refused_before_the_code_is_used(client: Any, provider: Any) -> None:
    r, _ = _login(client, provider, lambda a: {**a, "state": a["state"][:-2] + "xx"})
    assert r.status_code == 400 and "state" in r.text
    assert provider.tokens_issued == 0
    assert not _logged_in(client)


def test_a_wrong_nonce_is_refused(client: Any, provider: Any) -> None:
    provider.nonce_override = "a-nonce-of-another-login"
    r, _ = _login(client, provider)
    assert r.status_code == 401 and "ID 토큰" in r.text
    assert provider.tokens_issued == 1  # the token came, and was not accepted
    assert not _logged_in(client)


def test_a_token_signed_by_another_key_is_refused(client: Any, provider: Any) -> None:
    provider.sign_with = RSAKey.generate_key(2048, parameters={"kid": "test-key-1"})
    r, _ = _login(client, provider)
    assert r.status_code == 401
    assert not _logged_in(client)


def test_a_person_without_a_role_is_refused(client: Any, provider: Any) -> None:
    provider.user = {"sub": "b7-0002", "preferred_username": "stranger", "name": "낯선이"}
    r, _ = _login(client, provider)
    assert r.status_code == 403 and "역할이 지정되어 있지 않아" in r.text
    assert not _logged_in(client)


def test_the_session_ends_when_the_role_is_taken_off(
    client: Any, provider: Any, lifecycle_env: LifecycleEnv, monkeypatch: Any
) -> None:
    r, _ = _login(client, provider)
    assert r.status_code == 200 and _logged_in(client)
    set_env(lifecycle_env, monkeypatch, LIFECYCLE_CONSOLE_OIDC_ROLES="choi.audit=auditor")
    assert not _logged_in(client)


def test_half_a_configuration_is_refused_at_start(
    lifecycle_env: LifecycleEnv, monkeypatch: Any, tmp_path: Path
) -> None:
    from lifecycle.console.web import create_app
    from lifecycle.core.errors import UserError
    from lifecycle.core.settings import Settings

    set_env(lifecycle_env, monkeypatch, LIFECYCLE_CONSOLE_OIDC_ISSUER="https://id.example.test")
    with pytest.raises(UserError, match="CLIENT_ID"):
        create_app()
    with pytest.raises(ValueError, match="NAME=ROLE"):
        Settings(console_oidc_roles="kim=boss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="https"):
        Settings(console_oidc_issuer="http://id.example.test")


def test_the_redirect_address_can_be_set_for_a_proxy(
    client: Any, provider: Any, lifecycle_env: LifecycleEnv, monkeypatch: Any
) -> None:
    behind = "https://privacy.example.test/oidc/callback"
    set_env(lifecycle_env, monkeypatch, LIFECYCLE_CONSOLE_OIDC_REDIRECT_URL=behind)
    r = client.get("/oidc/login", base_url=BASE)
    assert parse_qs(urlparse(r.headers["Location"]).query)["redirect_uri"] == [behind]
