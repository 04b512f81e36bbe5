"""Benchmark: `lifecycle demo seed` into PostgreSQL (goal: 1,000,000 members must work).

Creates its own database (lct_bench_seed_<random>) on the server named by --pg, seeds it, and in
the same run measures a baseline: a raw psycopg ``COPY ... FROM STDIN`` of one constant row
repeated into a copy of the access_logs table (same columns and indexes, no data generation, no
foreign keys), i.e. the ingest ceiling of this server from Python. Prints both rows/s and the
ratio, then drops the database (unless --keep).

    .venv/bin/python bench/bench_seed.py --members 1000000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lifecycle.ops.demo_seed import create_schema, seed

BASELINE_CAP = 3_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--keep", action="store_true", help="do not drop the database afterwards")
    args = ap.parse_args()
    if args.members < 1:
        ap.error("--members must be at least 1")

    name = f"lct_bench_seed_{uuid.uuid4().hex[:8]}"
    base = args.pg.rsplit("/", 1)[0]
    with psycopg.connect(args.pg, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    eng = create_engine(url)
    try:
        create_schema(eng)
        started = time.perf_counter()
        last = [started]

        def progress(done: int) -> None:
            now = time.perf_counter()
            if now - last[0] > 10 or done == args.members:
                last[0] = now
                print(f"  {done:>9,} members  {now - started:7.1f}s", file=sys.stderr)

        counts = seed(
            eng,
            args.members,
            files=False,
            file_root=Path("/nonexistent"),
            seed=0,
            now=datetime.now(UTC),
            progress=progress,
        )
        seconds = time.perf_counter() - started
        rows = sum(v for k, v in counts.items() if k != "files")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        # Baseline: raw COPY, no generation, same server, same run.
        n_base = min(rows, BASELINE_CAP)
        raw_url = f"{base}/{name}"
        with psycopg.connect(raw_url) as conn:
            conn.execute("CREATE TABLE bench_baseline (LIKE access_logs INCLUDING ALL)")
            row = (
                None,
                "121.134.56.78",
                "/booking",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
                datetime(2026, 1, 1, tzinfo=UTC),
            )
            t0 = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY bench_baseline (id, member_id, ip, path, user_agent, accessed_at) "
                    "FROM STDIN"
                ) as cp,
            ):
                for i in range(1, n_base + 1):
                    cp.write_row((i, *row))
            conn.commit()
            base_seconds = time.perf_counter() - t0

        seed_rate = rows / seconds
        base_rate = n_base / base_seconds
        print(f"database            {name} (PostgreSQL)")
        print(f"members             {args.members:,}")
        for table, n in counts.items():
            if table != "files" and n:
                print(f"  {table:<18}{n:>12,}")
        print(f"rows total          {rows:,}")
        print(f"seed time           {seconds:.1f} s")
        per_member = args.members / seconds
        print(f"seed throughput     {seed_rate:,.0f} rows/s  ({per_member:,.0f} members/s)")
        print(f"baseline raw COPY   {base_rate:,.0f} rows/s  ({n_base:,} constant rows)")
        print(f"ratio seed/baseline {seed_rate / base_rate:.2f}")
        print(f"peak RSS            {peak_mb:.0f} MB")
    finally:
        eng.dispose()
        if not args.keep:
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
