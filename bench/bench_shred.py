"""Benchmark: the shredder against the disk's limit and against GNU shred, in one run.

    .venv/bin/python bench/bench_shred.py [--dir var] [--size-mib 1024] [--files 2000]
        [--file-kib 64] [--e2e-files 20000] [--e2e-size-mib 8192] [--gnu-sample N]
        [--no-e2e | --e2e-only]

Every baseline overwrites **in place**, as the shredder does (a new file would have to allocate
blocks, which the shredder never does):

(a) one large file: ``dd if=/dev/zero conv=notrunc,fsync`` over the file, then the shredder on
    that same file. Goal: at least 0.85 of dd.
(b) many small files, shredder in one batch (``shred_paths``):
    - against GNU ``shred -n 1 -u`` called per file (files/s); goal: at least 20x;
    - against the disk's own write rate for the same bytes: one ``dd conv=notrunc,fsync`` in
      place over a file as large as all the small files together (MiB/s); goal: at least 0.5x.
(c) end to end, ``lifecycle shred ... --wait`` (CLI start, job in PostgreSQL, Redis, a real
    Celery worker, ledger entries in the archive DB), at sizes where the job and not the
    command's fixed start-up is measured. Needs PostgreSQL (--pg) and redis-server; creates its
    own databases and Redis and removes them.
    - ``--recursive DIR`` of --e2e-files files of --file-kib (20,000 x 64 KiB) against GNU
      ``shred -n 1 -u`` per file (goal: at least 20x; ``--gnu-sample N`` times GNU shred on N
      of the files only: one process per file, so its rate does not depend on the count, and
      on a busy disk 20,000 runs take over half an hour), and against the same work done by
      the filesystem's tools (goal: at least 0.7x): **one** ``dd conv=notrunc,fsync`` in place
      over a file as large as all the small files together (a dd per file would pay a process
      start per file, unfair the other way), then removing as many files of that size, as
      ``rm`` does (one unlink each), then **one** ``fsync`` of their directory;
    - one file of --e2e-size-mib (8 GiB) against in-place dd of the same file (goal: at least
      0.8x).

The shredder's figure is until its result (every file overwritten, on disk, unlinked, its
directory synced: what a job records); the blocks are freed after that, while the job records
(see ``_Releaser`` in the shredder). The "same work" rows add that freeing, against dd followed
by ``rm``, which free blocks too.

Peak RSS: this process for (a) and (b) (the shredder runs here; dd and shred are children), the
worker's processes for (c). Goal < 100 MB. All sides use the same directory, so the same disk.
Other load on the machine moves every figure: read the ratios, each from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lifecycle.shred.fsinfo import fs_type_of_path, overwrite_trusted  # noqa: E402
from lifecycle.shred.shredder import (  # noqa: E402
    ShredOptions,
    release_unlinked,
    shred_path,
    shred_paths,
)
from tests.helpers import free_port, stop_group, wait_port, write_master_key  # noqa: E402

MiB = 1 << 20


def _sync() -> None:
    # Start each timed step with no dirty pages left over from the previous one.
    os.sync()


def _timed(fn: Callable[[], object]) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _quiet(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _make_big(path: Path, size_mib: int) -> None:
    # Random bytes (nothing a layer below could compress), but one 16 MiB block written again
    # and again: /dev/urandom for every byte takes minutes for 8 GiB on a busy machine.
    block = os.urandom(16 * MiB)
    with open(path, "wb") as fh:
        left = size_mib * MiB
        while left > 0:
            left -= fh.write(block[: min(left, len(block))])


def dd_in_place(path: Path, size_mib: int) -> float:
    """Seconds for dd to overwrite ``path`` in place and fsync it: the disk's rate here."""
    cmd = ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={size_mib}", "conv=notrunc,fsync"]
    return _timed(lambda: _quiet(cmd))


def dd_then_rm(paths: list[Path], size_mib: int, one: Path) -> float:
    """Seconds for in-place dd of ``one`` (``size_mib``) plus removing ``paths`` and a sync.

    The same work as the shredder's (overwrite in place, then free the blocks and the names),
    with the filesystem's own tools: on a filesystem mounted with ``discard`` freeing blocks is
    not free, and in-place dd alone never frees any.
    """
    dd_s = dd_in_place(one, size_mib)
    _sync()
    t0 = time.perf_counter()
    for p in paths:
        p.unlink()
    # Durable removal, as the shredder makes it: one fsync per directory (not a machine-wide sync).
    for d in {p.parent for p in paths}:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return dd_s + time.perf_counter() - t0


