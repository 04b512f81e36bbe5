"""Shred jobs: create them, send them to the host holding the files, run them there.

``enqueue_shred`` commits a job and its items in the primary DB, then sends the job id (never a
path) to the queue ``shred.<host>``; if the broker is down the job stays pending and the beat
task ``lifecycle.shred.resend_pending`` sends it later. ``run_job`` is what the worker on that
host executes: batches of up to ``BATCH_ITEMS`` items, each step persisted for the whole batch
before the next, so a job killed at any point finishes when it is delivered again:

    pending --(tmp_names recorded)--> working --(shredder: overwrite all, one flush round,
    then rename/unlink all, one fsync per directory)--> done --(ledger entries)--> ledgered

Paths are bytes: one that is not UTF-8 is stored base64-encoded (:func:`db_path`).

A file that is already gone completes as a no-op with a ledger note. Nothing here is Celery
specific except ``_send``; the task wrappers live in ``tasks/shred.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from kombu.exceptions import OperationalError
from sqlalchemy import Connection, CursorResult, bindparam, insert, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from lifecycle.core import db, dbkind, dispatch
from lifecycle.core.errors import UserError
from lifecycle.core.locks import job_lock
from lifecycle.core.queues import shred_queue
from lifecycle.core.settings import get_settings
from lifecycle.shred.paths import check_paths, db_path, fs_path
from lifecycle.shred.shredder import (
    Hooks,
    ShredOptions,
    ShredResult,
    random_name,
    resolve_roots,
    shred_paths,
)
from lifecycle.vault import crypto, keystore, ledger
from lifecycle.vault.crypto import derive_key
from models.base import utcnow
from models.requests import JobRun
from models.shred import ShredItem, ShredItemState, ShredJob, ShredJobState

log = logging.getLogger(__name__)

# A job not done this long after it was sent is sent again (doubling up to the cap). Duplicate
# deliveries are harmless: the job lock and the item states make them no-ops.
FIRST_RESEND_AFTER = timedelta(seconds=60)
MAX_RESEND_AFTER = timedelta(hours=6)
DEFAULT_CATEGORIES = ("uploaded_files",)
# Test-only: seconds to sleep after each written chunk, so a test can kill a worker mid-file.
TEST_CHUNK_DELAY_ENV = "LIFECYCLE_TEST_SHRED_CHUNK_DELAY"
# Items shredded (and recorded) per batch: one flush round and one ledger transaction each.
BATCH_ITEMS = 500


def _backoff(sends: int) -> timedelta:
    return min(FIRST_RESEND_AFTER * int(2 ** max(sends - 1, 0)), MAX_RESEND_AFTER)


def _validate_paths(
    paths: Sequence[str | bytes], *, same_host: bool, strict: bool, recursive: bool
) -> list[str]:
    """Textual checks always; the roots only when the files are on this host (another host
    has its own roots and checks them when it runs the job); with ``strict`` the files too."""

    # "/" as the only root leaves just the textual rules: absolute, no '..', no NUL. Resolved
    # once: a sweep batch hands thousands of paths, and each resolution is a realpath.
    roots = resolve_roots(get_settings().file_roots if same_host else ["/"])
    return check_paths(paths, roots, strict=same_host and strict, recursive=recursive)


def enqueue_shred(
    paths: Sequence[str | bytes],
    *,
    host: str | None = None,
    request_id: int | None = None,
    reason: str,
    legal_basis: str,
    passes: int = 1,
    zero: bool = False,
    verify: bool = False,
    recursive: bool = False,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    origin: str = "api",
    strict: bool = False,
    conn: Connection | None = None,
) -> int:
    """Create a shred job for ``paths`` on ``host`` (default: this host), commit, send it.

    Returns the job id. Raises :class:`UserError` (and creates nothing) for bad input: no paths,
    a relative path, ``..``, a path outside this host's roots (for a job on this host), bad
    options. With ``strict``
    (the CLI) local paths are also checked now (symlinks, hard links, ...), so a typo is an
    error instead of a refused item (and a missing file is an error too); otherwise such files
    are refused by the worker and recorded on the item, and files that are already gone
    complete as a no-op with a ledger note.

    Called again for the same ``request_id``, host and paths, it returns the existing job, so
    a re-run of the calling job does not shred (or ledger) twice.

    With ``conn`` (an open transaction of the caller's on the primary DB), the job is written
    in that transaction and NOT sent: the caller sends it with :func:`send_jobs` after its
    commit. That is how the engine hands over a deleted row's files together with the DELETE
    (one fact: rows gone, files owed), and on SQLite a second connection could not write while
    the caller holds the database's write lock.
    """
    settings = get_settings()
    host = host or settings.host_name
    if not host or "/" in host or len(host) > 200:
        raise UserError("host must be a host name")
    if not reason.strip() or not legal_basis.strip():
        raise UserError("a shred job needs a reason and a legal basis for the ledger")
    try:
        ShredOptions(passes=passes, zero=zero, verify=verify, recursive=recursive)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    unique = _validate_paths(
        paths, same_host=host == settings.host_name, strict=strict, recursive=recursive
    )

    paths_key = _paths_key(host, unique) if request_id is not None else None
    if request_id is not None:
        with _session(conn) as s:
            existing = s.scalar(
                select(ShredJob.id).where(
                    ShredJob.request_id == request_id,
                    ShredJob.host == host,
                    ShredJob.paths_key == paths_key,
                )
            )
        if existing is not None:
            if conn is None:
                _send_if_pending(existing)
            return int(existing)
    with _session(conn) as s:
        now = utcnow()
        job = ShredJob(
            host=host,
            state=ShredJobState.PENDING.value,
            origin=origin,
            reason=reason,
            legal_basis=legal_basis,
            categories=sorted(set(categories)),
            request_id=request_id,
            paths_key=paths_key,
            passes=passes,
            zero=zero,
            verify=verify,
            recursive=recursive,
            sends=0,
            next_send_at=now + FIRST_RESEND_AFTER,
            created_at=now,
        )
        s.add(job)
        s.flush()
        _add_items(s, job.id, host, unique)
        job_id = job.id
    if conn is None:
        _send_if_pending(job_id)
    return job_id


def _add_items(s: Session, job_id: int, host: str, paths: list[str]) -> None:
    # One multi-row INSERT: the ORM would insert row by row where the server gives no
    # RETURNING for ids (MySQL/MariaDB), which a withdrawal with thousands of files pays for.
    state = ShredItemState.PENDING.value
    conn = s.connection()
    if dbkind.is_mysql(conn) and paths:
        # Rendered once (dbkind.SqlRows): the driver escaped six values a row, five the same.
        rows = dbkind.SqlRows(
            conn.connection.dbapi_connection, (job_id, host, state, 0, False), map(db_path, paths)
        )
        conn.execute(
            text(
                "INSERT INTO lifecycle_shred_items (job_id, host, state, attempts, ledgered, path) "
                "VALUES :rows"
            ).bindparams(bindparam("rows", value=rows, type_=NullType()))
        )
        return
    s.execute(
        insert(ShredItem.__table__),
        [{"job_id": job_id, "host": host, "path": db_path(p), "state": state} for p in paths],
    )


def enqueue_shred_check(paths: list[str]) -> None:
    """What :func:`enqueue_shred` refuses for paths on this host, without writing anything."""
    _validate_paths(paths, same_host=True, strict=False, recursive=False)


def keep_refused(
    paths: list[str],
    *,
    request_id: int | None = None,
    reason: str,
    legal_basis: str,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    origin: str = "api",
    conn: Connection | None = None,
) -> int:
    """A job for paths :func:`enqueue_shred` refuses (outside the roots, relative): written
    anyway so the paths are not lost when the rows naming them go. When it runs, the worker
    refuses each item by the shredder's own rules and records why (visible in the job's
    counts); after the operator fixes the roots, re-running the job shreds them."""
    host = get_settings().host_name
    with _session(conn) as s:
        now = utcnow()
        job = ShredJob(
            host=host, state=ShredJobState.PENDING.value, origin=origin, reason=reason,
            legal_basis=legal_basis, categories=sorted(set(categories)), request_id=request_id,
            paths_key=None, passes=1, zero=False, verify=False, recursive=False, sends=0,
            next_send_at=now + FIRST_RESEND_AFTER, created_at=now,
        )  # fmt: skip
        s.add(job)
        s.flush()
        _add_items(s, job.id, host, list(dict.fromkeys(paths)))
        job_id = job.id
    if conn is None:
        _send_if_pending(job_id)
    return int(job_id)


@contextlib.contextmanager
def _session(conn: Connection | None) -> Iterator[Session]:
    """Our own committed session, or one that joins the caller's open transaction."""
    if conn is None:
        with db.session("primary") as s:
            yield s
        return
    # Joins the caller's open transaction ("conservative_savepoint": no savepoint, never
    # commits it); the caller commits or rolls back.
    with Session(bind=conn) as s:
        yield s
        s.flush()


