"""Signed webhooks per the Standard Webhooks specification (https://www.standardwebhooks.com).

Each request carries ``webhook-id`` (our delivery's message id: the same on every retry, so the
receiver can drop duplicates), ``webhook-timestamp`` (this attempt) and ``webhook-signature``
(``v1,`` + base64 HMAC-SHA256 over ``id.timestamp.body`` with the recipient's ``whsec_`` secret).
Signing is done by the ``standardwebhooks`` package, the reference implementation.

No Celery here: `deliver_webhook` is one HTTP attempt; the caller records it and schedules the
next one.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from lifecycle.channels.tls import client_context, is_loopback
from lifecycle.core.errors import UserError

Outcome = Literal["delivered", "gone", "retry"]

SECRET_PREFIX = "whsec_"
# The specification asks for secrets of 24 to 64 random bytes.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
USER_AGENT = "pipa-lifecycle-webhooks/1"


@dataclass(frozen=True)
class WebhookOutcome:
    """What one attempt did. Holds no body: receivers may echo what we sent."""

    outcome: Outcome
    status_code: int | None = None
    error_class: str | None = None

    @property
    def last_status(self) -> str:
        return str(self.status_code) if self.status_code is not None else (self.error_class or "")


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def validate_secret(secret: str) -> str:
    """Return the secret unchanged if it is a usable ``whsec_`` secret, else raise UserError."""
    if not secret.startswith(SECRET_PREFIX):
        raise UserError("webhook secret must start with 'whsec_' (Standard Webhooks format)")
    raw = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise UserError("webhook secret is not valid base64 after 'whsec_'") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise UserError(
            f"webhook secret must decode to {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, "
            f"got {len(key)}"
        )
    return secret


def validate_url(url: str) -> str:
    """HTTPS only, except plain HTTP to loopback (local receivers and tests)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UserError("webhook URL is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UserError("webhook URL must be https://HOST/PATH")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UserError("webhook URL must use https (plain http is allowed only to loopback)")
    if parts.username or parts.password:
        raise UserError("webhook URL must not contain credentials; use the signing secret")
    return url


def encode_body(payload: dict[str, Any]) -> str:
    """The exact text that is signed and sent (compact JSON, Korean kept as UTF-8)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def sign_headers(
    secret: str, msg_id: str, body: str, now: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    ts = (now or datetime.now(UTC)).astimezone(UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=ts, data=body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": signature,
    }


def deliver_webhook(
    url: str,
    secret: str,
    msg_id: str,
    payload: dict[str, Any],
    timeout: float,
    *,
    client: httpx.Client | None = None,
) -> WebhookOutcome:
    """One signed POST. 2xx → delivered; 410 → gone (disable the endpoint); else retry.

    Redirects are not followed: a signed body must reach the URL the operator registered.
    Exceptions never escape (the caller records the class name, never a message that might
    quote the request).
    """
    body = encode_body(payload)
    headers = sign_headers(secret, msg_id, body)
    headers["content-type"] = "application/json; charset=utf-8"
    headers["user-agent"] = USER_AGENT
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False, verify=client_context())
    try:
        resp = http.post(url, content=body.encode("utf-8"), headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return WebhookOutcome("retry", None, type(exc).__name__)
    except Exception as exc:  # e.g. an invalid URL that slipped past validation
        return WebhookOutcome("retry", None, type(exc).__name__)
    finally:
        if own:
            http.close()
    if 200 <= resp.status_code < 300:
        return WebhookOutcome("delivered", resp.status_code)
    if resp.status_code == 410:
        return WebhookOutcome("gone", resp.status_code)
    return WebhookOutcome("retry", resp.status_code)
