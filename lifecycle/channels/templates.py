"""Korean notice templates (개인정보 보호법 notices to members and third parties).

`string.Template` with ``safe_substitute`` is deliberate: a ``$`` in an operator's policy text
must not break rendering, and there is no template language to inject into. Templates name
*which* items changed, never their values: values go only to third parties that received the
old ones, in the signed correction notification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from string import Template
from typing import Any

from lifecycle.core.settings import get_settings

# Korean labels for member fields, used when a notice lists what was corrected.
FIELD_LABELS: dict[str, str] = {
    "name": "성명",
    "birth_date": "생년월일",
    "sex": "성별",
    "login_id": "아이디",
    "password_question": "비밀번호 질문",
    "home_phone": "자택 전화번호",
    "home_address": "자택 주소",
    "mobile": "휴대전화번호",
    "email": "이메일",
    "job": "직업",
    "company": "회사명",
    "department": "부서",
    "title": "직책",
    "hobbies": "취미",
    "marital_status": "결혼 여부",
    "anniversaries": "기념일",
    "rrn": "주민등록번호",
    # Other tables' columns, named when a breach notice lists the items exposed.
    "amount": "결제 금액",
    "method": "결제 수단",
    "card_last4": "카드번호 끝 4자리",
    "payer_name": "결제자 성명",
    "paid_at": "결제 일시",
    "notes": "상담 내용",
    "diagnosis": "진단명",
    "session_at": "상담 일시",
    "counsellor": "상담사",
    "counselling_consent_at": "민감정보 처리 동의 일시",
    "password_hash": "비밀번호(암호화된 값)",
    "ip": "IP 주소",
    "accessed_at": "접속 일시",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


_POLICY_SUBJECT = Template("[$site] 개인정보처리방침 변경 안내 (버전 $version)")
_POLICY_BODY = Template(
    """회원님, 안녕하세요. $site입니다.

$site의 개인정보처리방침이 다음과 같이 변경되어 개별 안내드립니다.

■ 변경 버전: $version
■ 시행일: $effective_date

■ 제목: $title

$body

변경된 개인정보처리방침은 시행일부터 적용됩니다. 문의 사항은 개인정보 보호책임자에게
연락해 주시기 바랍니다.

본 메일은 「개인정보 보호법」에 따른 개별 통지로, 수신 거부와 관계없이 발송됩니다.
"""
)

_WITHDRAWAL_SUBJECT = Template("[$site] 회원탈퇴 처리 완료 안내")
_WITHDRAWAL_BODY = Template(
    """회원님, 안녕하세요. $site입니다.

요청하신 회원탈퇴가 $completed_date에 처리 완료되었습니다. (접수번호 $request_id)

회원님의 개인정보는 지체 없이 파기되었습니다. 다만 관계 법령에 따라 보존해야 하는
정보(계약·결제 기록 등)는 법정 기간 동안, 회원님이 탈퇴 후 보관에 별도로 동의하신 정보는
동의하신 기간 동안 별도의 데이터베이스에 분리·보관되며, 그 기간이 지나면 파기됩니다.
분리 보관된 정보는 법령 또는 동의에서 정한 목적 외에는 이용되지 않습니다.

그동안 $site를 이용해 주셔서 감사합니다.
"""
)

_CORRECTION_SUBJECT = Template("[$site] 개인정보 정정 완료 안내")
_CORRECTION_BODY = Template(
    """회원님, 안녕하세요. $site입니다.

요청하신 개인정보 정정이 $completed_date에 처리 완료되었습니다. (접수번호 $request_id)

■ 정정된 항목: $fields

정정 전의 개인정보를 제공받은 제3자에게는 정정 결과를 통지하였습니다.
정정을 요청하지 않으셨다면 개인정보 보호책임자에게 바로 연락해 주시기 바랍니다.
"""
)

_DORMANCY_SUBJECT = Template("[$site] 휴면 계정 전환 사전 안내")
_DORMANCY_BODY = Template(
    """회원님, 안녕하세요. $site입니다.

회원님의 계정은 $inactive_days일 동안 로그인 기록이 없어 $separation_date에 휴면 계정으로
전환될 예정입니다. 휴면 계정으로 전환되면 회원님의 개인정보 중 관계 법령에 따라 보존해야
하는 정보(계약·결제 기록 등)는 법정 기간 동안 다른 개인정보와 분리하여 보관한 뒤 파기하고,
그 밖의 개인정보는 파기합니다. 파기된 정보는 복구할 수 없습니다.