def send_jobs(job_ids: Sequence[int]) -> None:
    """Send jobs written with ``conn=`` once the caller committed (a broker failure leaves them
    to the resend beat)."""
    for job_id in job_ids:
        _send_if_pending(job_id)


def _paths_key(host: str, paths: Sequence[str]) -> str:

    key = derive_key(get_settings().master_key_bytes(), b"shred-job-paths")
    msg = b"\x00".join([host.encode(), *(os.fsencode(p) for p in sorted(set(paths)))])
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def _send(job_id: int, host: str, sends: int) -> str:
    task_id = f"shred-{job_id}-{sends}"
    dispatch.send(dispatch.SHRED_FILES, job_id, queue=shred_queue(host), task_id=task_id)
    return task_id


def _send_if_pending(job_id: int) -> bool:
    """Send the job now; on a broker failure leave it for the resend beat. True if sent."""
    with db.session("primary") as s:
        job = s.get(ShredJob, job_id)
        if job is None or job.state == ShredJobState.DONE.value:
            return False
        host, sends = job.host, job.sends + 1

    try:
        task_id = _send(job_id, host, sends)
    except OperationalError as exc:
        log.warning(
            "shred job %s stored; broker unreachable (%s), it will be re-sent",
            job_id,
            type(exc).__name__,
        )
        return False
    except Exception:
        # The job is committed either way; the resend beat retries it. Raising here would
        # make the caller believe nothing was stored and submit a second job.
        log.exception("shred job %s stored; sending it failed, it will be re-sent", job_id)
        return False
    now = utcnow()
    with db.session("primary") as s:
        s.execute(
            update(ShredJob)
            .where(ShredJob.id == job_id)
            .values(
                task_id=task_id,
                sends=sends,
                sent_at=now,
                next_send_at=now + _backoff(sends),
            )
        )
    return True


