"""What each console role may do. Checked on the server for every page and action; the pages
only hide what a role may not do, they never decide it."""

from __future__ import annotations

from models.console import ConsoleRole

ROLE_LABELS = {
    ConsoleRole.OFFICER.value: "개인정보 보호책임자",
    ConsoleRole.HANDLER.value: "개인정보취급자",
    ConsoleRole.AUDITOR.value: "감사자",
}

_ALL = frozenset(ROLE_LABELS)
_STAFF = frozenset({ConsoleRole.OFFICER.value, ConsoleRole.HANDLER.value})
_OVERSIGHT = frozenset({ConsoleRole.OFFICER.value, ConsoleRole.AUDITOR.value})
_OFFICER = frozenset({ConsoleRole.OFFICER.value})

PERMISSIONS: dict[str, frozenset[str]] = {
    "requests.view": _ALL,
    # The requester's name and contact: only who handles the request needs them.
    "requests.personal": _STAFF,
    "requests.enter": _STAFF,
    "requests.extend": _STAFF,
    "requests.answer": _STAFF,
    # Refusing a data subject's right is the officer's decision (제31조 업무).
    "requests.refuse": _OFFICER,
    "holds.view": _ALL,
    # Stopping (and resuming) destruction is the officer's decision (제31조 업무), as is the
    # handling of a breach: opening it, telling members, the report, closing it (제34조).
    "holds.change": _OFFICER,
    "incidents.view": _ALL,
    "incidents.change": _OFFICER,
    "ledger.view": _ALL,
    # Whose destructions: a member filter reads personal data, for the staff only.
    "ledger.member": _STAFF,
    # A paper destruction is entered by whoever carried it out or saw it done.
    "ledger.paper": _STAFF,
    # The officer confirms the destructions (표준 개인정보 보호지침 제10조④); the account's
    # display name must also be in LIFECYCLE_PRIVACY_OFFICERS (register.check_officer).
    "ledger.signoff": _OFFICER,
    # The handlers' own access records are for oversight (안전성 확보조치 기준 제8조).
    "accesslog.view": _OVERSIGHT,
    "accesslog.review": _OVERSIGHT,
    "findings.view": _ALL,
    # Personal data the map does not cover may stay only on the officer's word (제31조 업무).
    "findings.acknowledge": _OFFICER,
    # Handing an access package (열람) over to the requester: who handles the request.
    "requests.handover": _STAFF,
}


def may(role: str, permission: str) -> bool:
    return role in PERMISSIONS.get(permission, frozenset())
