"""The check docker-compose's beat healthcheck runs: did beat's scheduler loop tick recently?

Both schedulers touch the heartbeat file after every completed tick
(schedules/heartbeat.py): a beat riding out a Redis outage keeps running but stops
touching it, and
``python -m workers.beat_heartbeat --check`` fails once the file is older than allowed. A second
beat waiting on RedBeat's lock does not tick either, so it reports unhealthy until it takes over:
it is not scheduling anything, and that is what the check says.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lifecycle.core.errors import LifecycleError
from schedules.heartbeat import heartbeat_path
from schedules.scheduler import Scheduler

# Compose files written before every scheduler touched the heartbeat name this class with -S.
HeartbeatRedBeatScheduler = Scheduler


def check(path: Path, max_age: float) -> str | None:
    """None when the heartbeat is fresh, else the one-line reason it is not."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"beat: no heartbeat at {path} (not started, or waiting on the RedBeat lock)"
    if age > max_age:
        return f"beat: last tick {age:.0f}s ago (more than {max_age:.0f}s) per {path}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that beat ticked recently.")
    parser.add_argument("--check", action="store_true", required=True)
    parser.add_argument("--max-age", type=float, default=60.0, help="seconds")
    args = parser.parse_args(argv)
    try:
        path = heartbeat_path()
    except LifecycleError as exc:  # settings unreadable: still one line, and unhealthy
        print(f"beat: cannot locate the heartbeat file: {exc}", file=sys.stderr)
        return 1
    reason = check(path, args.max_age)
    if reason:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
