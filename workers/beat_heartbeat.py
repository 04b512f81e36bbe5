"""A liveness file for beat, and the check docker-compose's healthcheck runs against it.

Beat has no remote-control channel to ping (unlike a worker), and a live process proves little:
what matters is that its loop still turns. So the scheduler touches a file after every tick that
completed (RedBeat extends its Redis lock in the tick; a beat riding out a Redis outage keeps
running but stops touching it), and ``python -m workers.beat_heartbeat --check`` fails once the
file is older than allowed.

A second beat waiting on RedBeat's lock does not tick, so it reports unhealthy until it takes
over: it is not scheduling anything, and that is what the check says.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from schedules.scheduler import Scheduler

ENV = "LIFECYCLE_BEAT_HEARTBEAT_FILE"
DEFAULT_FILE = "/tmp/lifecycle-beat.heartbeat"


def heartbeat_path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_FILE)


class HeartbeatRedBeatScheduler(Scheduler):
    """The project's RedBeat scheduler, touching the heartbeat file after each completed tick."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = super().tick(*args, **kwargs)
        if not self.in_outage:
            heartbeat_path().touch()
        return interval


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
    reason = check(heartbeat_path(), args.max_age)
    if reason:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
