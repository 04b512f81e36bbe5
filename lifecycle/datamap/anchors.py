"""What a retention period counts from: the purpose end, the record's own date, or the
statutory tax filing deadline (법정신고기한) of the record's tax period.

Pure: no database, no I/O. 국세기본법 제85조의3 keeps books and evidence for 5 years from the
filing deadline of the tax they serve, not from the record's date:

- 부가가치세 (VAT): 1기 (1 Jan–30 Jun) 확정신고기한 25 July; 2기 (1 Jul–31 Dec) 25 January of the
  next year (부가가치세법 제49조).
- 종합소득세 (an individual business): 31 May of the next year (소득세법 제70조); 30 June for a
  business under 성실신고확인 (소득세법 제70조의2).
- 법인세 (a corporation): three months from the last day of the month in which the business
  year ends (법인세법 제60조), i.e. 31 March for a year ending 31 December.

A record serving both VAT and income or corporate tax is kept until the later deadline's
period ends. Day boundaries are conservative: the record's tax period is read from its date in
Asia/Seoul (a record written at 23:30 UTC on 30 June is a 1 July record in Korea, the later
period), and the record is kept through the whole last day in Asia/Seoul (until 23:59:59.999999
KST; the archive's ``retain_until`` is that day, purged on the next).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.periods import Period

# Korean tax law counts Korean days, whatever zone the site's servers run in.
TAX_TZ = ZoneInfo("Asia/Seoul")

# What a rule's period counts from (the map's `from:`).
PURPOSE_END = "purpose_end"
RECORD = "record"
TAX_DEADLINE = "tax_filing_deadline"
ANCHORS = (PURPOSE_END, RECORD, TAX_DEADLINE)


@dataclass(frozen=True)
class TaxProfile:
    """The site's taxes (the map's ``business:``): who files what, and when."""

    kind: Literal["individual", "corporation"] = "individual"
    fiscal_year_end: tuple[int, int] = (12, 31)  # (month, day); corporations only
    vat: bool = True  # a VAT-registered business (면세사업자: false)
    faithful_filing: bool = False  # 성실신고확인대상 individual: income tax due 30 June

    def describe(self) -> str:
        if self.kind == "corporation":
            m, d = self.fiscal_year_end
            what = f"corporation (법인세, business year ending {m:02d}-{d:02d})"
        else:
            due = "06-30" if self.faithful_filing else "05-31"
            what = f"individual business (종합소득세, due {due} of the next year)"
        return what + (", VAT-registered (부가가치세)" if self.vat else ", VAT-exempt")


def parse_month_day(text: str) -> tuple[int, int]:
    """``"12-31"`` -> (12, 31); raises ValueError for anything that is not a calendar day."""
    parts = str(text).strip().split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a month-day such as 12-31 or 06-30")
    m, d = int(parts[0]), int(parts[1])
    if not 1 <= m <= 12 or not 1 <= d <= calendar.monthrange(2024, m)[1]:
        raise ValueError(f"{text!r} is not a month-day such as 12-31 or 06-30")
    return m, d


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    total = year * 12 + month - 1 + n
    return total // 12, total % 12 + 1


def vat_deadline(day: date) -> date:
    """확정신고기한 of the VAT period holding ``day``."""
    if day.month <= 6:
        return date(day.year, 7, 25)
    return date(day.year + 1, 1, 25)


def fiscal_year_end_after(day: date, fiscal_year_end: tuple[int, int]) -> date:
    """The end of the business year holding ``day`` (the first year-end on or after it).

    A year end of 29 February (or any day a month lacks) falls on that month's last day."""
    m, d = fiscal_year_end
    for year in (day.year, day.year + 1):
        end = date(year, m, min(d, calendar.monthrange(year, m)[1]))
        if end >= day:
            return end
    raise AssertionError("unreachable: a year end always follows within a year")


def income_deadline(day: date, profile: TaxProfile) -> date:
    """The 종합소득세 or 법인세 filing deadline for the tax year holding ``day``."""
    if profile.kind == "corporation":
        end = fiscal_year_end_after(day, profile.fiscal_year_end)
        y, m = _add_months(end.year, end.month, 3)
        return _month_end(y, m)
    if profile.faithful_filing:
        return date(day.year + 1, 6, 30)
    return date(day.year + 1, 5, 31)


def filing_deadline(day: date, profile: TaxProfile) -> date:
    """The latest filing deadline among the taxes a record dated ``day`` (a Korean day)
    serves: it is kept for the period counted from this day."""
    deadline = income_deadline(day, profile)
    if profile.vat:
        deadline = max(deadline, vat_deadline(day))
    return deadline


def tax_day(record: datetime) -> date:
    """The Korean day of a record's timestamp (naive values are read as UTC)."""
    return as_utc(record).astimezone(TAX_TZ).date()


def end_of_korean_day(day: date) -> datetime:
    """The last instant of a Korean day (23:59:59.999999 KST), in UTC: the archive files it
    under that day (its ``retain_until``), and the purge takes it only the day after."""
    return datetime.combine(day, time.max, TAX_TZ).astimezone(UTC)


def tax_retain_until(record: datetime, period: Period, profile: TaxProfile) -> datetime:
    """Until when a record dated ``record`` is kept: ``period`` after its filing deadline,
    through the whole of that last day in Asia/Seoul."""
    deadline = filing_deadline(tax_day(record), profile)
    last = period.add_to(datetime.combine(deadline, time())).date()
    return end_of_korean_day(last)


def tax_cutoff(now: datetime, period: Period, profile: TaxProfile) -> datetime:
    """The earliest record time still kept at ``now``: a record dated before it is past its
    period, one dated at or after it is not (the deadline never falls as the date rises).

    A record's deadline lies at most 19 months after its day, so the answer is found by
    bisection over the Korean days between ``now - period - 19 months`` and ``now - period``.
    """
    now = as_utc(now)
    hi = tax_day(period.subtract_from(now)) + timedelta(days=1)
    lo = hi - timedelta(days=600)

    def expired(day: date) -> bool:
        last = period.add_to(datetime.combine(filing_deadline(day, profile), time())).date()
        return end_of_korean_day(last) <= now

    assert expired(lo) and not expired(hi)
    while (hi - lo).days > 1:
        mid = lo + timedelta(days=(hi - lo).days // 2)
        if expired(mid):
            lo = mid
        else:
            hi = mid
    return datetime.combine(hi, time(), TAX_TZ).astimezone(UTC)
