"""The discover patterns on their own: no server."""

from __future__ import annotations

import json

import pytest

from lifecycle.datamap.patterns import (
    ADDRESS,
    CARD,
    EMAIL,
    IPV4,
    IPV6,
    LANDLINE,
    MOBILE,
    RRN,
    card_valid,
    kinds_in,
    luhn_valid,
    rrn_valid,
)

# Made-up numbers that pass the checks: an RRN with a valid check digit, a Visa test card.
GOOD_RRN = "800101-1234560"
GOOD_CARD = "4111 1111 1111 1111"


def _rrn_check(twelve: str) -> str:
    w = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    return twelve + str((11 - sum(int(d) * k for d, k in zip(twelve, w, strict=True)) % 11) % 10)


def test_the_fixture_rrn_is_valid_and_one_digit_off_is_not() -> None:
    assert _rrn_check("800101123456") == GOOD_RRN.replace("-", "")
    assert rrn_valid("8001011234560")
    assert not rrn_valid("8001011234567")
    assert not rrn_valid("8013011234563")  # month 13


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("연락: lee.mh7@mail.example 로 주세요", {EMAIL}),
        ("010-2345-6789", {MOBILE}),
        ("01023456789", {MOBILE}),
        ("010 2345 6789", {MOBILE}),
        ("010.2345.6789", {MOBILE}),
        ("+82 10-2345-6789", {MOBILE}),
        ("+82-10-2345-6789", {MOBILE}),
        ("+821023456789", {MOBILE}),
        ("02-123-4567", {LANDLINE}),
        ("(031) 234-5678", {LANDLINE}),
        ("070-1234-5678", {LANDLINE}),
        ("+82 2 123 4567", {LANDLINE}),
        (f"주민번호 {GOOD_RRN}", {RRN}),
        ("8001011234560", {RRN}),
        (f"카드 {GOOD_CARD}", {CARD}),
        ("5500-0000-0000-0004", {CARD}),
        ("접속 203.0.113.7", {IPV4}),
        ("2001:db8::1", {IPV6}),
        ("fe80::1ff:fe23:4567:890a", {IPV6}),
        ("서울특별시 마포구 월드컵로 1", {ADDRESS}),
        ("경기도 성남시 분당구 판교역로 235", {ADDRESS}),
        ("부산광역시 해운대구 센텀중앙로 79", {ADDRESS}),
        ("제주특별자치도 제주시 첨단로 242", {ADDRESS}),
    ],
)
def test_each_kind_is_found(text: str, kinds: set[str]) -> None:
    assert kinds_in(text) == kinds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello world",
        "8001011234567",  # RRN shape, wrong check digit
        "4111 1111 1111 1112",  # fails Luhn
        "1900000000000001",  # an order number: no issuer prefix
        "2026112014300100",
        "0000000000000000",
        "2026-11-20 14:30:00",  # a timestamp is not an IPv6 address
        "10:11:00",
        "00:1a:2b:3c:4d:5e",  # a MAC address
        "version 1.2.3",
        "999.1.1.1",
        "02-12",
        "1588-1234",  # a business number, not a person's
        "서울에서 만나요",  # a city alone is not an address
        "mailto: nobody at example dot com",
        "010-2345-678",  # one digit short
        "3010-2345-6789",  # digits before the prefix
    ],
)
def test_look_alikes_are_not_found(text: str) -> None:
    assert kinds_in(text) == set()


@pytest.mark.parametrize(
    "token",
    [
        # Authorisation and session tokens (hex, base-62) whose digit runs look like numbers.
        "9f3a0212345678c4e1b7d2a0",  # 02 123 4567 inside hex
        "e7b20311234567800fa1c3d9",  # 031 1234 5678 followed by more digits
        "ab0311234567ba",  # 031 1234 5678 with letters either side
        "c0a70101234567890d",  # 010 1234 5678 inside hex
        "Kq7x07012345678Zr",  # 070 1234 5678 inside base-62
    ],
)
def test_phone_digits_inside_a_token_are_not_a_phone_number(token: str) -> None:
    assert kinds_in(token) == set()
    assert kinds_in(f"token={token}&next=1") == set()


def test_a_real_phone_number_next_to_a_token_is_still_found() -> None:
    text = "인증 9f3a0212345678c4e1b7d2a0, 매장 02-123-4567 / 본사 031-1234-5678"
    assert kinds_in(text) == {LANDLINE}
    assert kinds_in("전화02-123-4567로") == {LANDLINE}  # Hangul may touch it
    assert kinds_in("hp:010-2345-6789.") == {MOBILE}
    assert kinds_in("ab9f3a01023456789 010-2345-6789") == {MOBILE}


def test_several_kinds_in_one_value() -> None:
    text = "이민호 010-2345-6789, lee@mail.example, 서울특별시 마포구 월드컵로 1 (10.0.0.1)"
    assert kinds_in(text) == {MOBILE, EMAIL, ADDRESS, IPV4}


def test_json_blobs_are_opened() -> None:
    blob = json.dumps({"buyer": {"email": "a@b.example", "tel": "01023456789"}, "amt": 15000})
    assert kinds_in(blob) == {f"json:{EMAIL}", f"json:{MOBILE}"}
    # Non-ASCII escaped as \\uXXXX is read as the text it encodes.
    assert kinds_in(json.dumps({"addr": "서울특별시 마포구 월드컵로 1"})) == {f"json:{ADDRESS}"}
    # A phone number stored as a JSON number.
    assert kinds_in(json.dumps([1023456789, "x"])) == set()  # no leading 0: not a number we know
    assert kinds_in({"ip": "203.0.113.9"}) == {f"json:{IPV4}"}  # PostgreSQL JSON arrives parsed
    assert kinds_in("{not json 010-2345-6789") == {MOBILE}  # broken JSON: scanned as text


def test_php_serialized_blobs_are_opened() -> None:
    php = 'a:2:{s:5:"email";s:11:"a@b.example";s:2:"hp";s:13:"010-2345-6789";}'
    assert kinds_in(php) == {f"php:{EMAIL}", f"php:{MOBILE}"}
    obj = 'O:8:"stdClass":1:{s:2:"ip";s:11:"203.0.113.9";}'
    assert kinds_in(obj) == {f"php:{IPV4}"}
    assert kinds_in('a:1:{s:1:"n";i:5;}') == set()


def test_bytes_and_other_types() -> None:
    assert kinds_in(b"lee@mail.example") == {EMAIL}
    assert kinds_in(b"\xff\xfe") == set()
    assert kinds_in(1023456789) == set()
    assert kinds_in(None) == set()


def test_checks() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert card_valid("4111111111111111")
    assert card_valid("378282246310005")  # Amex
    assert not card_valid("1111111111111117")  # passes Luhn, no issuer


def test_long_values_are_scanned_within_a_bound() -> None:
    far = "x" * 50_000 + " lee@mail.example"
    assert kinds_in(far) == set()
    near = "lee@mail.example " + "x" * 50_000
    assert kinds_in(near) == {EMAIL}
