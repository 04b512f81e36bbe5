"""A small but real OpenID Connect provider for the console's tests, on loopback.

Discovery document, an authorization endpoint that approves the configured user at once (no
login page), a token endpoint (client_secret_basic, one-time codes bound to their redirect
URI, PKCE S256 checked), and the JWKS; ID tokens are RS256, signed with a key made here.
``nonce_override``, ``sign_with`` and ``user`` let a test make it answer as a wrong or unknown
provider would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "pipa-console"
CLIENT_SECRET = "test-client-secret-만-여기"


@dataclass
class Provider:
    issuer: str = ""
    user: dict[str, Any] = field(default_factory=dict)
    # A nonce the ID token carries instead of the one the client sent (a replayed token).
    nonce_override: str | None = None
    # A key the ID token is signed with instead of the published one (a forged token).
    sign_with: RSAKey | None = None
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={
        "kid": "test-key-1", "alg": "RS256", "use": "sig"}))  # fmt: skip
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens_issued: int = 0
    refusals: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    def authorize(self, q: dict[str, str]) -> str:
        """The redirect back to the client (the user approves at once)."""
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            raise ValueError("unknown client or response type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            raise ValueError("PKCE S256 required")
        if "openid" not in q.get("scope", "").split():
            raise ValueError("scope openid required")
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "redirect_uri": q["redirect_uri"], "nonce": q.get("nonce"),
            "challenge": q["code_challenge"], "user": dict(self.user),
        }  # fmt: skip
        return f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"

    def token(self, auth: str | None, form: dict[str, str]) -> dict[str, Any]:
        # RFC 6749 2.3.1: id and secret form-urlencoded, then HTTP Basic.
        try:
            raw = base64.b64decode((auth or "").removeprefix("Basic "), validate=True).decode()
        except ValueError:
            raise PermissionError("invalid_client") from None
        cid, _, secret = raw.partition(":")
        if (unquote_plus(cid), unquote_plus(secret)) != (CLIENT_ID, CLIENT_SECRET):
            raise PermissionError("invalid_client")
        grant = self.codes.pop(form.get("code", ""), None)  # a code is good once
        if grant is None or form.get("grant_type") != "authorization_code":
            raise ValueError("invalid_grant")
        if form.get("redirect_uri") != grant["redirect_uri"]:
            raise ValueError("invalid_grant: redirect_uri")
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
            raise ValueError("invalid_grant: PKCE")
        now = int(time.time())
        claims = {
            "iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
            "nonce": self.nonce_override or grant["nonce"], **grant["user"],
        }  # fmt: skip
        self.tokens_issued += 1
        return {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": jwt.encode(
                {"alg": "RS256", "kid": "test-key-1"}, claims, self.sign_with or self.key
            ),
        }

    def jwks(self) -> dict[str, Any]:
        return KeySet([self.key]).as_dict(private=False)


def _handler(p: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/.well-known/openid-configuration":
                return self._json(200, p.discovery())
            if url.path == "/jwks":
                return self._json(200, p.jwks())
            if url.path == "/authorize":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                try:
                    target = p.authorize(q)
                except ValueError as exc:
                    p.refusals.append(str(exc))
                    return self._json(400, {"error": str(exc)})
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/token":
                return self._json(404, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            try:
                return self._json(200, p.token(self.headers.get("Authorization"), form))
            except PermissionError as exc:
                p.refusals.append(str(exc))
                return self._json(401, {"error": str(exc)})
            except ValueError as exc:
                p.refusals.append(str(exc))
                return self._json(400, {"error": str(exc)})

    return Handler


def start(user: dict[str, Any]) -> Provider:
    p = Provider(user=user)
    p.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(p))
    p.issuer = f"http://127.0.0.1:{p.server.server_address[1]}"
    threading.Thread(target=p.server.serve_forever, daemon=True).start()
    return p


def stop(p: Provider) -> None:
    if p.server is not None:
        p.server.shutdown()
        p.server.server_close()
