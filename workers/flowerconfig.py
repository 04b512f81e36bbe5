"""Flower configuration loaded with `--conf` by `lifecycle up` and docker-compose.

Flower executes this file after reading FLOWER_* environment variables and the command line,
and the command line is applied again afterwards (so ``--address``/``--port``/``--db`` given
there win over the defaults below). Secrets (basic auth, OAuth) come from the environment
(FLOWER_BASIC_AUTH, FLOWER_OAUTH2_*), never from argv, so they do not show in `ps`.
"""

import logging as _logging
import os
import signal as _signal
from pathlib import Path

from flower.command import sigterm_handler as _sigterm_handler
from tornado.options import options as _options

from lifecycle.core.logging_setup import configure as _configure_logging
from workers.flower_hardening import format_task as _format_task
from workers.flower_hardening import install as _install

# Same log format as worker and beat (JSON off a terminal). Tornado added its own handler
# while parsing the command line; replace it, and tell Tornado not to add it again.
for _h in list(_logging.getLogger().handlers):
    _logging.getLogger().removeHandler(_h)
_configure_logging(_logging.INFO, service="flower")
logging = "none"


def _stop(signum: int, frame: object) -> None:
    # Ctrl-C stops Flower the way SIGTERM does (its handler exits, and the exit saves the state).
    # Exiting first joins Flower's inspection threads, which can wait on the broker: a second
    # signal then ends the process at once instead of printing a traceback from that join.
    for sig in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(sig, lambda *_: os._exit(0))
    _sigterm_handler(signum, frame)


_signal.signal(_signal.SIGINT, _stop)

# Refuse to run without authentication; /metrics behind the login; redact task fields as
# events arrive (see workers/flower_hardening.py).
_install(_options)

# Loopback unless the operator deliberately opens it (LIFECYCLE_FLOWER_ADDRESS, or FLOWER_ADDRESS
# / --address, which win).
address = _options.address or os.environ.get("LIFECYCLE_FLOWER_ADDRESS", "127.0.0.1")
if _options.port == 5555 and os.environ.get("LIFECYCLE_FLOWER_PORT"):
    port = int(os.environ["LIFECYCLE_FLOWER_PORT"])

# What the task pages show of each task: ids and counts only (second layer after the tasks'
# own id-only argsrepr and safe exceptions).
format_task = _format_task

# Flower's default gives a worker 1 s to answer its inspections; a busy 2-core host answers
# later, and Flower then logs failures and shows empty pages. An explicit value wins.
if _options.inspect_timeout == 1000.0:
    inspect_timeout = 5000.0

# Keep the task list readable for ops: what, which job, how it went.
tasks_columns = "name,uuid,state,args,kwargs,result,received,started,runtime,worker"
# History survives a Flower restart: state is saved every minute and on shutdown.
persistent = True
db = _options.db
if db == "flower":  # Flower's default: a file in whatever the current directory is
    db = str(Path(os.environ.get("LIFECYCLE_VAR_DIR", "var")).absolute() / "flower.db")
# Flower cannot create the folder its state lives in and only logs "Failed to load state".
Path(db).absolute().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
state_save_interval = 60_000
# Tasks kept in memory (and in the db file). Housekeeping no longer runs as tasks (it is a
# thread in beat), so this is all real jobs: a busy day of this site is ~5,000 (a sweep of
# 20,000 withdrawn members is ~50 tasks, plus withdrawals, deliveries, notice batches and
# shred jobs), so 30 days fit in 150,000 (~150 MB of memory in Flower).
max_tasks = 150_000
# Workers that vanished stay visible for a day, then drop off the dashboard.
purge_offline_workers = 24 * 3600
