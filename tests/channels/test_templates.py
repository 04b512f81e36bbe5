"""What the member notices promise must be what the product does and what the law gives."""

from __future__ import annotations

from datetime import date

from lifecycle.channels.templates import member_notice


def test_a_refusal_names_the_remedies_a_private_site_owes_and_not_an_administrative_appeal() -> (
    None
):
    for kind, ctx in (
        ("request_answer", {"request_kind": "access", "outcome": "refused", "reason": "본인 아님"}),
        ("request_postponed", {"request_kind": "access", "reason": "자료 확인 중"}),
    ):
        body = member_notice(kind, {**ctx, "request_id": 5, "received_date": date(2026, 12, 1),
                                    "completed_date": date(2026, 12, 3),
                                    "due_date": date(2026, 12, 20)}).body  # fmt: skip
        # 행정심판 lies against a public body's 처분 (행정심판법 제3조); this site is private.
        assert "행정심판" not in body and "행정소송" not in body
        assert "보호책임자에게 서면 또는 전자우편으로 이의를 제기" in body
        assert "개인정보분쟁조정위원회" in body and "118" in body


def test_the_dormancy_notice_says_what_the_engine_does() -> None:
    body = member_notice(
        "dormancy_advance", {"inactive_days": 365, "separation_date": date(2027, 1, 5)}
    ).body
    # Dormancy is a purpose end: data no law keeps is destroyed, the rest archived apart.
    assert "그 밖의 개인정보는 파기합니다" in body
    assert "법정 기간 동안 다른 개인정보와 분리하여 보관한 뒤 파기" in body
    assert "다른 회원의 개인정보와\n분리하여 별도로 저장" not in body
    assert "2027년 1월 5일" in body
