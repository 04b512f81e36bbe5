"""Login through the organisation's OpenID Connect provider, beside the local accounts.

The authorization code flow (OIDC Core 3.1) with PKCE (RFC 7636, S256): Authlib builds the
authorization and token requests and the S256 challenge, joserfc (Authlib's JOSE package)
verifies the ID token, httpx (already a dependency) carries the two calls to the provider:
- ``/oidc/login`` makes a fresh state, nonce and PKCE verifier, keeps them in a short-lived
  signed cookie of their own and sends the browser to the provider;
- ``/oidc/callback`` wants that cookie back (it is used once), the same state, exchanges the
  code with the verifier, and accepts the ID token only if its signature verifies with the
  provider's JWKS and its ``iss``, ``aud``, ``exp`` and ``nonce`` are the expected ones;
- the person is the configured claim's value (LIFECYCLE_CONSOLE_OIDC_USER_CLAIM); their role
  comes from LIFECYCLE_CONSOLE_OIDC_ROLES only. Anyone not listed there is refused, whatever
  the provider says, and a session ends at its next request once its name is taken off.

The flow's cookie is SameSite=Lax, unlike the session's (Strict): the provider's redirect back
is a navigation from another site, on which a browser sends Lax cookies but never Strict ones.
For the same reason the callback answers with a page that moves on to the console by itself
(a same-site navigation, so the new Strict session cookie goes with it) instead of a redirect.

In ledger and access-log entries the person is ``console:oidc:<name>``.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote_plus

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import (
    Blueprint,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as flask_session
from flask.sessions import SessionMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from werkzeug.wrappers import Response

from lifecycle.console import accounts
from lifecycle.console.guard import log, logged
from lifecycle.core.errors import UserError
from lifecycle.core.settings import Settings, get_settings
from models.base import utcnow

blueprint = Blueprint("oidc", __name__, url_prefix="/oidc")

FLOW_COOKIE = "lifecycle_oidc"
# Seconds a person has at the provider before the flow's cookie is no longer accepted.
FLOW_SECONDS = 600
# Clock difference tolerated between the provider and this host for exp/iat.
LEEWAY = 60
TIMEOUT = 10.0
MAX_NAME = 100
ALGORITHMS = ["RS256", "PS256", "ES256", "EdDSA"]


def enabled(s: Settings) -> bool:
    return bool(s.console_oidc_issuer)


def check_settings(s: Settings) -> None:
    """Refuse to start with half an OIDC configuration (one line, before anything listens)."""
    if not enabled(s):
        return
    if not s.console_oidc_client_id:
        raise UserError("LIFECYCLE_CONSOLE_OIDC_CLIENT_ID is required with an OIDC issuer")
    path = s.console_oidc_client_secret_file
    if path is None or not path.is_file() or not path.read_text().strip():
        raise UserError(
            "LIFECYCLE_CONSOLE_OIDC_CLIENT_SECRET_FILE must name a file holding the client secret"
        )
    if not s.console_oidc_roles:
        raise UserError(
            "LIFECYCLE_CONSOLE_OIDC_ROLES is empty: nobody could log in through OIDC "
            "(NAME=ROLE, comma-separated)"
        )


def who_of(name: str, display: str, role: str) -> accounts.Who:
    # id 0 and epoch 0: no local account; the session is checked against the role map instead.
    return accounts.Who(0, f"oidc:{name}", display, role, 0)


def current(session: SessionMixin) -> accounts.Who | None:
    """The session's OIDC person if they are still given a role."""
    name = str(session.get("oidc") or "")
    role = get_settings().console_oidc_roles.get(name)
    if not name or role is None:
        return None
    return who_of(name, str(session.get("name") or name), role)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt="console-oidc-flow")


def _refused(message: str, status: int) -> tuple[str, int]:
    return render_template("error.html", message=message), status


def _provider(s: Settings) -> dict[str, Any]:
    """The provider's discovery document (OIDC Discovery 4), checked to be the issuer's own."""
    url = s.console_oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
    meta = httpx.get(url, timeout=TIMEOUT).raise_for_status().json()
    if meta.get("issuer") != s.console_oidc_issuer:
        raise UserError("the provider's discovery document names another issuer")
    return dict(meta)


def _secret(s: Settings) -> str:
    assert s.console_oidc_client_secret_file is not None  # check_settings
    return s.console_oidc_client_secret_file.read_text().strip()


def _redirect_uri() -> str:
    return get_settings().console_oidc_redirect_url or url_for("oidc.callback", _external=True)


