"""Personal data by pattern: which kinds a text value holds (email, phone, RRN, card, IP, address).

Pure: no database, no I/O. ``lifecycle datamap discover`` (:mod:`lifecycle.datamap.discover`)
runs :func:`kinds_in` over sampled column values to find personal data the map does not cover.
Only kinds are returned, never the matched text, so nothing downstream can leak a value.

Each pattern is tuned to cut false positives rather than to catch every spelling: an RRN must
pass its check digit, a card number the Luhn check and a known issuer prefix, a phone number
a Korean prefix, an address a 시/도 followed by a 시/군/구 and a road name (…로/…길).
JSON and PHP ``serialize()`` blobs are opened and the strings inside scanned too; what is found
there is reported as ``json:KIND`` or ``php:KIND``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

EMAIL = "email"
MOBILE = "mobile"
LANDLINE = "landline"
RRN = "rrn"
CARD = "card"
IPV4 = "ipv4"
IPV6 = "ipv6"
ADDRESS = "address"
KINDS = (EMAIL, MOBILE, LANDLINE, RRN, CARD, IPV4, IPV6, ADDRESS)

# Values longer than this are scanned in their first part only: a bounded cost per value.
MAX_SCAN_CHARS = 20_000

_EMAIL_RE = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"
)
_SEP = r"[ \t.\-]{0,2}"
# A phone number stands on its own: no ASCII letter or digit either side, so the digits inside
# a hex or base-62 token (a session or authorisation token) are not one. Hangul may touch it
# (전화02-123-4567), as Korean text writes it.
_ALNUM = "0-9A-Za-z"
# 010, 011, 016-019, also as +82 10 … (the leading 0 dropped, sometimes kept in brackets).
_MOBILE_RE = re.compile(
    rf"(?<![{_ALNUM}+])(?:\+82{_SEP}\(?0?\)?1[016789]|01[016789])\)?{_SEP}\d{{3,4}}{_SEP}\d{{4}}"
    rf"(?![{_ALNUM}])"
)
# Seoul 02, the provinces 031-064, internet phones 070, with or without +82.
_AREA = r"(?:2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70)"
_LANDLINE_RE = re.compile(
    rf"(?<![{_ALNUM}+])(?:\+82{_SEP}\(?0?\)?{_AREA}|\(?0{_AREA}\)?){_SEP}\d{{3,4}}{_SEP}\d{{4}}"
    rf"(?![{_ALNUM}])"
)
_RRN_RE = re.compile(r"(?<![\d-])(\d{2})(\d{2})(\d{2})[ \-]?([1-8])(\d{6})(?![\d-])")
_CARD_RE = re.compile(r"(?<![\d-])\d(?:[ \-]?\d){12,18}(?![\d-])")
_IPV4_RE = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
)
_IPV6_RE = re.compile(
    r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])"
)
_SIDO = (
    r"(?:서울|부산|대구|인천|광주|대전|울산|세종|경기|강원|충청북|충청남|충북|충남|전라북|전라남"
    r"|전북|전남|경상북|경상남|경북|경남|제주)"
)
_ADDRESS_RE = re.compile(
    _SIDO + r"[가-힣]{0,5}\s+(?:[가-힣]{1,6}[시군구]\s+){1,2}(?:[가-힣]{1,8}[읍면]\s+)?"
    r"[가-힣A-Za-z0-9.]{1,20}(?:로|길)\s*\d{1,5}"
)
# PHP serialize(): s:LEN:"…"; the strings inside an a:N:{…} or O:…:{…}.
_PHP_RE = re.compile(r'^(?:a|O):\d+:(?:"[^"]*":\d+:)?\{')
_PHP_STRING_RE = re.compile(r's:\d+:"(.*?)";', re.S)
_RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


def rrn_valid(digits: str) -> bool:
    """13 digits: a possible birth date (YYMMDD), then a last digit that is the check digit.

    RRNs issued since October 2020 have no check digit (the digits after the gender digit are
    assigned at random), so most of those are not recognised: the check digit is what keeps a
    date followed by any seven digits from counting.
    """
    if len(digits) != 13 or not digits.isdigit():
        return False
    month, day = int(digits[2:4]), int(digits[4:6])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(d) * w for d, w in zip(digits[:12], _RRN_WEIGHTS, strict=True))
    return (11 - total % 11) % 10 == int(digits[12])


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_issuer(digits: str) -> bool:
    """A prefix some issuer uses (Visa, Mastercard, Amex, JCB, UnionPay, Diners, Discover, and
    the Korean domestic 9-series): plain counters and order numbers mostly start elsewhere."""
    n = len(digits)
    if digits[0] == "4":
        return n in (13, 16, 19)
    two, four = int(digits[:2]), int(digits[:4])
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16
    if two in (34, 37):
        return n == 15
    if two in (35, 62, 65) or digits[:4] == "6011" or two == 36 or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19
    if digits[0] == "9":
        return n == 16
    return False


def card_valid(digits: str) -> bool:
    return (
        13 <= len(digits) <= 19
        and len(set(digits)) > 1
        and _card_issuer(digits)
        and luhn_valid(digits)
    )


def _ipv6(token: str) -> bool:
    if token.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", token):
        return False
    try:
        ipaddress.IPv6Address(token)
    except ValueError:
        return False
    return True


def kinds_in_text(text: str) -> set[str]:
    """The kinds of personal data found in plain text (no blob decoding)."""
    text = text[:MAX_SCAN_CHARS]
    found: set[str] = set()
    if "@" in text and _EMAIL_RE.search(text):
        found.add(EMAIL)
    if any(ch.isdigit() for ch in text):
        if _MOBILE_RE.search(text):
            found.add(MOBILE)
        if _LANDLINE_RE.search(text):
            found.add(LANDLINE)
        if any(rrn_valid("".join(m.groups())) for m in _RRN_RE.finditer(text)):
            found.add(RRN)
        for m in _CARD_RE.finditer(text):
            digits = re.sub(r"\D", "", m.group(0))
            if card_valid(digits) and not (RRN in found and len(digits) == 13):
                found.add(CARD)
                break
        if "." in text and _IPV4_RE.search(text):
            found.add(IPV4)
    if ":" in text and any(_ipv6(m.group(0)) for m in _IPV6_RE.finditer(text)):
        found.add(IPV6)
    if _ADDRESS_RE.search(text):
        found.add(ADDRESS)
    return found


def _json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # A phone or card number stored as a JSON number.
        yield str(value)


def _blob(text: str) -> tuple[str, list[str]] | None:
    """("json" | "php", the strings inside) when ``text`` is a JSON or PHP-serialized blob."""
    head = text.lstrip()[:1]
    if head in ("{", "["):
        try:
            return "json", list(_json_strings(json.loads(text)))
        except ValueError:
            return None
    if _PHP_RE.match(text):
        return "php", _PHP_STRING_RE.findall(text)
    return None


def kinds_in(value: Any) -> set[str]:
    """The kinds of personal data a column value holds: plain kinds for text, ``json:KIND`` /
    ``php:KIND`` for a serialized blob (its inner strings scanned one by one). Bytes are read
    as UTF-8 where they decode; other types (numbers, dates) hold no pattern we look for."""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value)[:MAX_SCAN_CHARS].decode("utf-8")
        except UnicodeDecodeError:
            return set()
    elif isinstance(value, dict | list):
        return {f"json:{k}" for s in _json_strings(value) for k in kinds_in_text(s)}
    if not isinstance(value, str) or not value.strip():
        return set()
    blob = _blob(value[:MAX_SCAN_CHARS] if len(value) > MAX_SCAN_CHARS else value)
    if blob is not None:
        form, strings = blob
        return {f"{form}:{k}" for s in strings for k in kinds_in_text(s)}
    return kinds_in_text(value)