# Item outcomes after which the file may still exist: what `retry_refused` tries again.
NOT_DESTROYED = ("refused", "failed")


def retry_refused(job_id: int) -> int:
    """Put a finished job's refused and failed items back to pending and send the job again;
    returns how many items it reopened.

    For the operator who fixed what the shredder refused (a storage root, a site root, a
    permission): the same job, with the same ledger duties, instead of a new one that would lose
    the link to its request. Files already destroyed stay done. Idempotent: a second call finds
    nothing refused while the job runs, and resending a pending job is what the beat does anyway.
    """
    with db.session("primary") as s:
        job = s.get(ShredJob, job_id, with_for_update=True)
        if job is None:
            raise UserError(f"shred job {job_id} does not exist")
        if job.state != ShredJobState.DONE.value:
            raise UserError(f"shred job {job_id} is still {job.state}: wait for it to finish")
        reopened = cast(
            "CursorResult[Any]",
            s.execute(
                update(ShredItem)
                .where(
                    ShredItem.job_id == job_id,
                    ShredItem.state == ShredItemState.DONE.value,
                    ShredItem.status.in_(NOT_DESTROYED),
                    ShredItem.path.is_not(None),
                )
                .values(
                    state=ShredItemState.PENDING.value,
                    status=None,
                    reason=None,
                    detail=None,
                    ledgered=False,
                    finished_at=None,
                )
            ),
        ).rowcount
        if not reopened:
            raise UserError(f"shred job {job_id} has no refused or failed file to try again")
        job.state = ShredJobState.PENDING.value
        job.finished_at = None
        job.next_send_at = utcnow()
    _send_if_pending(job_id)
    return int(reopened or 0)


