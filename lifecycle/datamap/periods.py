"""Retention periods and rules: parsing ``5y``/``P3M``-style periods, the built-in defaults.

Pure: no database, no I/O. A :class:`Rule` is one category's period plus its legal basis,
what the period counts from (:mod:`lifecycle.datamap.anchors`) and, for a consent-based rule,
the consent column (:mod:`lifecycle.datamap.statutes` checks the basis).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

# The longest retention the map accepts: anything longer is "unbounded" in all but name.
MAX_PERIOD_YEARS = 100

PIPA_DEFAULT_BASIS = (
    "개인정보 보호법 제21조 (목적 달성 후 지체 없이 파기), "
    "표준 개인정보 보호지침 제10조① (5일 이내)"
)

# category -> (period, legal basis). counselling is deliberately absent: the operator sets it.
DEFAULT_RULES: dict[str, tuple[str, str]] = {
    "contract": ("5y", "전자상거래법 제6조, 시행령 제6조 (계약 또는 청약철회 등에 관한 기록)"),
    "payment": ("5y", "전자상거래법 제6조, 시행령 제6조 (대금결제 및 재화 등의 공급에 관한 기록)"),
    "complaint": (
        "3y",
        "전자상거래법 제6조, 시행령 제6조 (소비자의 불만 또는 분쟁처리에 관한 기록)",
    ),
    "advertising": ("6mo", "전자상거래법 제6조, 시행령 제6조 (표시·광고에 관한 기록)"),
    "tax": ("5y", "국세기본법 제85조의3 (장부 및 증거서류의 보존)"),
    "access_log": (
        "3mo",
        "통신비밀보호법 제15조의2, 시행령 제41조 (로그기록자료, 접속지 추적자료)",
    ),
    "profile": ("0d", PIPA_DEFAULT_BASIS),
    "contact": ("0d", PIPA_DEFAULT_BASIS),
    "rrn": ("0d", PIPA_DEFAULT_BASIS),
    "guardian": ("0d", PIPA_DEFAULT_BASIS),
    "hobbies": ("0d", PIPA_DEFAULT_BASIS),
    "credentials": ("0d", PIPA_DEFAULT_BASIS),
    "service_usage": ("0d", PIPA_DEFAULT_BASIS),
    "uploads": ("0d", PIPA_DEFAULT_BASIS),
}

# What a default rule counts from, where not "the record's date if the table names one, else
# the purpose end": tax evidence counts from the filing deadline (국세기본법 제85조의3).
DEFAULT_ANCHORS: dict[str, str] = {"tax": "tax_filing_deadline"}

# The vocabulary of categories; an operator adds their own under `categories:`.
KNOWN_CATEGORIES: tuple[str, ...] = (*DEFAULT_RULES, "counselling")


# -- periods -----------------------------------------------------------------------------------

_UNBOUNDED_WORDS = {
    "forever",
    "unlimited",
    "unbounded",
    "infinite",
    "infinity",
    "inf",
    "never",
    "permanent",
    "none",
    "null",
    "~",
    "영구",
}
_UNIT_RE = re.compile(r"(\d+)\s*(years?|y|months?|mo|m|weeks?|w|days?|d)", re.IGNORECASE)
_ISO_RE = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?", re.IGNORECASE)


@dataclass(frozen=True, order=False)
class Period:
    """A calendar period: years and months are calendar-aware, days are exact."""

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, value: object) -> Period:
        """``5y``, ``3y``, ``6m``/``6mo`` (months), ``2w``, ``30d``, ``1y6mo``, ``P5Y``, ``P3M``,
        ``0``/``0d`` (destroy now). Raises ValueError for anything unbounded or malformed."""
        if value is None:
            raise ValueError("no period")
        if isinstance(value, bool):
            raise ValueError(f"period {value!r} is not a period such as 5y, 6mo or 30d")
        if isinstance(value, int):
            if value == 0:
                return cls()
            if value < 0:
                raise ValueError(f"period {value} is negative (unbounded retention is refused)")
            raise ValueError(f"period {value} has no unit: write {value}y, {value}mo or {value}d")
        if not isinstance(value, str):
            raise ValueError(f"period {value!r} is not a period such as 5y, 6mo or 30d")
        text = value.strip()
        if text.lower() in _UNBOUNDED_WORDS or text.startswith("-"):
            raise ValueError(
                f"period {text!r} is unbounded: every rule needs a finite period (e.g. 5y, 6mo)"
            )
        if text == "0":
            return cls()
        iso = _ISO_RE.fullmatch(text)
        if iso and text.upper() != "P":
            y, m, w, d = (int(g) if g else 0 for g in iso.groups())
            return cls._checked(text, y, m, d + 7 * w)
        pos = 0
        y = m = d = 0
        for match in _UNIT_RE.finditer(text):
            if text[pos : match.start()].strip():
                break
            n, unit = int(match.group(1)), match.group(2).lower()
            if unit.startswith("y"):
                y += n
            elif unit.startswith("m"):  # m, mo, month(s): never minutes in a retention rule
                m += n
            elif unit.startswith("w"):
                d += 7 * n
            else:
                d += n
            pos = match.end()
        if pos == 0 or text[pos:].strip():
            raise ValueError(f"period {text!r} is not a period such as 5y, 3y, 6mo, 30d, P5Y or 0d")
        return cls._checked(text, y, m, d)

    @classmethod
    def _checked(cls, text: str, y: int, m: int, d: int) -> Period:
        p = cls(y, m, d)
        if p.approx_days > MAX_PERIOD_YEARS * 366:
            raise ValueError(
                f"period {text!r} is longer than {MAX_PERIOD_YEARS} years, i.e. unbounded"
            )
        return p

    @property
    def is_zero(self) -> bool:
        return self.years == 0 and self.months == 0 and self.days == 0

    @property
    def approx_days(self) -> float:
        """For ordering periods only (the longest rule wins); never for computing dates."""
        return self.years * 365.2425 + self.months * 30.436875 + self.days

    def add_to(self, when: datetime) -> datetime:
        total = when.month - 1 + self.months + 12 * self.years
        year, month = when.year + total // 12, total % 12 + 1
        # 31 Jan + 1 month = 28/29 Feb: clamp rather than spill into March.
        day = min(when.day, calendar.monthrange(year, month)[1])
        return when.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    def subtract_from(self, when: datetime) -> datetime:
        total = when.month - 1 - self.months - 12 * self.years
        year, month = when.year + total // 12, total % 12 + 1
        day = min(when.day, calendar.monthrange(year, month)[1])
        return when.replace(year=year, month=month, day=day) - timedelta(days=self.days)

    def __str__(self) -> str:
        if self.is_zero:
            return "0d"
        parts = []
        if self.years:
            parts.append(f"{self.years}y")
        if self.months:
            parts.append(f"{self.months}mo")
        if self.days:
            parts.append(f"{self.days}d")
        return "".join(parts)

    def words(self) -> str:
        """In Korean words for a member (``5년``, ``1년 6개월``, ``30일``); zero: ``0일``."""
        parts = [f"{n}{unit}" for n, unit in
                 ((self.years, "년"), (self.months, "개월"), (self.days, "일")) if n]  # fmt: skip
        return " ".join(parts) or "0일"


# What a period counts from, as a member reads it (the map's `from:`, lifecycle.datamap.anchors).
_FROM_WORDS = {
    "purpose_end": "보유 목적 종료(탈퇴 등) 후",
    "record": "해당 기록의 작성일부터",
    "tax_filing_deadline": "해당 과세기간의 법정신고기한부터",
}
DESTROY_NOW_WORDS = "보유 목적 달성(탈퇴 등) 후 지체 없이(5일 이내) 파기"


@dataclass(frozen=True)
class Rule:
    category: str
    period: Period
    legal_basis: str
    line: int | None = None
    default: bool = False  # True when it came from DEFAULT_RULES rather than the map
    # What the period counts from (the map's `from:`): purpose_end, record or
    # tax_filing_deadline; None: the record's date on a table naming retain_from, else the
    # purpose end (TableMap.anchor_of says which applies on a table).
    anchor: str | None = None
    # Consent-based: the subject table's column recording the member's consent. A row whose
    # member has no consent recorded (NULL, false, 0, '') keeps nothing of this category.
    consent: str | None = None
    statutes: tuple[str, ...] = ()  # ids of the listed statutes the basis cites

    @property
    def destroy_now(self) -> bool:
        return self.period.is_zero

    @property
    def basis_ref(self) -> str:
        """What carries the rule, for `datamap check`/`explain`: statute ids or the consent."""
        if self.consent:
            return f"consent:{self.consent}"
        return ",".join(self.statutes) or "-"

    def retain_until(self, anchor: datetime) -> datetime:
        return self.period.add_to(anchor)

    def in_words(self, anchor: str | None = None) -> str:
        """The period as a member reads it, with its basis: ``보유 목적 종료(탈퇴 등) 후 5년
        (전자상거래법 제6조, ...)``. ``anchor``: what it counts from on the table at hand
        (``TableMap.anchor_of``), else the rule's own ``from:``."""
        if self.destroy_now:
            text = DESTROY_NOW_WORDS
        else:
            start = _FROM_WORDS.get(
                anchor or self.anchor or "purpose_end", _FROM_WORDS["purpose_end"]
            )
            text = f"{start} {self.period.words()}"
            if self.consent:
                text += " (별도 동의한 경우에만 보관)"
        return f"{text} (근거: {self.legal_basis})"