휴면 전환을 원하지 않으시면 $separation_date 전에 로그인해 주시기 바랍니다.
"""
)

_THIRD_PARTY_SUBJECT = Template("[$site] 개인정보 정정 결과 통지 (접수번호 $request_id)")
_THIRD_PARTY_BODY = Template(
    """$recipient 담당자님께,

$site는 「개인정보 보호법」 제36조에 따라 귀사에 제공한 개인정보의 정정 결과를 통지합니다.

■ 회원 번호: $member_id
■ 정정 완료일: $completed_date
■ 정정된 항목과 정정 후의 값:
$values

정정 전의 값은 더 이상 이용하지 마시고, 귀사가 보유한 정보를 위 값으로 정정해 주시기
바랍니다. (메시지 ID $message_id)
"""
)


# The request kinds as the law names them, for answers to requesters.
KIND_LABELS: dict[str, str] = {
    "withdrawal": "회원탈퇴(개인정보 파기)",
    "correction": "정정",
    "access": "열람",
    "erasure": "삭제",
    "suspension": "처리정지",
    "suspension_lift": "처리정지 해제",
    "consent_withdrawal": "동의 철회",
}

# How to object to a refusal or postponement (시행령 제41조·제43조·제44조: the notice states
# the reason and how to raise an objection). No 행정심판: it lies against a 행정청's 처분
# (행정심판법 제2조·제3조), which a private site's answer is not; only a public body's notice
# owes it.
_OBJECTION = """■ 이의제기 방법
이 결정에 이의가 있으시면 본 안내를 받으신 날부터 30일 이내에 접수번호를 적어 개인정보
보호책임자에게 서면 또는 전자우편으로 이의를 제기하실 수 있으며, 10일 이내에 검토 결과를
알려드립니다. 또한 개인정보분쟁조정위원회(www.kopico.go.kr, 국번 없이 1833-6972)에 분쟁조정을,
개인정보침해신고센터(privacy.kisa.or.kr, 국번 없이 118)에 상담·신고를 신청하실 수 있습니다."""

_ANSWER_SUBJECT = Template(
    "[$site] 개인정보 $kind_label 요구 처리 결과 안내 (접수번호 $request_id)"
)
_ANSWER_DONE = Template(
    """$addressee, 안녕하세요. $site입니다.

$received_date에 접수된 개인정보 $kind_label 요구(접수번호 $request_id)를 $completed_date에
처리하였음을 알려드립니다.

$detail
문의 사항은 개인정보 보호책임자에게 연락해 주시기 바랍니다.
"""
)
_ANSWER_REFUSED = Template(
    """$addressee, 안녕하세요. $site입니다.

$received_date에 접수된 개인정보 $kind_label 요구(접수번호 $request_id)는 다음 사유로
처리할 수 없어 거절되었음을 알려드립니다. (통지일 $completed_date)

■ 거절 사유: $reason

$objection
"""
)
_POSTPONED_SUBJECT = Template("[$site] 개인정보 $kind_label 연기 안내 (접수번호 $request_id)")
_POSTPONED_BODY = Template(
    """$addressee, 안녕하세요. $site입니다.

$received_date에 접수된 개인정보 $kind_label 요구(접수번호 $request_id)에 대하여 다음 사유로
$kind_label을 $due_date까지 연기하게 되었음을 「개인정보 보호법 시행령」 제41조제4항에 따라
알려드립니다. 연기 사유가 없어지면 지체 없이 $kind_label하게 해 드립니다.

■ 연기 사유: $reason

