"""Beat's liveness file: touched after every scheduler tick that completed.

Beat has no remote-control channel to ping (unlike a worker), and a live process proves little:
what matters is that its loop still turns. Both schedulers (RedBeat on Redis, the file-backed one
of the embedded default) touch this file, so ``python -m workers.beat_heartbeat --check`` works
wherever beat runs: docker-compose, `lifecycle up`, or a hand-started ``celery beat``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lifecycle.core.settings import get_settings

ENV = "LIFECYCLE_BEAT_HEARTBEAT_FILE"
FILE_NAME = "beat.heartbeat"


def heartbeat_path() -> Path:
    """The file named by the environment, else ``beat.heartbeat`` in the var directory.

    In the var directory rather than /tmp so that two sites on one host never read each other's.
    """
    named = os.environ.get(ENV)
    return Path(named) if named else get_settings().var_dir / FILE_NAME


def touch() -> None:
    path = heartbeat_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
