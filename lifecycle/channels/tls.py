"""Transport security for everything that carries personal data off this host.

Personal data goes to third parties and members only over verified TLS (``https://`` webhooks,
``smtp+starttls://`` or ``smtps://``). Plain transports are allowed to loopback only (a local
MTA or receiver on the same host), or to another host when the operator sets
``LIFECYCLE_ALLOW_PLAIN_SMTP=true``, which every process that uses it logs as a warning.
``LIFECYCLE_CA_FILE`` adds a private CA (e.g. an internal relay's) to the system's trust store;
certificate and host-name checks are never turned off.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl

from lifecycle.core.settings import get_settings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def client_context() -> ssl.SSLContext:
    """A verifying client context: the system's CAs plus ``LIFECYCLE_CA_FILE`` if set."""
    ctx = ssl.create_default_context()
    ca = get_settings().ca_file
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    return ctx