def resend_pending(*, now: datetime | None = None, force: bool = False, limit: int = 500) -> int:
    """Send again the jobs not done whose resend time has come (all of them with ``force``)."""
    now = now or utcnow()
    with db.session("primary") as s:
        stmt = select(ShredJob.id).where(ShredJob.state != ShredJobState.DONE.value)
        if not force:
            stmt = stmt.where(ShredJob.next_send_at <= now)
        ids = list(s.scalars(stmt.order_by(ShredJob.id).limit(limit)))
    sent = 0
    for job_id in ids:
        if _send_if_pending(job_id):
            sent += 1
    return sent


def files_whose_purpose_ended() -> list[str]:
    """Managed files on this host whose processing purpose ended according to the data map.

    The data map engine provides this (the columns holding file paths, and the rule that ends
    each record's purpose); without it there is nothing to add and the list is empty.
    """
    return []


def sweep_orphans() -> dict[str, int]:
    """Nightly: send every unfinished shred job again, and shred files whose purpose ended."""
    settings = get_settings()
    resent = resend_pending(force=True)
    candidates = files_whose_purpose_ended()
    queued = 0
    if candidates:
        with db.session("primary") as s:
            pending = {
                fs_path(p)
                for p in s.scalars(
                    select(ShredItem.path).where(
                        ShredItem.host == settings.host_name,
                        ShredItem.state != ShredItemState.DONE.value,
                    )
                )
                if p is not None
            }
        fresh = [p for p in dict.fromkeys(candidates) if p not in pending]
        if fresh:
            enqueue_shred(
                fresh,
                reason="processing purpose ended (data map)",
                legal_basis="개인정보 보호법 제21조",
                origin="sweep",
            )
            queued = len(fresh)
    counts = {"resent": resent, "queued": queued}
    with db.session("primary") as s:
        now = utcnow()
        s.add(
            JobRun(
                job="shred.sweep_orphans",
                started_at=now,
                finished_at=now,
                outcome="ok",
                counts=counts,
            )
        )
    return counts


# -- running a job on its host ---------------------------------------------------------------


@contextlib.contextmanager
def _job_lock(job_id: int) -> Iterator[bool]:
    """Exclusive per job while held; released by the kernel or the server if we die."""
    with job_lock(db.engine("primary"), f"shred-job-{job_id}") as lock:
        yield lock is not None
        if lock is not None and job_is_done(job_id):
            # One lock file per job would pile up in the embedded mode; a late delivery that
            # still opens the old inode just finds the job done.
            lock.discard()


def job_is_done(job_id: int) -> bool:
    with db.session("primary") as s:
        return s.scalar(select(ShredJob.state).where(ShredJob.id == job_id)) == "done"


def _hooks_from_env() -> Hooks | None:
    delay = float(os.environ.get(TEST_CHUNK_DELAY_ENV, "0") or 0)
    if delay <= 0:
        return None
    written = {"pos": 0}

    def on_chunk(_n: int, done: int) -> None:
        # Per MiB written, whatever the chunk size, so a test's timing does not depend on it.
        step = done - written["pos"] if done > written["pos"] else done
        written["pos"] = done
        time.sleep(delay * step / (1 << 20))

    return Hooks(on_chunk=on_chunk)


def _item_ids(job_id: int) -> list[int]:
    with db.session("primary") as s:
        return list(
            s.scalars(
                select(ShredItem.id)
                .where(
                    ShredItem.job_id == job_id,
                    (ShredItem.state != ShredItemState.DONE.value)
                    | (ShredItem.ledgered.is_(False)),
                )
                .order_by(ShredItem.id)
            )
        )


def _counts(job_id: int) -> dict[str, int]:
    with db.session("primary") as s:
        rows = s.execute(
            select(ShredItem.state, ShredItem.status, ShredItem.files).where(
                ShredItem.job_id == job_id
            )
        ).all()
    counts = {"total": len(rows), "done": 0, "shredded": 0, "missing": 0, "refused": 0}
    counts["failed"] = 0
    counts["files"] = 0
    for state, status, files in rows:
        if state == ShredItemState.DONE.value:
            counts["done"] += 1
            if status is not None:  # set with the state (_store_result)
                counts[status] = counts.get(status, 0) + 1
            counts["files"] += files or 0
    return counts


