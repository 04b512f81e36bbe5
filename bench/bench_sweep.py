"""Benchmark: the purpose-end sweep archiving withdrawn members, vs a raw COPY baseline.

Creates its own databases on the server named by --pg (a seeded template, then a primary and an
archive DB for the sweep and another pair for the baseline, all cloned from the same template),
and a private redis-server. Seeds N members with `lifecycle demo seed`'s generator, marks every
one withdrawn, then:

- **sweep**: real `celery worker` processes run `lifecycle.sweep.run` exactly as in production
  (data map, per-row plan, AES-256-GCM per archived part under bucket keys, COPY into
  archive_records, DELETE, hash-chained ledger entries, outbox flush). Timed from sending the
  task to its result; peak RSS of every worker process is sampled from /proc.
- **baseline**: for each table holding a retained category, psycopg binary
  ``COPY (SELECT ...) TO STDOUT`` piped into ``COPY ... FROM STDIN`` of a plain copy of the table
  in the archive DB, then one ``DELETE`` per table (children first). No encryption, no ledger,
  no per-row decisions.

Both figures use the same numerator: the rows of withdrawn members in tables holding a retained
category, moved out of the primary DB (the sweep archives them, or destroys the ones whose
period already ended). The sweep also destroys the members' other rows; the baseline deletes
them too.

    .venv/bin/python bench/bench_sweep.py --members 1000000 --workers 2

The cost curve (time should grow linearly, so rows/s stays level; peak worker RSS should stay
flat). Each size is a fresh seed, worker and baseline; 300,000 members took about 5 minutes on
the 2-core development VM, so expect the 3,000,000 run to take ten times that, and to need
disk for five copies of its data (template, two primaries, two archives):

    .venv/bin/python bench/bench_sweep.py --sizes 100000,300000,1000000,3000000 --workers 2

Everything it created is dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import free_port, stop_group, wait_port  # noqa: E402


def _url(admin: str, db: str, driver: bool = True) -> str:
    base = admin.rsplit("/", 1)[0]
    if driver:
        base = base.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{db}"


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def _pg_cpu_s() -> float:
    """CPU time of every PostgreSQL process on this machine (server-side cost of a phase)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as fh:
                    if fh.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            total += _cpu_s(int(d))
    return total


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


class MemSampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots = pids
        self.peak_proc = 0
        self.peak_total = 0
        self.cpu: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            total = 0
            for root in self.roots:
                for p in _tree(root):
                    self.cpu[p] = max(self.cpu.get(p, 0.0), _cpu_s(p))
                    kb = _rss_kb(p)
                    total += kb
                    self.peak_proc = max(self.peak_proc, kb)
            self.peak_total = max(self.peak_total, total)
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument(
        "--sizes",
        default="",
        help="comma-separated member counts (e.g. 100000,300000,1000000,3000000): one fresh "
        "run per size, then the cost curve (rows/s and peak worker RSS at each size)",
    )
    ap.add_argument("--workers", type=int, default=2, help="worker processes (concurrency)")
    ap.add_argument("--batch-size", type=int, default=0, help="members per sweep batch")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="run the sweep in this process (no Celery, one process) under cProfile instead",
    )
    args = ap.parse_args()
    try:
        sizes = [int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error("--sizes must be comma-separated whole numbers")
    sizes = sizes or [args.members]
    if min(sizes) < 1:
        ap.error("member counts must be at least 1")
    if args.profile and len(sizes) > 1:
        ap.error("--profile takes one size")
    curve = []
    for members in sizes:
        print(f"== {members:,} members ==", flush=True)
        result = run_one(args, members)
        if result:
            curve.append(result)
    if len(curve) > 1:
        _print_curve(curve)


def _print_curve(curve: list[dict[str, float]]) -> None:
    """Linear time means rows/s stays level as the size grows; flat memory means peak RSS does."""
    print()
    print("cost curve (each size a fresh seed, worker and baseline)")
    print(f"{'members':>10}  {'rows':>11}  {'sweep s':>8}  {'rows/s':>9}  {'baseline rows/s':>15}  "
          f"{'ratio':>5}  {'peak RSS/worker':>15}  {'s per 1M rows':>13}")  # fmt: skip
    for c in curve:
        per_m = c["sweep_s"] / c["rows"] * 1e6
        print(f"{c['members']:>10,.0f}  {c['rows']:>11,.0f}  {c['sweep_s']:>8.1f}  "
              f"{c['rate']:>9,.0f}  {c['base_rate']:>15,.0f}  {c['rate'] / c['base_rate']:>5.2f}  "
              f"{c['peak_mb']:>12.0f} MB  {per_m:>13.1f}")  # fmt: skip


def run_one(args: argparse.Namespace, members: int) -> dict[str, float] | None:
    """One full run (seed, sweep, baseline) at ``members``; its figures (None with --profile)."""
    args.members = members
    result: dict[str, float] | None = None
    tag = uuid.uuid4().hex[:8]
    names = {k: f"lcb_{tag}_{k}" for k in ("tpl", "p1", "a1", "p2", "a2")}
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    admin = psycopg.connect(args.pg, autocommit=True)
    redis_proc = None
    worker = None
    try:
        for k in ("tpl", "a1", "a2"):
            admin.execute(f'CREATE DATABASE "{names[k]}"')
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
        base_env["PYTHONPATH"] = str(REPO)
        master = tmp / "master.key"
        import base64
        import secrets

        master.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        master.chmod(0o600)

        def env_for(p: str, a: str, **more: str) -> dict[str, str]:
            return base_env | {
                "LIFECYCLE_VAR_DIR": str(tmp / "var"),
                "LIFECYCLE_PRIMARY_DATABASE_URL": _url(args.pg, names[p]),
                "LIFECYCLE_ARCHIVE_DATABASE_URL": _url(args.pg, names[a]),
                "LIFECYCLE_MASTER_KEY_FILE": str(master),
                "LIFECYCLE_FILE_ROOTS": str(tmp / "files"),
                **more,
            }

        for a in ("a1", "a2"):
            subprocess.run(
                [sys.executable, "-m", "lifecycle.cli.main", "db", "upgrade"],
                env=env_for("tpl", a),
                cwd=tmp,
                check=True,
                capture_output=True,
            )

        # -- seed the template ---------------------------------------------------------------
        from sqlalchemy import create_engine, text

        from lifecycle.ops.demo_seed import seed

        eng = create_engine(_url(args.pg, names["tpl"]))
        t0 = time.perf_counter()
        seed(eng, args.members, files=False, file_root=tmp / "files")
        with eng.begin() as c:
            c.execute(
                text(
                    "UPDATE members SET status = 'withdrawn', "
                    "withdrawn_at = coalesce(withdrawn_at, now() - interval '1 day')"
                )
            )
        eng.dispose()
        with psycopg.connect(_url(args.pg, names["tpl"], driver=False), autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
        print(f"seeded {args.members} members in {time.perf_counter() - t0:.0f}s", flush=True)
        for p in ("p1", "p2"):
            admin.execute(f'CREATE DATABASE "{names[p]}" TEMPLATE "{names["tpl"]}"')
        admin.execute(f'DROP DATABASE "{names["tpl"]}"')

        from lifecycle.datamap.loader import load_datamap
        from lifecycle.datamap.paths import SHIPPED_DEMO_MAP

        dm = load_datamap(SHIPPED_DEMO_MAP, engine=create_engine(_url(args.pg, names["p1"])))
        retained_tables = [
            t.name
            for t in dm.tables_in_dependency_order()
            if any(not r.destroy_now for r in t.rules)
        ]
        order = [t.name for t in dm.tables_in_dependency_order()]
        with psycopg.connect(_url(args.pg, names["p1"], driver=False)) as c:
            rows_total = 0
            for t in retained_tables:
                col = dm.table(t).subject_column
                rows_total += c.execute(
                    f'SELECT count(*) FROM "{t}" WHERE "{col}" IN '
                    "(SELECT id FROM members WHERE status = 'withdrawn')"
                ).fetchone()[0]
        print(f"rows in retention-bearing tables: {rows_total}", flush=True)

        # -- sweep ------------------------------------------------------------------------------
        if args.profile:
            import cProfile
            import pstats

            os.environ.update(
                {k: v for k, v in env_for("p1", "a1").items() if k.startswith("LIFECYCLE_")}
            )
            from lifecycle.core.settings import reset_settings_cache
            from lifecycle.engine.context import get_context
            from lifecycle.engine.sweep import MEMBER_BATCH, run_sweep

            reset_settings_cache()
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            counts = run_sweep(get_context(), member_batch=args.batch_size or MEMBER_BATCH)
            prof.disable()
            print(f"in-process sweep: {time.perf_counter() - t0:.1f}s {counts}")
            st = pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "tottime"))
            st.print_stats(int(os.environ.get("BENCH_N", "30")))
            if os.environ.get("BENCH_CALLERS"):
                st.print_callers(os.environ["BENCH_CALLERS"])
            return None
        rport = free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(rport)
        rurl = f"redis://127.0.0.1:{rport}/0"
        wenv = env_for(
            "p1", "a1", LIFECYCLE_BROKER_URL=rurl, LIFECYCLE_RESULT_BACKEND=rurl,
            LIFECYCLE_HOST_NAME="bench",
        )  # fmt: skip
        log = (tmp / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-c",
             str(args.workers), "-Q", "archive", "--loglevel", "WARNING", "-n", f"bench-{tag}@%h",
             "--without-mingle", "--without-gossip"],
            env=wenv, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        os.environ.update({k: v for k, v in wenv.items() if k.startswith("LIFECYCLE_")})
        from workers.app import app, reconfigure

        reconfigure()
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=1.0):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("worker did not start:\n" + (tmp / "worker.log").read_text())
        sampler = MemSampler([worker.pid])
        cpu0 = sum(_cpu_s(p) for p in _tree(worker.pid))
        sampler.start()
        pg0 = _pg_cpu_s()
        kwargs = {"member_batch": args.batch_size} if args.batch_size else {}
        t0 = time.perf_counter()
        res = app.send_task("lifecycle.sweep.run", kwargs=kwargs)
        counts = res.get(timeout=24 * 3600, interval=0.5)
        sweep_s = time.perf_counter() - t0
        sweep_pg = _pg_cpu_s() - pg0
        sampler.stop.set()
        sampler.join()
        print(f"sweep: {counts}", flush=True)
        with psycopg.connect(_url(args.pg, names["p1"], driver=False)) as c:
            left = c.execute("SELECT count(*) FROM members").fetchone()[0]
        if left:
            raise RuntimeError(f"sweep left {left} members behind")

        # -- baseline ---------------------------------------------------------------------------
        from sqlalchemy import MetaData, Table

        src_eng = create_engine(_url(args.pg, names["p2"]))
        dst_eng = create_engine(_url(args.pg, names["a2"]))
        md = MetaData()
        md.reflect(src_eng, only=order)
        raw = MetaData()
        for t in retained_tables:
            cols = [c._copy() for c in md.tables[t].columns]
            for c in cols:
                c.foreign_keys.clear()
                c.constraints = set()
            Table(f"raw_{t}", raw, *cols)
        raw.create_all(dst_eng)
        src_eng.dispose()
        dst_eng.dispose()
        src = psycopg.connect(_url(args.pg, names["p2"], driver=False))
        dst = psycopg.connect(_url(args.pg, names["a2"], driver=False))
        pg0 = _pg_cpu_s()
        t0 = time.perf_counter()
        withdrawn = "(SELECT id FROM members WHERE status = 'withdrawn')"
        for t in retained_tables:
            col = dm.table(t).subject_column
            cols = ", ".join(f'"{c.name}"' for c in md.tables[t].columns)
            with (
                src.cursor() as sc,
                dst.cursor() as dc,
                sc.copy(
                    f'COPY (SELECT {cols} FROM "{t}" WHERE "{col}" IN {withdrawn}) '
                    "TO STDOUT (FORMAT BINARY)"
                ) as out,
                dc.copy(f'COPY "raw_{t}" ({cols}) FROM STDIN (FORMAT BINARY)') as inp,
            ):
                for block in out:
                    inp.write(block)
        dst.commit()
        for t in order:
            col = dm.table(t).subject_column
            src.execute(f'DELETE FROM "{t}" WHERE "{col}" IN {withdrawn}')
        src.commit()
        base_s = time.perf_counter() - t0
        base_pg = _pg_cpu_s() - pg0
        src.close()
        dst.close()

        sweep_rate = rows_total / sweep_s
        base_rate = rows_total / base_s
        print()
        print(f"members withdrawn                {args.members:>12,}")
        print(f"rows moved (retention tables)    {rows_total:>12,}")
        print(f"archived parts (encrypted)       {counts.get('archived_parts', 0):>12,}")
        print(f"sweep      {sweep_s:9.1f} s   {sweep_rate:>12,.0f} rows/s   "
              f"({args.workers} worker processes)")  # fmt: skip
        print(f"baseline   {base_s:9.1f} s   {base_rate:>12,.0f} rows/s   "
              "(raw COPY -> COPY + DELETE)")  # fmt: skip
        print(f"ratio      {sweep_rate / base_rate:9.2f}      (goal >= 0.5)")
        peak, total = sampler.peak_proc / 1024, sampler.peak_total / 1024
        print(f"worker CPU time: {sum(sampler.cpu.values()) - cpu0:.1f} s over the sweep")
        print(f"PostgreSQL CPU time: sweep {sweep_pg:.1f} s, baseline {base_pg:.1f} s")
        print(f"peak worker RSS: {peak:.0f} MB per process, {total:.0f} MB all (goal < 500 MB)")
        result = {
            "members": members,
            "rows": rows_total,
            "sweep_s": sweep_s,
            "rate": sweep_rate,
            "base_rate": base_rate,
            "peak_mb": peak,
        }
    finally:
        if worker is not None:
            stop_group(worker)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        if not args.keep:
            try:
                from lifecycle.core import db

                db.dispose_all()
            except Exception:
                pass
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept databases {sorted(names.values())} and {tmp}")
        admin.close()
    return result


if __name__ == "__main__":
    main()
