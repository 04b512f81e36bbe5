"""Queue names. File deletion runs on the host holding the files, so shred queues are per host."""

from __future__ import annotations

REQUESTS = "requests"
ARCHIVE = "archive"
NOTIFY = "notify"
SHRED_PREFIX = "shred."


def shred_queue(host: str) -> str:
    return f"{SHRED_PREFIX}{host}"


def worker_queues(host: str) -> list[str]:
    """What a general-purpose worker on ``host`` consumes (`lifecycle up`, docker-compose)."""
    return [REQUESTS, ARCHIVE, NOTIFY, shred_queue(host)]