def _freeing() -> float:
    """Seconds until the blocks of the files just shredded are freed (after the result)."""
    t0 = time.perf_counter()
    release_unlinked()
    return time.perf_counter() - t0


def bench_big(work: Path, size_mib: int) -> tuple[float, float, float, float]:
    """MiB/s of in-place dd, of the shredder (until its result), of in-place dd followed by rm,
    and of the shredder until the file's blocks are freed too."""
    path = work / "big.bin"
    _make_big(path, size_mib)
    same = dd_then_rm([path], size_mib, path)
    _make_big(path, size_mib)
    dd_s = dd_in_place(path, size_mib)
    holder: list[str] = []
    shred_s = _timed(lambda: holder.append(shred_path(str(path), [work], ShredOptions()).status))
    free_s = _freeing()
    if holder != ["shredded"]:
        raise SystemExit(f"shredder did not shred the big file: {holder}")
    return size_mib / dd_s, size_mib / shred_s, size_mib / same, size_mib / (shred_s + free_s)


def _make_files(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir()
    payload = os.urandom(size)
    paths = []
    for i in range(count):
        p = folder / f"member-{i:05d}-upload.bin"
        p.write_bytes(payload)
        paths.append(p)
    return paths


def bench_small(
    work: Path, count: int, size_kib: int
) -> tuple[float, float, float, float, float, float]:
    """files/s of GNU shred and of the shredder; MiB/s of the shredder, of in-place dd of the
    same bytes, of that dd plus removing as many files of that size, and of the shredder until
    the files' blocks are freed too."""
    size = size_kib * 1024
    gnu = _make_files(work / "gnu", count, size)
    gnu_s = _timed(lambda: [_quiet(["shred", "-n", "1", "-u", str(p)]) for p in gnu])

    ours = _make_files(work / "ours", count, size)
    results: list[str] = []
    ours_s = _timed(
        lambda: results.extend(
            r.status for r in shred_paths([(str(p), None) for p in ours], [work])
        )
    )
    free_s = _freeing()
    if set(results) != {"shredded"}:
        raise SystemExit("shredder did not shred every small file")

    total_mib = count * size / MiB
    same_bytes = work / "same-bytes.bin"
    _make_big(same_bytes, max(4, round(total_mib)))
    dd_s = dd_in_place(same_bytes, max(4, round(total_mib)))
    doomed = _make_files(work / "rm", count, size)
    same_s = dd_then_rm(doomed, max(4, round(total_mib)), same_bytes)
    same_bytes.unlink()
    return (
        count / gnu_s,
        count / ours_s,
        total_mib / ours_s,
        max(4, round(total_mib)) / dd_s,
        total_mib / same_s,
        total_mib / (ours_s + free_s),
    )


# -- (c) end to end ------------------------------------------------------------------------------


class Stack:
    """Own PostgreSQL databases and redis-server, one shred worker; the CLI runs against them."""

    def __init__(self, pg: str, work: Path, tmp: Path) -> None:
        import psycopg

        self.pg = pg
        self.tmp = tmp
        tag = uuid.uuid4().hex[:8]
        self.dbs = [f"lct_bench_shred_{tag}_p", f"lct_bench_shred_{tag}_a"]
        with psycopg.connect(pg, autocommit=True) as admin:
            for name in self.dbs:
                admin.execute(f'CREATE DATABASE "{name}"')
        base = pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        port = free_port()
        self.redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp),
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.worker: subprocess.Popen[bytes] | None = None
        wait_port(port)
        # With its bytecode cache, as after `pip install` (which compiles it): a shell with
        # PYTHONDONTWRITEBYTECODE would compile the project's modules at every command (the
        # warm-up job writes the cache, as bench_cli's untimed run does).
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LIFECYCLE_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        self.env.update(
            PYTHONPATH=str(REPO),
            LIFECYCLE_VAR_DIR=str(tmp / "var"),
            LIFECYCLE_PRIMARY_DATABASE_URL=f"{base}/{self.dbs[0]}",
            LIFECYCLE_ARCHIVE_DATABASE_URL=f"{base}/{self.dbs[1]}",
            LIFECYCLE_BROKER_URL=f"redis://127.0.0.1:{port}/0",
            LIFECYCLE_RESULT_BACKEND=f"redis://127.0.0.1:{port}/0",
            LIFECYCLE_FILE_ROOTS=str(work),
            LIFECYCLE_HOST_NAME="bench",
        )
        # A server archive DB never gets a master key made up on the fly.
        (tmp / "var").mkdir()
        write_master_key(tmp / "var" / "master.key")
        r = self.cli("db", "upgrade")
        if r.returncode:
            raise SystemExit(f"db upgrade failed: {r.stderr.strip()[-500:]}")
        log = (tmp / "worker.log").open("wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "shred.bench",
             "-c", "1", "--loglevel", "WARNING", "--without-mingle", "--without-gossip",
             "-n", f"bench-{tag}@%h"],
            env=self.env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        # The first job also warms the worker's imports and connections, as in production.
        warm = work / "warm.bin"
        warm.write_bytes(b"x" * 4096)
        r = self.cli("shred", str(warm), "--wait", "--timeout", "120")
        if r.returncode:
            raise SystemExit(f"warm-up shred failed: {r.stderr.strip()[-500:]}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lifecycle.cli.entry", *args],
            env=self.env, cwd=self.tmp, capture_output=True, text=True, check=False,
        )  # fmt: skip

    def shred(self, *args: str, synced: bool = False) -> float:
        if not synced:
            _sync()
        t0 = time.perf_counter()
        r = self.cli("shred", *args, "--wait", "--timeout", "3600")
        elapsed = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(f"lifecycle shred failed: {r.stderr.strip()[-500:]}")
        return elapsed

    def last_job_seconds(self) -> float:
        """How long the last job ran in the worker (its row's started_at to finished_at)."""
        import psycopg

        with psycopg.connect(self.pg.rsplit("/", 1)[0] + "/" + self.dbs[0]) as conn:
            row = conn.execute(
                "SELECT EXTRACT(EPOCH FROM finished_at - started_at) FROM lifecycle_shred_jobs "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return float(row[0]) if row and row[0] is not None else float("nan")

    def wait_freed(self, work: Path, limit: float = 120.0) -> None:
        """Until no worker process holds an unlinked file under ``work`` open."""
        assert self.worker is not None
        deadline = time.monotonic() + limit
        prefix = str(work)
        while time.monotonic() < deadline:
            held = 0
            for pid in _tree(self.worker.pid):
                with contextlib.suppress(OSError):
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        with contextlib.suppress(OSError):
                            target = os.readlink(f"/proc/{pid}/fd/{fd}")
                            held += target.startswith(prefix) and target.endswith(" (deleted)")
            if not held:
                return
            time.sleep(0.05)
        raise SystemExit("the worker still holds shredded files open after two minutes")

    def worker_peak_mb(self) -> tuple[float, float]:
        """Peak RSS (VmHWM) of the pool process that ran the jobs, and of the worker's main."""
        assert self.worker is not None
        peaks = {}
        for pid in _tree(self.worker.pid):
            try:
                with open(f"/proc/{pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            peaks[pid] = int(line.split()[1]) / 1024
            except OSError:
                pass
        main = peaks.pop(self.worker.pid, 0.0)
        return max(peaks.values(), default=0.0), main

    def close(self) -> None:
        import psycopg

        if self.worker is not None:
            stop_group(self.worker)
        self.redis.terminate()
        self.redis.wait(10)
        with psycopg.connect(self.pg, autocommit=True) as admin:
            for name in self.dbs:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                for c in fh.read().split():
                    out += _tree(int(c))
    except OSError:
        pass
    return out


def bench_e2e(
    work: Path, pg: str, count: int, size_kib: int, big_mib: int, gnu_sample: int
) -> dict[str, float]:
    """Rates of (c): files/s and MiB/s of each side, and the worker's peak RSS (MB).

    GNU shred runs once per file, a process each, so its rate does not depend on how many files
    there are: ``gnu_sample`` (when smaller than ``count``) times it on that many files only.
    """
    tmp = Path(tempfile.mkdtemp(prefix="bench-shred-stack-"))
    stack = Stack(pg, work, tmp)
    out: dict[str, float] = {}
    try:
        size = size_kib * 1024
        total_mib = count * size / MiB
        sample = min(count, gnu_sample) if gnu_sample > 0 else count
        gnu = _make_files(work / "e2e-gnu", sample, size)
        gnu_s = _timed(lambda: [_quiet(["shred", "-n", "1", "-u", str(p)]) for p in gnu])
        (work / "e2e-gnu").rmdir()
        out["gnu_files"] = sample / gnu_s
        out["gnu_sample"] = sample

        # The same work with the filesystem's tools: the same bytes overwritten in place by one
        # dd (one dd per file would pay a process start per file, unfair the other way), then
        # rm of as many files of that size and one fsync of their directory.
        same_bytes = work / "e2e-same-bytes.bin"
        mib = max(4, round(total_mib))
        _make_big(same_bytes, mib)
        doomed = _make_files(work / "e2e-rm", count, size)
        same_s = dd_then_rm(doomed, mib, same_bytes)
        same_bytes.unlink()
        (work / "e2e-rm").rmdir()
        out["same_small_mibs"] = total_mib / same_s

        folder = work / "e2e-ours"
        _make_files(folder, count, size)
        _sync()
        t0 = time.perf_counter()
        small_s = stack.shred("--recursive", str(folder), synced=True)
        if folder.exists():
            raise SystemExit("the recursive job left the folder behind")
        stack.wait_freed(work)  # the worker frees the blocks after the result
        freed_s = time.perf_counter() - t0
        out["small_job_s"], out["small_s"] = stack.last_job_seconds(), small_s
        out["e2e_files"] = count / small_s
        out["e2e_small_mibs"] = total_mib / small_s
        out["e2e_small_freed_mibs"] = total_mib / freed_s

        big = work / "e2e-big.bin"
        _make_big(big, big_mib)
        out["same_big_mibs"] = big_mib / dd_then_rm([big], big_mib, big)
        _make_big(big, big_mib)
        out["dd_big_mibs"] = big_mib / dd_in_place(big, big_mib)
        _sync()
        t0 = time.perf_counter()
        big_s = stack.shred(str(big), synced=True)
        if big.exists():
            raise SystemExit("the job left the large file behind")
        stack.wait_freed(work)
        out["big_job_s"], out["big_s"] = stack.last_job_seconds(), big_s
        out["e2e_big_mibs"] = big_mib / big_s
        out["e2e_big_freed_mibs"] = big_mib / (time.perf_counter() - t0)
        out["worker_rss"], out["worker_main_rss"] = stack.worker_peak_mb()
        return out
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _rows_ab(
    work: Path, args: argparse.Namespace
) -> list[tuple[str, str, str, str, str, bool | None]]:
    dd_rate, big_rate, big_same, big_freed = bench_big(work, args.size_mib)
    gnu_rate, small_rate, small_mibs, disk_rate, small_same, small_freed = bench_small(
        work, args.files, args.file_kib
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n, k = args.files, args.file_kib
    return [
        (f"(a) 1 file of {args.size_mib} MiB", f"{big_rate:,.0f} MiB/s",
         f"dd conv=notrunc,fsync in place {dd_rate:,.0f} MiB/s", f"{big_rate / dd_rate:.2f}",
         ">= 0.85", big_rate / dd_rate >= 0.85),
        ("    same work", f"{big_freed:,.0f} MiB/s (blocks freed)",
         f"dd in place, then rm {big_same:,.0f} MiB/s", f"{big_freed / big_same:.2f}", "", None),
        (f"(b) {n} files of {k} KiB", f"{small_rate:,.0f} files/s",
         f"shred -n 1 -u per file {gnu_rate:,.0f} files/s", f"{small_rate / gnu_rate:.1f}x",
         ">= 20x", small_rate / gnu_rate >= 20),
        ("    same bytes", f"{small_mibs:,.0f} MiB/s",
         f"dd conv=notrunc,fsync in place {disk_rate:,.0f} MiB/s", f"{small_mibs / disk_rate:.2f}",
         ">= 0.5", small_mibs / disk_rate >= 0.5),
        ("    same work", f"{small_freed:,.0f} MiB/s (blocks freed)",
         f"that dd, then rm of {n} files {small_same:,.0f} MiB/s",
         f"{small_freed / small_same:.2f}", "", None),
        ("    peak RSS (a)+(b)", f"{rss_mb:.0f} MB", "", "", "< 100 MB", rss_mb < 100),
    ]  # fmt: skip


def _rows_c(
    e: dict[str, float], args: argparse.Namespace
) -> list[tuple[str, str, str, str, str, bool | None]]:
    n, k, big = args.e2e_files, args.file_kib, args.e2e_size_mib
    vs_gnu = e["e2e_files"] / e["gnu_files"]
    vs_same = e["e2e_small_mibs"] / e["same_small_mibs"]
    vs_dd = e["e2e_big_mibs"] / e["dd_big_mibs"]
    return [
        (f"(c) lifecycle shred -r DIR --wait, {n} x {k} KiB", f"{e['e2e_files']:,.0f} files/s",
         f"shred -n 1 -u per file {e['gnu_files']:,.0f} files/s"
         + (f" (timed on {e['gnu_sample']:.0f} files)" if e["gnu_sample"] < n else ""),
         f"{vs_gnu:.1f}x",
         ">= 20x", vs_gnu >= 20),
        ("    same work", f"{e['e2e_small_mibs']:,.0f} MiB/s",
         f"one dd in place of the same bytes, rm of {n} files, one dir fsync "
         f"{e['same_small_mibs']:,.0f} MiB/s", f"{vs_same:.2f}", ">= 0.7", vs_same >= 0.7),
        ("    of which the job in the worker", f"{e['small_job_s']:.2f} s of {e['small_s']:.2f} s",
         "", "", "", None),
        ("    until blocks freed", f"{e['e2e_small_freed_mibs']:,.0f} MiB/s",
         "(the same baseline)", f"{e['e2e_small_freed_mibs'] / e['same_small_mibs']:.2f}", "",
         None),
        (f"    lifecycle shred FILE --wait, {big} MiB", f"{e['e2e_big_mibs']:,.0f} MiB/s",
         f"dd conv=notrunc,fsync in place {e['dd_big_mibs']:,.0f} MiB/s", f"{vs_dd:.2f}",
         ">= 0.8", vs_dd >= 0.8),
        ("    of which the job in the worker", f"{e['big_job_s']:.2f} s of {e['big_s']:.2f} s",
         "", "", "", None),
        ("    until blocks freed", f"{e['e2e_big_freed_mibs']:,.0f} MiB/s",
         f"that dd, then rm and a dir fsync {e['same_big_mibs']:,.0f} MiB/s",
         f"{e['e2e_big_freed_mibs'] / e['same_big_mibs']:.2f}", "", None),
        ("    peak RSS, worker pool process", f"{e['worker_rss']:.0f} MB",
         f"(the worker's main process: {e['worker_main_rss']:.0f} MB)", "", "< 100 MB",
         e["worker_rss"] < 100),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("var"), help="where to write (same disk)")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--file-kib", type=int, default=64)
    ap.add_argument("--e2e-files", type=int, default=20000)
    ap.add_argument("--e2e-size-mib", type=int, default=8192)
    ap.add_argument("--no-e2e", action="store_true", help="skip (c), which needs PostgreSQL")
    ap.add_argument("--e2e-only", action="store_true", help="skip (a) and (b)")
    ap.add_argument(
        "--gnu-sample",
        type=int,
        default=0,
        help="time GNU shred in (c) on this many of the files only (0: all); its rate is per file",
    )
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    for tool in ("dd", "shred") + (() if args.no_e2e else ("redis-server",)):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed")
    args.dir.mkdir(parents=True, exist_ok=True)
    small_mib = args.files * args.file_kib / 1024
    e2e_small_mib = args.e2e_files * args.file_kib / 1024
    need_ab = 0 if args.e2e_only else args.size_mib + 3 * small_mib
    need_c = 0 if args.no_e2e else max(args.e2e_size_mib, 3 * e2e_small_mib)
    need = max(need_ab, need_c) * MiB
    if shutil.disk_usage(args.dir).free < need * 1.1:
        raise SystemExit(f"not enough free space in {args.dir} ({need / MiB:.0f} MiB needed)")
    work = Path(tempfile.mkdtemp(prefix="bench-shred-", dir=args.dir)).resolve()
    rows: list[tuple[str, str, str, str, str, bool | None]] = []
    try:
        fs = fs_type_of_path(work)
        print(f"directory {work} on {fs} (overwrite trusted: {overwrite_trusted(fs)})")
        print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (shared machine?)")
        if not args.e2e_only:
            rows += _rows_ab(work, args)
        if not args.no_e2e:
            e2e = bench_e2e(
                work, args.pg, args.e2e_files, args.file_kib, args.e2e_size_mib, args.gnu_sample
            )
            rows += _rows_c(e2e, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    head = ("case", "shredder", "baseline (same run, same disk)", "ratio", "goal")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + "  met")
    for r in rows:
        cells = "  ".join(str(c).ljust(w) for c, w in zip(r[:5], widths, strict=True))
        met = "" if r[5] is None else "yes" if r[5] else "NO"
        print(f"{cells}  {met}")


if __name__ == "__main__":
    main()