$objection
"""
)


def _date(value: Any) -> str:
    if isinstance(value, date):
        return f"{value.year}년 {value.month}월 {value.day}일"
    return str(value)


def field_labels(fields: list[str]) -> str:
    return ", ".join(FIELD_LABELS.get(f, f) for f in fields)


def policy_notice(version: str, title: str, body: str, effective_date: date) -> Rendered:
    ctx = {
        "site": get_settings().organisation(),
        "version": version,
        "title": title,
        "body": body.strip(),
        "effective_date": _date(effective_date),
    }
    return Rendered(_POLICY_SUBJECT.safe_substitute(ctx), _POLICY_BODY.safe_substitute(ctx))


def member_notice(kind: str, context: dict[str, Any]) -> Rendered:
    """Render a notice to one member. ``context`` holds ids, dates and field *names* only."""
    ctx = {"site": get_settings().organisation(), **context}
    for key in ("completed_date", "separation_date", "received_date", "due_date"):
        if key in ctx:
            ctx[key] = _date(ctx[key])
    if kind == "withdrawal_completed":
        return Rendered(
            _WITHDRAWAL_SUBJECT.safe_substitute(ctx), _WITHDRAWAL_BODY.safe_substitute(ctx)
        )
    if kind == "correction_completed":
        ctx["fields"] = field_labels(list(context.get("fields", [])))
        return Rendered(
            _CORRECTION_SUBJECT.safe_substitute(ctx), _CORRECTION_BODY.safe_substitute(ctx)
        )
    if kind == "dormancy_advance":
        return Rendered(_DORMANCY_SUBJECT.safe_substitute(ctx), _DORMANCY_BODY.safe_substitute(ctx))
    if kind in ("request_answer", "request_postponed"):
        ctx["kind_label"] = KIND_LABELS.get(str(context.get("request_kind")), "열람등")
        ctx.setdefault("addressee", "회원님")
        ctx["objection"] = _OBJECTION
        if kind == "request_postponed":
            body = _POSTPONED_BODY
        elif context.get("outcome") == "refused":
            body = _ANSWER_REFUSED
        else:
            body = _ANSWER_DONE
        subject = _POSTPONED_SUBJECT if kind == "request_postponed" else _ANSWER_SUBJECT
        return Rendered(subject.safe_substitute(ctx), body.safe_substitute(ctx))
    raise ValueError(f"unknown member notice kind {kind!r}")


def third_party_correction(
    recipient: str,
    member_id: int,
    request_id: int,
    message_id: str,
    values: dict[str, Any],
    completed_date: date,
) -> Rendered:
    """The email form of a correction notification: corrected values only, never old ones."""
    lines = "\n".join(f"  - {FIELD_LABELS.get(k, k)} ({k}): {v}" for k, v in sorted(values.items()))
    ctx = _third_party_context(recipient, member_id, request_id, message_id, completed_date)
    ctx["values"] = lines
    return Rendered(
        _THIRD_PARTY_SUBJECT.safe_substitute(ctx), _THIRD_PARTY_BODY.safe_substitute(ctx)
    )


def _third_party_context(
    recipient: str, member_id: int, request_id: int, message_id: str, completed_date: date
) -> dict[str, Any]:
    """What every message to a recipient names: who sends, to whom, about which request."""
    return {
        "site": get_settings().organisation(),
        "recipient": recipient,
        "member_id": member_id,
        "request_id": request_id,
        "message_id": message_id,
        "completed_date": _date(completed_date),
    }


_DELETION_SUBJECT = Template("[$site] 개인정보 삭제 요청 통지 (접수번호 $request_id)")
_DELETION_BODY = Template(
    """$recipient 담당자님께,

$site는 정보주체의 요구에 따라 귀사에 제공한 아래 개인정보를 삭제하였으며, 「개인정보 보호법」
제36조·제37조에 따라 귀사가 보유한 같은 정보의 이용을 중지하고 삭제해 주실 것을 요청합니다.

■ 회원 번호: $member_id
■ 삭제일: $completed_date
■ 삭제 대상 항목:
$fields

처리 결과를 회신해 주시기 바랍니다. (메시지 ID $message_id)
"""
)


def third_party_deletion(
    recipient: str,
    member_id: int,
    request_id: int,
    message_id: str,
    fields: list[str],
    completed_date: date,
) -> Rendered:
    """The email form of a deletion notice: which fields to delete, never a value."""
    lines = "\n".join(f"  - {FIELD_LABELS.get(f, f)} ({f})" for f in sorted(fields))
    ctx = _third_party_context(recipient, member_id, request_id, message_id, completed_date)
    ctx["fields"] = lines
    return Rendered(_DELETION_SUBJECT.safe_substitute(ctx), _DELETION_BODY.safe_substitute(ctx))


# -- personal-data breach (개인정보 유출등, 개인정보 보호법 제34조) --------------------------------

# Korean names of the data map's categories, for the items a breach notice lists.
CATEGORY_LABELS: dict[str, str] = {
    "profile": "기본 인적사항",
    "contact": "연락처",
    "rrn": "주민등록번호",
    "credentials": "계정 정보",
    "counselling": "상담기록(민감정보)",
    "guardian": "법정대리인 정보",
    "contract": "계약·청약철회 기록",
    "payment": "대금결제·공급 기록",
    "tax": "세금계산서 등 세무 증빙",
    "complaint": "불만·분쟁처리 기록",
    "advertising": "표시·광고 기록",
    "access_log": "접속 기록",
    "service_usage": "서비스 이용 기록",
    "uploads": "업로드 파일",
    "hobbies": "취미",
}

# Where a member can turn for help whatever the site does (법 제34조①4호 피해 구제절차).
BREACH_HELP = """개인정보 침해로 피해를 입으셨다면 개인정보침해신고센터(privacy.kisa.or.kr,
국번 없이 118)에 상담·신고를, 개인정보분쟁조정위원회(www.kopico.go.kr, 1833-6972)에
분쟁조정을 신청하실 수 있습니다."""

_BREACH_SUBJECT = Template("[$site] 개인정보 유출 사실 안내")
_BREACH_BODY = Template(
    """회원님, 안녕하세요. $site입니다.

