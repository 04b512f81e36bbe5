"""How a member is recognised in a value: the login id, an email address, a mobile number.

A guest order, a review or a lookup row often carries no member key, only the address or the
number the member typed. To find such rows as the member's, both sides are reduced to one
canonical form before they are compared: the value the member table holds and the value in the
row. The rules are deliberately plain, so `datamap explain` can state them and an operator can
check them by hand:

- **email**: surrounding spaces dropped, lower-cased (the local part too: Korean sites and their
  mail hosts treat it case-blind, and a false match is caught by the linkage check, while a
  missed one leaves the member's data behind);
- **mobile**: only the digits kept; a leading ``+82`` or ``82`` country code becomes ``0``;
  the result must be a Korean mobile number (``01x`` and 10 or 11 digits), anything else is not
  a mobile number and matches nothing;
- **login**: surrounding spaces dropped, compared case-blind (MySQL's usual collations do the
  same for a login column).

Not to be confused with :mod:`lifecycle.datamap.identifiers`, the unique identifiers
(고유식별정보: RRN, passport, ...) the law restricts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import func

IdentityKind = Literal["login", "email", "mobile"]
KINDS: tuple[IdentityKind, ...] = ("login", "email", "mobile")

_NOT_DIGIT = re.compile(r"\D")
_MOBILE = re.compile(r"01[016789]\d{7,8}")

# What `datamap explain` prints for each kind.
RULES: dict[IdentityKind, str] = {
    "login": "spaces trimmed, case-blind",
    "email": "spaces trimmed, lower-cased",
    "mobile": "digits only, +82/82 -> 0, must be a Korean mobile number (01x, 10-11 digits)",
}


def normalise_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text.count("@") != 1 or text.startswith("@") or text.endswith("@") or " " in text:
        return None
    return text


def normalise_mobile(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    digits = _NOT_DIGIT.sub("", value)
    if value.strip().startswith("+82") or (digits.startswith("82") and len(digits) in (11, 12)):
        digits = "0" + digits[2:]
    return digits if _MOBILE.fullmatch(digits) else None


def normalise_login(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower()


NORMALISE: dict[IdentityKind, Callable[[Any], str | None]] = {
    "login": normalise_login,
    "email": normalise_email,
    "mobile": normalise_mobile,
}


def normalise(kind: IdentityKind, value: Any) -> str | None:
    """``value`` in ``kind``'s canonical form, or None when it is not such a value."""
    return NORMALISE[kind](value)


def sql_normalised(kind: IdentityKind, column: Any, dialect: str) -> Any:
    """A SQL expression giving ``column`` in ``kind``'s canonical form on ``dialect``
    (``postgresql``, ``mysql``/``mariadb`` or ``sqlite``), to compare with :func:`normalise`'s
    output. For mobile numbers it keeps the digits; the country-code rule is applied to the
    member's side only, so a row holding ``+82 10-…`` is found through both ``8210…`` and
    ``010…`` (see :func:`mobile_forms`)."""
    if kind in ("login", "email"):
        return func.lower(func.trim(column))
    if dialect == "postgresql":
        return func.regexp_replace(column, "[^0-9]", "", "g")
    if dialect in ("mysql", "mariadb"):
        return func.regexp_replace(column, "[^0-9]", "")
    # SQLite has no regexp_replace: the separators people type.
    out = column
    for sep in ("-", " ", ".", "(", ")", "+"):
        out = func.replace(out, sep, "")
    return out


def mobile_forms(canonical: str) -> list[str]:
    """The digit strings a stored number may reduce to: ``010…`` and ``8210…``."""
    return [canonical, "82" + canonical[1:]]
