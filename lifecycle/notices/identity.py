"""The Message-ID of a member notice: ``notice-<notice>-<member>@<install>.<mail domain>``.

Stable per notice and member (that is what `reconcile` looks for in the MTA's log) and unique
per install: ``<install>`` is the first 16 hex digits of the install id, so another install's
messages in a shared log (or those of this site's previous, re-created database, which had
another id) never match ours.
"""

from __future__ import annotations

import re

from lifecycle.core.install import install_id
from lifecycle.core.settings import get_settings

LABEL_LEN = 16


def install_label() -> str:
    return install_id()[:LABEL_LEN]


def message_id_domain() -> str:
    mail_domain = get_settings().mail_from.rpartition("@")[2] or "localhost"
    return f"{install_label()}.{mail_domain}"


def message_id(notice_id: int, member_id: int, domain: str) -> str:
    return f"notice-{notice_id}-{member_id}@{domain}"


def our_ids_pattern(label: str) -> re.Pattern[bytes]:
    """Our Message-IDs in a log line: groups (notice, member).

    The domain must start with this install's label; the mail domain after it may differ from
    today's (LIFECYCLE_MAIL_FROM changed since the notice went out) without losing a match.
    """
    return re.compile(
        rb"(?<![\w.-])notice-(\d+)-(\d+)@" + re.escape(label.encode()) + rb"\.[A-Za-z0-9.-]+"
        rb"(?![\w-])"
    )