회원님의 개인정보가 유출된 사실을 확인하여 「개인정보 보호법」 제34조제1항에 따라 알려드립니다.
심려를 끼쳐 드려 깊이 사과드립니다.

■ 유출된 개인정보의 항목
$items

■ 유출된 시점과 그 경위
유출 기간: $window
확인한 시점: $detected
$how

■ 피해를 최소화하기 위하여 회원님께서 하실 수 있는 방법
$advice

■ $site의 대응조치 및 피해 구제절차
$measures

$help

■ 피해 신고·문의를 접수하는 담당부서 및 연락처
$contact

본 메일은 「개인정보 보호법」에 따른 개별 통지로, 수신 거부와 관계없이 발송됩니다.
(사고번호 $incident_id)
"""
)


def breach_notice(context: dict[str, Any]) -> Rendered:
    """The notice to an affected member: the five items of 법 제34조① (the same text for every
    member; it names items, never a member's values)."""
    ctx = {"site": get_settings().organisation(), "help": BREACH_HELP, **context}
    return Rendered(_BREACH_SUBJECT.safe_substitute(ctx), _BREACH_BODY.safe_substitute(ctx))


_BREACH_REPORT = Template(
    """개인정보 유출등 신고서 (초안)
=================================

작성: $drafted (사고번호 $incident_id)
근거: 「개인정보 보호법」 제34조제3항, 같은 법 시행령 제40조
제출처: 개인정보보호위원회 또는 한국인터넷진흥원(KISA) (개인정보 포털 privacy.go.kr 등)
이 문서는 작업자가 만든 초안입니다. 제출 전에 개인정보 보호책임자가 내용을 확인하고 보완하십시오.
제출한 뒤에는 제출 일시·제출처·접수번호를 기록하십시오 (lifecycle incident submitted $incident_id).

1. 개인정보처리자
   $site

2. 유출등이 된 개인정보의 항목
$items

3. 유출등이 된 시점과 그 경위
   유출 기간: $window
   유출 사실을 안 시점: $detected
   72시간 기한: $deadline
$how

4. 유출등의 규모
   영향받은 회원: $affected명 (주 데이터베이스 기록 $rows건)
   그중 전자우편 주소가 없어 개별 통지할 수 없는 회원: $no_contact명
   유출 기간 중 또는 이후 탈퇴하여 기록이 분리보관 데이터베이스에 있는 전 회원: $former_in_window명
   (연락처가 없어 개별 통지 불가: 홈페이지 게시 등 통지를 갈음하는 조치 대상)
   유출 기간 전에 분리보관되어 주 데이터베이스에 없던 전 회원: $former_before명
   (분리보관 데이터베이스 자체가 유출등이 된 경우에만 해당)
$whole

5. 정보주체가 피해를 최소화하기 위하여 할 수 있는 방법
$advice

6. 개인정보처리자의 대응조치 및 피해 구제절차
$measures

$help

7. 정보주체에게 피해가 발생한 경우 신고 등을 접수할 수 있는 담당부서 및 연락처
$contact

8. 정보주체 통지 현황
$notified

9. 신고 대상 여부 (시행령 제40조제1항)
$grounds
"""
)


def breach_report(context: dict[str, Any]) -> str:
    """The draft report to 개인정보보호위원회/KISA (법 제34조③, 시행령 제40조)."""
    ctx = {"site": get_settings().organisation(), "help": BREACH_HELP, **context}
    return _BREACH_REPORT.safe_substitute(ctx)