@blueprint.get("/login")
def login() -> Any:
    s = get_settings()
    try:
        meta = _provider(s)
    except (httpx.HTTPError, ValueError, UserError) as exc:
        log.warning("console: OIDC provider not usable (%s)", type(exc).__name__)
        return _refused("로그인 서비스(OIDC)에 연결할 수 없습니다.", 503)
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(48)
    url = prepare_grant_uri(
        meta["authorization_endpoint"], s.console_oidc_client_id, "code",
        redirect_uri=_redirect_uri(), scope="openid profile", state=state, nonce=nonce,
        code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256",
    )  # fmt: skip
    resp = redirect(url)
    resp.set_cookie(
        FLOW_COOKIE,
        _serializer().dumps({"state": state, "nonce": nonce, "verifier": verifier}),
        max_age=FLOW_SECONDS,
        path="/oidc/",
        secure=s.console_cookie_secure,
        httponly=True,
        samesite="Lax",
    )
    return resp


def _flow() -> dict[str, str] | None:
    raw = request.cookies.get(FLOW_COOKIE)
    if not raw:
        return None
    try:
        data = _serializer().loads(raw, max_age=FLOW_SECONDS)
    except BadSignature:
        return None
    return data if isinstance(data, dict) else None


def _id_claims(
    s: Settings, meta: dict[str, Any], code: str, flow: dict[str, str]
) -> dict[str, Any]:
    body = prepare_token_request(
        "authorization_code", redirect_uri=_redirect_uri(), code=code,
        code_verifier=flow["verifier"],
    )  # fmt: skip
    # client_secret_basic, OIDC Core 9's default method; id and secret form-urlencoded first
    # (RFC 6749 2.3.1).
    answer = httpx.post(
        meta["token_endpoint"], content=body, timeout=TIMEOUT,
        auth=(quote_plus(s.console_oidc_client_id), quote_plus(_secret(s))),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )  # fmt: skip
    token = answer.raise_for_status().json()
    raw = token.get("id_token") if isinstance(token, dict) else None
    if not raw:
        raise UserError("the provider sent no ID token")
    jwks = httpx.get(meta["jwks_uri"], timeout=TIMEOUT).raise_for_status().json()
    # joserfc (Authlib's JOSE package): asymmetric algorithms only, so a token "signed" with
    # the client secret or not at all never passes.
    decoded = jwt.decode(raw, KeySet.import_key_set(jwks), algorithms=ALGORITHMS)
    jwt.JWTClaimsRegistry(
        leeway=LEEWAY,
        iss={"essential": True, "value": s.console_oidc_issuer},
        aud={"essential": True, "value": s.console_oidc_client_id},
        sub={"essential": True},
        exp={"essential": True},
        nonce={"essential": True, "value": flow["nonce"]},
    ).validate(decoded.claims)
    aud = decoded.claims.get("aud")
    if (
        isinstance(aud, list)
        and len(aud) > 1
        and decoded.claims.get("azp") != s.console_oidc_client_id
    ):
        # OIDC Core 3.1.3.7 (4, 5): a token for several audiences must name us as its party.
        raise UserError("the ID token's azp is not this client")
    return decoded.claims


@blueprint.get("/callback")
def callback() -> Any:
    s = get_settings()
    flow = _flow()
    state = request.args.get("state", "")
    if flow is None or not secrets.compare_digest(state.encode(), flow["state"].encode()):
        log.warning("console: OIDC callback with a missing or wrong state")
        msg = "로그인 요청이 맞지 않거나 만료되었습니다 (state). 다시 시도하십시오."
        return _gone(_refused(msg, 400))
    if request.args.get("error") or not request.args.get("code"):
        return _gone(_refused("로그인 서비스가 로그인을 거절했습니다.", 401))
    try:
        claims = _id_claims(s, _provider(s), request.args["code"], flow)
    except (JoseError, httpx.HTTPError, ValueError, KeyError, UserError) as exc:
        # The reason's class only: an ID token's claims stay out of the log.
        log.warning("console: OIDC login refused (%s)", type(exc).__name__)
        return _gone(_refused("로그인 서비스의 응답을 확인할 수 없습니다 (ID 토큰).", 401))
    name = str(claims.get(s.console_oidc_user_claim) or "").strip()
    role = s.console_oidc_roles.get(name)
    if not name or role is None:
        log.warning("console: OIDC identity without a console role refused")
        return _gone(_refused(
            "이 계정에는 콘솔 역할이 지정되어 있지 않아 로그인할 수 없습니다. "
            "개인정보 보호책임자에게 역할 지정(LIFECYCLE_CONSOLE_OIDC_ROLES)을 요청하십시오.",
            403,
        ))  # fmt: skip
    display = " ".join(str(claims.get("name") or name).split())[:MAX_NAME]
    flask_session.clear()
    flask_session.permanent = True
    flask_session.update(oidc=name, name=display, seen=utcnow().isoformat())
    flask_session["nonce"] = secrets.token_hex(8)  # a new cookie value at every login
    g.who = who_of(name, display, role)
    logged("read", "console login", details={"method": "oidc"})
    return _gone(make_response(render_template("oidc_done.html")))


def _gone(answer: Any) -> Response:
    """The answer with the flow's cookie removed: a state is good for one try."""
    resp = make_response(answer)
    resp.delete_cookie(FLOW_COOKIE, path="/oidc/")
    return resp
