"""When to try a failed delivery again.

The default schedule is the delay before each attempt:

    attempt   1    2    3     4      5     6     7      8
    delay     0    5s   5m    30m    2h    5h    10h    14h

Eight attempts over about 31.6 hours: quick retries ride out a blip, the long tail outlasts a
receiver's overnight outage. After the last one the delivery is ``failed`` and its request
``needs_attention``; `lifecycle deliveries replay ID` starts a fresh round.

Each non-zero delay gets ±20 % jitter so a receiver that comes back is not hit by every
retry of every delivery in the same second.

``LIFECYCLE_RETRY_SCHEDULE`` (comma-separated seconds, e.g. ``0,1,2``) replaces the schedule;
tests use it to run the whole cycle in seconds.
"""

from __future__ import annotations

import random

from lifecycle.core.errors import SettingsError
from lifecycle.core.settings import get_settings

DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400)
JITTER = 0.2


def parse_schedule(text: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise SettingsError(
            "LIFECYCLE_RETRY_SCHEDULE must be comma-separated seconds, e.g. 0,5,300"
        ) from None
    if not delays or any(d < 0 for d in delays):
        raise SettingsError("LIFECYCLE_RETRY_SCHEDULE needs at least one delay, none negative")
    return delays


def schedule() -> tuple[float, ...]:
    text = get_settings().retry_schedule
    return parse_schedule(text) if text.strip() else DEFAULT_SCHEDULE


def max_attempts() -> int:
    return len(schedule())


def delay_before(attempt: int, rng: random.Random | None = None) -> float | None:
    """Seconds to wait before attempt number ``attempt`` (1-based); None once exhausted."""
    delays = schedule()
    if attempt < 1 or attempt > len(delays):
        return None
    base = delays[attempt - 1]
    if base == 0:
        return 0.0
    r = rng or random
    return base * (1 + r.uniform(-JITTER, JITTER))


def total_span(delays: tuple[float, ...] = DEFAULT_SCHEDULE) -> float:
    return float(sum(delays))