def run_job(
    job_id: int,
    *,
    task_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """Process the job's unfinished items on this host; safe to call any number of times.

    Returns counts only (no paths): this is what a Celery result and Flower show.
    """
    settings = get_settings()
    with db.session("primary") as s:
        job = s.get(ShredJob, job_id)
        if job is None:
            log.error("shred job %s does not exist", job_id)
            return {"job": job_id, "skipped": "unknown job"}
        if job.host != settings.host_name:
            # A message on the wrong queue (or a worker with the wrong LIFECYCLE_HOST_NAME)
            # must not touch this host's files; the resend beat routes the job correctly.
            log.error(
                "shred job %s belongs to another host; this worker serves %r: check "
                "LIFECYCLE_HOST_NAME and the worker's -Q",
                job_id,
                settings.host_name,
            )
            return {"job": job_id, "skipped": "other host"}
        if job.state == ShredJobState.DONE.value:
            return {"job": job_id, **(job.counts or {})}
        options = ShredOptions(
            passes=job.passes, zero=job.zero, verify=job.verify, recursive=job.recursive
        )
    hooks = hooks or _hooks_from_env()

    with _job_lock(job_id) as mine:
        if not mine:
            # Another delivery of this job is running right now; it will finish it.
            return {"job": job_id, "skipped": "running elsewhere"}
        with db.session("primary") as s:
            s.execute(
                update(ShredJob)
                .where(ShredJob.id == job_id)
                .values(state=ShredJobState.RUNNING.value, started_at=utcnow(), task_id=task_id)
            )
        ids = _item_ids(job_id)
        total = _counts(job_id)["total"]
        done_before = total - len(ids)
        for first in range(0, len(ids), BATCH_ITEMS):
            batch = ids[first : first + BATCH_ITEMS]
            _run_batch(batch, options, settings.file_roots, hooks)
            _ledger_items(batch, task_id)
            if progress:
                progress(done_before + first + len(batch), total)
        counts = _counts(job_id)
        with db.session("primary") as s:
            s.execute(
                update(ShredJob)
                .where(ShredJob.id == job_id)
                .values(state=ShredJobState.DONE.value, finished_at=utcnow(), counts=counts)
            )
    return {"job": job_id, **counts}


def _run_batch(
    item_ids: Sequence[int],
    options: ShredOptions,
    roots: Sequence[os.PathLike[str] | str],
    hooks: Hooks | None,
) -> None:
    """Shred the unfinished items of ``item_ids`` as one batch, then record every result.

    The temporary names are committed before the shredder starts and the results only after
    it returned, so a crash anywhere leaves each item ``working`` with its name recorded: the
    next run overwrites again what is still there, finishes what was renamed, and notes what
    is already gone.
    """
    work: list[tuple[int, str, str, bool]] = []
    with db.session("primary") as s:
        for item in s.scalars(
            select(ShredItem).where(ShredItem.id.in_(item_ids)).order_by(ShredItem.id)
        ):
            if item.state == ShredItemState.DONE.value:
                continue
            item.tmp_name = item.tmp_name or random_name()
            interrupted = item.state == ShredItemState.WORKING.value
            item.state = ShredItemState.WORKING.value
            item.attempts += 1
            item.started_at = item.started_at or utcnow()
            work.append((item.id, fs_path(item.path or ""), item.tmp_name, interrupted))
    if not work:
        return
    results = shred_paths([(p, t) for _, p, t, _ in work], roots, options, hooks=hooks)
    with db.session("primary") as s:
        for (item_id, _, _, interrupted), r in zip(work, results, strict=True):
            done_item = s.get(ShredItem, item_id)
            assert done_item is not None
            _store_result(done_item, r, interrupted)


def _store_result(item: ShredItem, r: ShredResult, interrupted: bool) -> None:
    item.state = ShredItemState.DONE.value
    item.status = r.status
    item.reason = r.reason or None
    item.detail = r.detail or None
    if r.status == "missing" and interrupted:
        # Gone although we had started: the previous attempt got as far as the unlink.
        item.detail = "already gone after an interrupted attempt"
    item.size = r.size
    item.overwritten = r.overwritten
    item.passes = r.passes
    item.zero_pass = r.zero_pass
    item.verified = r.verified
    item.fs_type = r.fs_type or None
    item.overwrite_trusted = r.overwrite_trusted
    item.files = r.files
    item.resumed = r.resumed
    item.finished_at = utcnow()
    if not r.ok:
        # Nothing was destroyed: no ledger entry; the path stays for the operator.
        item.ledgered = True


def _ledger_items(item_ids: Sequence[int], task_id: str | None) -> None:
    """Record each destroyed (or already absent) file in the ledger, once, then forget its path.

    One archive transaction for the batch; a crash before the paths are blanked only makes the
    next run find the entries already recorded (dedup key per item).
    """

    with db.session("primary") as s:
        rows = list(
            s.scalars(
                select(ShredItem).where(
                    ShredItem.id.in_(item_ids),
                    ShredItem.state == ShredItemState.DONE.value,
                    ShredItem.ledgered.is_(False),
                )
            )
        )
        snapshots = [{c.key: getattr(i, c.key) for c in ShredItem.__table__.columns} for i in rows]
        job_ids = {snap["job_id"] for snap in snapshots}
        jobs = {
            j.id: {
                "reason": j.reason,
                "legal_basis": j.legal_basis,
                "categories": list(j.categories or []),
                "request_id": j.request_id,
            }
            for j in s.scalars(select(ShredJob).where(ShredJob.id.in_(job_ids)))
        }
    if not snapshots:
        return
    refs: dict[int, str] = {}
    with db.session("archive") as a:
        key = keystore.ref_key(a)
        entries = []
        for snap in sorted(snapshots, key=lambda x: x["id"]):
            ref = snap["path_ref"] or crypto.file_ref(
                key, fs_path(snap["path"] or ""), snap["host"]
            )
            refs[snap["id"]] = ref
            entries.append(_ledger_entry(snap, jobs[snap["job_id"]], ref, task_id))
        ledger.append_many(a, entries)
    with db.session("primary") as s:
        for item_id, ref in refs.items():
            s.execute(
                update(ShredItem)
                .where(ShredItem.id == item_id)
                .values(ledgered=True, path_ref=ref, path=None)
            )


def _ledger_entry(
    snapshot: dict[str, Any], job_info: dict[str, Any], ref: str, task_id: str | None
) -> dict[str, Any]:
    item_id = snapshot["id"]
    shredded = snapshot["status"] == "shredded"
    opts = ShredOptions(
        passes=max(1, snapshot["passes"] or 1),
        zero=bool(snapshot["zero_pass"]),
        verify=bool(snapshot["verified"]),
    )
    details: dict[str, Any] = {
        "outcome": "shredded" if shredded else "already_absent",
        "job_id": snapshot["job_id"],
        "item_id": item_id,
        "host": snapshot["host"],
    }
    if shredded:
        details.update(
            size=snapshot["size"],
            overwritten=snapshot["overwritten"],
            passes=snapshot["passes"],
            zero_pass=bool(snapshot["zero_pass"]),
            verified=bool(snapshot["verified"]),
            files=snapshot["files"],
            fs_type=snapshot["fs_type"],
            overwrite_trusted=bool(snapshot["overwrite_trusted"]),
            resumed=bool(snapshot["resumed"]),
        )
    else:
        details["note"] = snapshot["detail"] or "the file was already gone; nothing to do"
    return {
        "action": "file_shred",
        "categories": job_info["categories"],
        "tables": [],
        "subjects": 1 if job_info["request_id"] is not None else 0,
        "rows": (snapshot["files"] or 0) if shredded else 0,
        "reason": job_info["reason"],
        "legal_basis": job_info["legal_basis"],
        "method": opts.method if shredded else "none (file already absent)",
        "actor": f"lifecycle.shred.files@{snapshot['host']}",
        "task_id": task_id,
        "request_id": job_info["request_id"],
        "subject_ref": ref,
        "details": details,
        "dedup_key": f"shred:{item_id}",
    }
