"""The monthly review of the handler access log (접속기록 점검, 개인정보의 안전성 확보조치 기준
제8조②: the records are checked at least once a month, and a download found to be for no
reason is investigated).

Pure: the entries come in as mappings (``lifecycle.vault.accesslog.iter_month``, or a web
console's own query), the result is data; the command prints it and logs that it ran. Three
kinds of flag, with thresholds from the settings (``LIFECYCLE_REVIEW_*``):

- **bulk**: one read or export of at least ``bulk_rows`` rows or ``bulk_subjects`` members;
- **off_hours**: an action by a person (not a worker's or beat's automated job) outside office
  hours in the site's time zone (Asia/Seoul by default) or on a Saturday or Sunday (public
  holidays are not known to the product: review those days by hand);
- **repeated**: the same member (pseudonym) read or exported ``repeat`` times or more in the
  month, by anyone.

Which entries count as a read or export, and how many rows an entry covers, is decided here
only (:func:`volume`), so the console and the command agree.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from lifecycle.core.errors import UserError
from lifecycle.core.timeutil import as_utc

READING = frozenset({"read", "export", "provide"})
# details keys that count rows or members, whichever an entry's writer used.
ROW_KEYS = ("rows", "records", "entries", "identifier_rows")
SUBJECT_KEYS = ("subjects", "members")
# An origin these start with is an automated job (accesslog.set_process_role).
AUTOMATED = ("worker@", "beat@")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True)
class Thresholds:
    bulk_rows: int = 1000
    bulk_subjects: int = 50
    office_start: int = 8
    office_end: int = 20
    repeat: int = 3
    tz: str = "Asia/Seoul"

    @classmethod
    def from_settings(cls, s: Any) -> Thresholds:
        return cls(
            s.review_bulk_rows, s.review_bulk_subjects, s.review_office_start_hour,
            s.review_office_end_hour, s.review_repeat_downloads, s.timezone,
        )  # fmt: skip


@dataclass(frozen=True)
class Flag:
    kind: str  # bulk | off_hours | repeated
    seqs: tuple[int, ...]
    operator: str
    at: str  # local time of the (first) entry
    what: str  # the action, or the member pseudonym's prefix for a repeat

    def line(self) -> str:
        ids = ",".join(str(s) for s in self.seqs[:10]) + ("…" if len(self.seqs) > 10 else "")
        return f"{self.kind:<9} {self.at}  {self.operator}  {self.what}  (entries {ids})"


@dataclass
class Review:
    month: str
    tz: str
    thresholds: Thresholds
    entries: int = 0
    by_operator: dict[str, int] = field(default_factory=dict)
    by_action: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    rows_read: int = 0
    flags: list[Flag] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = [asdict(f) for f in self.flags]
        d["flag_counts"] = dict(Counter(f.kind for f in self.flags))
        return d

    def lines(self) -> list[str]:
        t = self.thresholds
        out = [
            f"접속기록 점검 {self.month} ({self.tz}): {self.entries} entries, "
            f"{self.reads} reads/exports covering {self.rows_read} rows",
            f"thresholds: bulk >= {t.bulk_rows} rows or >= {t.bulk_subjects} members; office "
            f"hours {t.office_start:02d}-{t.office_end:02d} weekdays; repeated >= {t.repeat} "
            "per member",
            "by operator:",
            *(f"  {n:>6}  {op}" for op, n in sorted(self.by_operator.items())),
            "by action:",
            *(f"  {n:>6}  {a}" for a, n in sorted(self.by_action.items())),
        ]
        if not self.flags:
            out.append("flags: none")
        else:
            out.append(f"flags: {len(self.flags)} (check each with the operator named)")
            out.extend(f"  {f.line()}" for f in self.flags)
        return out


def month_bounds(month: str, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of ``YYYY-MM`` in the zone ``tz``, as UTC; one-line UserError otherwise."""
    m = _MONTH.fullmatch(month.strip())
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise UserError(f"--month must be YYYY-MM (e.g. 2026-11), not {month!r}")
    y, mo = int(m.group(1)), int(m.group(2))
    zone = ZoneInfo(tz)
    start = datetime(y, mo, 1, tzinfo=zone)
    end = datetime(y + mo // 12, mo % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _int(v: Any) -> int:
    if isinstance(v, bool):
        return 0
    if isinstance(v, int):
        return v
    if isinstance(v, list | tuple):
        return len(v)
    return 0


def volume(details: Mapping[str, Any] | None) -> tuple[int, int]:
    """(rows, members) an entry covers, from whatever count its writer recorded."""
    d = details or {}
    rows = max((_int(d.get(k)) for k in ROW_KEYS), default=0)
    subjects = max((_int(d.get(k)) for k in SUBJECT_KEYS), default=0)
    return rows, subjects


def automated(entry: Mapping[str, Any]) -> bool:
    origin = str((entry.get("details") or {}).get("origin") or "")
    return origin.startswith(AUTOMATED) or entry.get("kind") == "prune"


def review(
    entries: Iterable[Mapping[str, Any]] | Iterable[Any], month: str, t: Thresholds
) -> Review:
    """The month's figures and flags; ``entries`` are that month's (seq order)."""
    zone = ZoneInfo(t.tz)
    r = Review(month, t.tz, t)
    repeats: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for e in entries:
        r.entries += 1
        op = str(e["operator"])
        r.by_operator[op] = r.by_operator.get(op, 0) + 1
        r.by_action[str(e["action"])] = r.by_action.get(str(e["action"]), 0) + 1
        local = as_utc(e["occurred_at"]).astimezone(zone)
        at = local.isoformat(sep=" ", timespec="minutes")
        seq = int(e["seq"])
        if e["kind"] in READING:
            rows, subjects = volume(e.get("details"))
            r.reads += 1
            r.rows_read += rows
            if rows >= t.bulk_rows or subjects >= t.bulk_subjects:
                r.flags.append(Flag("bulk", (seq,), op, at,
                                    f"{e['action']}: {rows} rows, {subjects} members"))  # fmt: skip
            if e.get("subject_ref"):
                repeats[str(e["subject_ref"])].append(e)
        off = local.weekday() >= 5 or not t.office_start <= local.hour < t.office_end
        if off and not automated(e):
            r.flags.append(Flag("off_hours", (seq,), op, at, str(e["action"])))
    for ref, es in repeats.items():
        if len(es) >= t.repeat:
            ops = sorted({str(e["operator"]) for e in es})
            first = as_utc(es[0]["occurred_at"]).astimezone(zone)
            r.flags.append(Flag(
                "repeated", tuple(int(e["seq"]) for e in es), ", ".join(ops),
                first.isoformat(sep=" ", timespec="minutes"),
                f"member {ref[:12]}… read/exported {len(es)} times",
            ))  # fmt: skip
    return r
