"""``--dry-run``: what a sweep would do, per table and category, touching nothing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lifecycle.core.timeutil import as_utc
from lifecycle.engine import orphans
from lifecycle.engine.context import EngineContext
from lifecycle.engine.guests import with_guests
from lifecycle.engine.selection import (
    age_selections,
    dormant_subjects_query,
    guarded_categories,
    iter_planned,
    subject_selections,
    withdrawn_subjects_query,
)
from lifecycle.requests import holds

PREVIEW_MEMBER_CHUNK = 1000


@dataclass(frozen=True)
class PreviewLine:
    phase: str  # withdrawal | orphan | dormancy | age
    table: str
    category: str
    action: str  # archive | destroy
    rows: int
    subjects: int
    retention: str


def sweep_preview(ctx: EngineContext, now: datetime | None = None) -> list[PreviewLine]:
    """Counts of what the sweep would archive and destroy; runs in a rolled-back read."""
    now = now or datetime.now(UTC)
    # [rows, members counted so far, members of the current member batch]. Member batches are
    # disjoint, so their distinct counts add up and the sets need not outlive a batch.
    tallies: dict[tuple[str, str, str, str], list[Any]] = defaultdict(lambda: [0, 0, set()])
    seen_subjects: set[Any] = set()
    with ctx.primary.connect() as conn, ctx.primary.connect() as cconn:
        try:
            for phase in ("withdrawal", "orphan", "dormancy"):
                if phase == "withdrawal":
                    q = withdrawn_subjects_query(ctx)
                elif phase == "orphan":
                    # Those a previous sweep recorded and the grace has passed for: exactly
                    # what the next run takes (one it sees first is taken a night later).
                    q = orphans.due_query(ctx, now)
                else:
                    q = dormant_subjects_query(ctx, now)
                    if q is None:
                        continue
                d = ctx.datamap.subject.dormancy
                batch: dict[Any, datetime] = {}

                def run(batch: dict[Any, datetime], phase: str = phase) -> None:
                    kind = "withdrawal" if phase == "orphan" else phase
                    sels, _shared = with_guests(
                        ctx, conn, kind, batch, now, subject_selections(ctx, kind, batch, now)
                    )
                    for sel in sels:
                        for chunk in iter_planned(ctx, conn, sel, now):
                            for row in chunk:
                                _tally(tallies, phase, sel.table.name, row)
                    for v in tallies.values():
                        v[1] += len(v[2])
                        v[2].clear()

                ids = cconn.execute(
                    execution_options={"stream_results": True, "yield_per": 10_000}, statement=q
                )
                for key, when in ids:
                    if when is None:
                        ended = now
                    elif phase == "dormancy":
                        ended = d.inactive_for.add_to(as_utc(when))
                    else:
                        # A marker's text or a meta row's value, as the sweep reads it.
                        ended = ctx.datamap.subject.withdrawn_at(when) or now
                    batch[key] = ended
                    seen_subjects.add(key)
                    if len(batch) >= PREVIEW_MEMBER_CHUNK:
                        run(batch)
                        batch = {}
                if batch:
                    run(batch)
            for tm in ctx.ordered_tables:
                if not tm.expires_by_age:
                    continue
                # With the rows of tables inheriting its date, which go in the same move.
                for sel in age_selections(ctx, tm, now):
                    for chunk in iter_planned(ctx, conn, sel, now):
                        for row in chunk:
                            # The withdrawal phase runs first and takes these rows.
                            if row.subject is not None and row.subject in seen_subjects:
                                continue
                            _tally(tallies, "age", sel.table.name, row)
        finally:
            conn.rollback()
            cconn.rollback()
    dm = ctx.datamap
    return [
        PreviewLine(phase, table, cat, action, n, done + len(subs), str(dm.rule(cat).period))
        for (phase, table, cat, action), (n, done, subs) in sorted(tallies.items())
    ]


def _tally(tallies: dict, phase: str, table: str, row: Any) -> None:  # type: ignore[type-arg]
    for part in row.parts:
        t = tallies[(phase, table, part.category, "archive")]
        t[0] += 1
        if row.subject is not None:
            t[2].add(row.subject)
    for cat in row.destroyed:
        t = tallies[(phase, table, cat, "destroy")]
        t[0] += 1
        if row.subject is not None:
            t[2].add(row.subject)


def held_summary(ctx: EngineContext, now: datetime | None = None) -> dict[str, Any]:
    """What active legal holds keep from the sweep: hold ids, withdrawn/dormant members left
    in place, and the tables left alone for a held category. Counts and names only."""
    today = ctx.local_date(now or datetime.now(UTC))
    with Session(ctx.primary) as s:
        act = holds.active(s, today)
        if not act:
            return {}
        sub = ctx.datamap.subject
        t = ctx.subject_table
        key = t.c[sub.key]
        members = int(
            s.execute(
                select(func.count()).where(sub.withdrawn_clause(t), holds.member_held(key, today))
            ).scalar_one()
        )
    cats = sorted({h.category for h in act if h.category})
    tables = sorted(
        tm.name for tm in ctx.ordered_tables if set(guarded_categories(ctx, tm)) & set(cats)
    )
    return {
        "holds": [h.id for h in act],
        "held_withdrawn_members": members,
        "held_categories": cats,
        "held_tables": tables,
    }


def describe_held(summary: dict[str, Any]) -> str:
    """One line for `--dry-run` and logs (ids and names only)."""
    if not summary:
        return ""
    parts = [f"legal holds {', '.join(map(str, summary['holds']))} active"]
    if summary.get("held_withdrawn_members"):
        parts.append(f"{summary['held_withdrawn_members']} withdrawn member(s) left in place")
    if summary.get("held_tables"):
        parts.append(
            f"tables {', '.join(summary['held_tables'])} left alone for held categories "
            f"{', '.join(summary['held_categories'])}"
        )
    return "; ".join(parts)
