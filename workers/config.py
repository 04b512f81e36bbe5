"""Celery configuration, built from Settings. One line per setting says why it is set."""

from __future__ import annotations

from typing import Any

from kombu import Queue

from lifecycle.core import dispatch, queues
from lifecycle.core.settings import Settings
from workers import fsbroker

# The longest any task may run. Sweeps are chunked into batch tasks so none comes close.
TASK_TIME_LIMIT = 30 * 60
TASK_SOFT_TIME_LIMIT = 25 * 60
# A Redis message not acked within this many seconds is redelivered. It must exceed every
# task's time limit, or a long task would be delivered to a second worker while still running.
VISIBILITY_TIMEOUT = 2 * TASK_TIME_LIMIT + 600
# Replaced after its task beyond this: see worker_max_memory_per_child below.
WORKER_MAX_MEMORY_KIB = 512 * 1024


def celery_config(s: Settings) -> dict[str, Any]:
    transport_options: dict[str, Any] = {}
    broker_transport: str | None = None
    if s.broker_is_filesystem:
        # kombu's filesystem transport, with its exchange-file race closed (see fsbroker).
        broker_transport = fsbroker.TRANSPORT_PATH
        folder = s.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
        }
    else:
        transport_options = {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            # Reconnect rather than crash when Redis restarts under a running worker.
            "retry_on_timeout": True,
            "health_check_interval": 25,
        }

    host_queues = queues.worker_queues(s.host_name)
    conf: dict[str, Any] = {
        "broker_url": s.broker_url,
        "result_backend": s.result_backend,
        # Only JSON crosses the broker: no pickle (code execution) and ids are all we send.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the task finished, so a worker killed mid-task leaves the message to redo.
        "task_acks_late": True,
        # ...and if the child process dies (SIGKILL, OOM), requeue instead of acking as failed.
        "task_reject_on_worker_lost": True,
        # One message in hand per process: a killed worker strands at most one job.
        "worker_prefetch_multiplier": 1,
        # A pool process above this (KiB) is replaced after its current task, so a leak in a
        # library cannot grow a long-lived worker until the OOM killer picks a victim. Sweep
        # batches peak near 140 MB (bench_sweep at 3,000,000 members), 200 MB on MariaDB
        # (2,000 members a batch, bench_sweep_mariadb); the coordinator is never
        # cut short, only replaced once it returns.
        "worker_max_memory_per_child": WORKER_MAX_MEMORY_KIB,
        # Under acks_late, a lost broker connection would let another worker take the task;
        # cancel ours so it is not applied twice concurrently.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        "broker_transport": broker_transport,
        # The Redis result backend and the visibility check read their own copies of the option.
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT}
        if not s.broker_is_filesystem
        else {},
        "task_time_limit": TASK_TIME_LIMIT,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT,
        # Flower shows every job from 'sent' to 'succeeded' only if both event kinds are on.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Show STARTED in Flower/--wait rather than a job looking queued while it runs.
        "task_track_started": True,
        # Extended results would copy task args (and hence any mistake) into the backend.
        "result_extended": False,
        "result_expires": 7 * 24 * 3600,
        # The site's legal clock (3 AM sweeps) is Seoul's.
        "timezone": s.timezone,
        "enable_utc": True,
        # Separate queues so a flood of notices never delays a withdrawal.
        "task_default_queue": queues.REQUESTS,
        "task_queues": [Queue(q, routing_key=q) for q in host_queues],
        "task_create_missing_queues": True,
        "task_routes": {
            "lifecycle.sweep.*": {"queue": queues.ARCHIVE},
            "lifecycle.purge*": {"queue": queues.ARCHIVE},
            # Minutes of sampling every table: kept off the requests queue.
            "lifecycle.datamap.*": {"queue": queues.ARCHIVE},
            "lifecycle.notify.*": {"queue": queues.NOTIFY},
            "lifecycle.notice.*": {"queue": queues.NOTIFY},
            # Callers send shred jobs to the files' host explicitly; a bare .delay() stays on
            # this host rather than landing on the shared requests queue.
            dispatch.SHRED_FILES: {"queue": queues.shred_queue(s.host_name)},
        },
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }
    if s.broker_is_redis:
        # Celery's Redis caveats ask for the same value under this third name too.
        conf["visibility_timeout"] = VISIBILITY_TIMEOUT
        # RedBeat keeps the schedule and a lock in Redis: a second beat waits instead of
        # double-firing the nightly jobs. Our subclass outlives a Redis restart.
        conf["beat_scheduler"] = "schedules.scheduler:Scheduler"
        conf["redbeat_redis_url"] = s.broker_url
        conf["redbeat_key_prefix"] = "lifecycle:redbeat"
        conf["redbeat_lock_timeout"] = 60
        conf["beat_max_loop_interval"] = 5
    else:
        conf["beat_scheduler"] = "schedules.scheduler:EmbeddedScheduler"
        conf["beat_schedule_filename"] = str(s.var_dir / "beat-schedule")
    return conf
