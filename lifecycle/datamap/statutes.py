"""The statutes a retention rule may cite, and the check every rule of a map must pass.

Pure: no database, no I/O. 개인정보 보호법 제21조① lets data be kept after its purpose only
where another law requires it; so a rule keeping anything must cite a law and article from
:data:`STATUTES` (each with the longest period it allows and, where the law says so, what the
period counts from, and which kinds of record it covers), or be consent-based (``consent:
COLUMN`` of the members' table, or a retention consent purpose: kept only for members whose
consent is recorded). "내부 방침", "internal policy" or any text citing no
listed law and article is refused.

The list is deliberately small and reviewable; a site needing another statute adds it here
(with its article and maximum) rather than writing free text in its map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lifecycle.datamap.anchors import PURPOSE_END, RECORD, TAX_DEADLINE
from lifecycle.datamap.periods import Period


@dataclass(frozen=True)
class Statute:
    id: str
    law: str  # the name the ledger and docs show
    aliases: tuple[str, ...]  # other names a legal_basis may use (spaces are ignored)
    articles: tuple[str, ...]  # "제6조", "시행령 제6조": any one cited is enough
    max_period: Period
    summary: str
    # Longest period per category where the law lists record kinds (전자상거래법).
    max_by_category: dict[str, Period] = field(default_factory=dict)
    # What the period may count from; empty: any anchor.
    anchors: tuple[str, ...] = ()
    # Binds only such operators (의료법: medical institutions); checked against `business:`.
    requires: str | None = None
    # The kinds of record (built-in categories) the law covers: a rule citing it for another
    # kind is refused (상법 제33조 keeps 상업장부, not counselling notes). None: any kind, for
    # 개인정보 보호법 제21조 alone, which keeps nothing (0d).
    covers: tuple[str, ...] | None = ()

    def max_for(self, category: str) -> Period:
        return self.max_by_category.get(category, self.max_period)


_TAX_ANCHOR = (TAX_DEADLINE,)
# 장부 및 증거서류: the tax records themselves and the transactions they evidence.
_TAX_RECORDS = ("tax", "payment", "contract")
_Y5 = Period(years=5)
# 전자상거래법 시행령 제6조①: the record kinds it lists, by the demo's category names.
_ECOMMERCE = {
    "contract": _Y5,
    "payment": _Y5,
    "complaint": Period(years=3),
    "advertising": Period(months=6),
}

STATUTES: tuple[Statute, ...] = (
    Statute(
        "pipa-21",
        "개인정보 보호법",
        ("개인정보보호법",),
        ("제21조",),
        Period(),
        "목적 달성 후 지체 없이 파기 (destroy once the purpose ends)",
        covers=None,
    ),
    Statute(
        "ecommerce-6",
        "전자상거래법",
        ("전자상거래 등에서의 소비자보호에 관한 법률",),
        ("제6조", "시행령 제6조"),
        _Y5,
        "거래기록 보존: 계약·청약철회·대금결제·재화공급 5년, 소비자 불만·분쟁처리 3년, "
        "표시·광고 6개월",
        max_by_category=_ECOMMERCE,
        covers=tuple(_ECOMMERCE),
        anchors=(RECORD, PURPOSE_END),
    ),
    Statute(
        "framework-tax-85-3",
        "국세기본법",
        (),
        ("제85조의3",),
        _Y5,
        "장부 및 증거서류 5년, 법정신고기한부터 (from the statutory filing deadline)",
        anchors=_TAX_ANCHOR,
        covers=_TAX_RECORDS,
    ),
    Statute(
        "vat-71",
        "부가가치세법",
        (),
        ("제71조",),
        _Y5,
        "세금계산서 등 5년, 확정신고기한 후부터",
        anchors=_TAX_ANCHOR,
        covers=_TAX_RECORDS,
    ),
    Statute(
        "corporate-tax-116",
        "법인세법",
        (),
        ("제116조",),
        _Y5,
        "지출증명서류 5년, 신고기한부터",
        anchors=_TAX_ANCHOR,
        covers=_TAX_RECORDS,
    ),
    Statute(
        "income-tax-160-2",
        "소득세법",
        (),
        ("제160조의2",),
        _Y5,
        "경비 등의 지출증명 5년, 신고기한부터",
        anchors=_TAX_ANCHOR,
        covers=_TAX_RECORDS,
    ),
    Statute(
        "telecom-secrecy-15-2",
        "통신비밀보호법",
        (),
        ("제15조의2", "시행령 제41조"),
        Period(months=3),
        "로그기록자료·접속지 추적자료 3개월",
        covers=("access_log",),
    ),
    Statute(
        "commercial-33",
        "상법",
        (),
        ("제33조",),
        Period(years=10),
        "상업장부·영업에 관한 중요서류 10년, 전표 5년",
        covers=("contract", "payment", "tax"),
    ),
    Statute(
        "e-finance-22",
        "전자금융거래법",
        (),
        ("제22조", "시행령 제12조"),
        _Y5,
        "전자금융거래 기록 5년 (소액 등 1년)",
        covers=("payment",),
    ),
    Statute(
        "medical-22",
        "의료법",
        (),
        ("제22조", "시행규칙 제15조"),
        Period(years=10),
        "진료기록부 등 10년 (의료기관에 한함)",
        requires="medical_institution",
        covers=("counselling",),
    ),
    Statute(
        "credit-info-20-2",
        "신용정보법",
        ("신용정보의 이용 및 보호에 관한 법률",),
        ("제20조의2",),
        _Y5,
        "거래 종료 후 5년 이내",
        covers=("contract", "payment"),
    ),
)

BY_ID = {s.id: s for s in STATUTES}

_ARTICLE_RE = re.compile(r"(시행령|시행규칙)?\s*제\s*(\d+)\s*조(?:\s*의\s*(\d+))?")


def _squash(text: str) -> str:
    return re.sub(r"[\s·ㆍ]+", "", text)


def _names(s: Statute) -> list[str]:
    return [_squash(n) for n in (s.law, *s.aliases)]


def _law_spans(text: str) -> list[tuple[int, int, Statute]]:
    """Where each listed law is named in ``text`` (squashed), longest names first so that
    "전자상거래법" is never read as "상법"."""
    found: list[tuple[int, int, Statute]] = []
    taken: list[tuple[int, int]] = []
    names = sorted(((n, s) for s in STATUTES for n in _names(s)), key=lambda x: -len(x[0]))
    for name, st in names:
        for m in re.finditer(re.escape(name), text):
            a, b = m.span()
            if any(a < tb and ta < b for ta, tb in taken):
                continue
            # "…에 관한 법률" names and short ones alike must stand alone: "상법" inside another
            # word (보상법) is not the 상법.
            if a > 0 and re.match(r"[가-힣]", text[a - 1]):
                continue
            taken.append((a, b))
            found.append((a, b, st))
    return sorted(found, key=lambda x: x[0])


def cited(basis: str) -> list[Statute]:
    """The listed statutes ``basis`` cites with an article the list has for that law.

    An article belongs to the law named before it (``전자상거래법 제6조, 시행령 제6조``)."""
    text = _squash(basis)
    spans = _law_spans(text)
    out: list[Statute] = []
    for i, (_a, b, st) in enumerate(spans):
        end = spans[i + 1][0] if i + 1 < len(spans) else len(text)
        for m in _ARTICLE_RE.finditer(text[b:end]):
            art = f"제{m.group(2)}조" + (f"의{m.group(3)}" if m.group(3) else "")
            if m.group(1):
                art = f"{m.group(1)} {art}"
            if art in st.articles and st not in out:
                out.append(st)
    return out


def laws_named(basis: str) -> list[Statute]:
    return [st for _a, _b, st in _law_spans(_squash(basis))]


def check_rule(
    category: str,
    period: Period,
    basis: str,
    *,
    operator: frozenset[str] = frozenset(),
    kind: str | None = None,
) -> tuple[Statute, ...]:
    """The listed statutes that carry a (non-consent) rule; raises ValueError (one line)
    otherwise. ``operator`` names what the operator is (``medical_institution``) for laws
    that bind only such operators; ``kind`` the kind of record the category is (a built-in
    category; default: the category itself), which a cited law must cover."""
    hits = cited(basis)
    if not hits:
        named = laws_named(basis)
        if named:
            st = named[0]
            raise ValueError(
                f"retention rule {category!r}: legal_basis names {st.law} but no article the "
                f"list has for it ({', '.join(st.articles)})"
            )
        raise ValueError(
            f"retention rule {category!r}: legal_basis {basis!r} cites no statute from the "
            "shipped list (law and article, e.g. 전자상거래법 제6조); internal policy is no "
            "legal basis: cite a law, or make the rule consent-based (consent: COLUMN)"
        )
    usable = [st for st in hits if not st.requires or st.requires in operator]
    if not usable:
        st = hits[0]
        need = st.requires or ""
        raise ValueError(
            f"retention rule {category!r}: {st.law} {st.articles[0]} binds only a "
            f"{need.replace('_', ' ')} (business: {{{need}: true}})"
        )
    kind = kind or category
    covering = [st for st in usable if st.covers is None or kind in st.covers]
    if not covering:
        st = usable[0]
        what = f"{category!r}" if kind == category else f"{category!r} ({kind} records)"
        raise ValueError(
            f"retention rule {category!r}: {st.law} {st.articles[0]} does not cover "
            f"{what}; it keeps {', '.join(st.covers or ())} records"
        )
    usable = covering
    if period.is_zero:
        return tuple(usable)
    longest = max(usable, key=lambda st: st.max_for(kind).approx_days)
    limit = longest.max_for(kind)
    if period.approx_days > limit.approx_days:
        raise ValueError(
            f"retention rule {category!r}: {period} is longer than {longest.law} "
            f"{longest.articles[0]} allows for it ({limit})"
        )
    return tuple(st for st in usable if period.approx_days <= st.max_for(kind).approx_days)


def anchor_problem(category: str, statutes: tuple[Statute, ...], anchor: str) -> str | None:
    """Why a rule carried by ``statutes`` may not count from ``anchor`` (None: it may).

    Any one statute accepting the anchor is enough (a rule may cite several laws)."""
    if not statutes or any(not st.anchors or anchor in st.anchors for st in statutes):
        return None
    st = statutes[0]
    return (
        f"retention rule {category!r}: {st.law} {st.articles[0]} counts the period from "
        f"{' or '.join(st.anchors)}, not {anchor} (set from: {st.anchors[0]} and the table's "
        "retain_from: the record's date column)"
    )
