"""The embedded default's broker: kombu's filesystem transport, minus a race on exchange files.

kombu keeps each exchange's bindings in ``<control>/<exchange>.exchange`` as one JSON list. When
that file does not exist yet, ``_queue_bind`` opens it with ``"wb"``, which truncates *before*
the lock is taken; two processes binding at once (Flower runs its inspections in parallel
threads, each binding a reply queue to ``reply.celery.pidbox``) can leave one list followed by
the tail of another, and every later publish to that exchange fails with "Extra data" until the
file is removed. Seen in our CI and reported downstream (treeverse/dvc-task#73).

The fix keeps kombu's own code: the file is made to exist, atomically and already holding an
empty list, before kombu binds. kombu then always takes its read-modify-write path under an
exclusive lock, and a binding only ever lengthens the list, so no write leaves stale bytes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from kombu.transport import filesystem

EMPTY_TABLE = b"[]"


def ensure_exchange_file(file: Path) -> None:
    """Create ``file`` holding an empty binding list, unless it exists; never visible half-made.

    Written under a name of its own and hard-linked into place: ``link`` fails on an existing
    name, so a concurrent creator or an existing table is left untouched, and no reader can see
    the file before it holds valid JSON (an ``O_EXCL`` create would be empty until written).
    """
    if file.exists():
        return
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        os.write(fd, EMPTY_TABLE)
    finally:
        os.close(fd)
    try:
        os.link(tmp, file)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


class Channel(filesystem.Channel):
    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> Any:
        # A private kombu helper that celery-types does not declare.
        file = self._exchange_file(exchange)  # type: ignore[attr-defined]
        self.control_folder.mkdir(exist_ok=True)
        ensure_exchange_file(file)
        return super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    Channel = Channel


# Celery's ``broker_transport`` takes this import path; kombu accepts dotted transport names only
# from that explicit setting, never from a URL.
TRANSPORT_PATH = f"{__name__}:Transport"
