"""Benchmark: how fast the command line starts and answers, beside `python -c pass`.

Builds a small production-shaped site on the PostgreSQL server named by --pg (a primary and an
archive DB, 200 demo members), a private redis-server as broker and result backend, and one idle
`celery worker`, then runs each command --runs times as a fresh process and prints the median
wall time and CPU time (user + system of the child, from getrusage), with the load average at
the start and the end of the run (the machine may be shared: compare CPU times within a run).

Every command runs with its bytecode cache, as after `pip install` (which compiles it) or any
earlier run: `PYTHONDONTWRITEBYTECODE` is dropped from the commands' environment and each one is
run once, untimed, before it is timed. Without the cache every run would compile the project's
modules again, which on the 2-core VM added about a tenth of a second to each command.

- `python -c pass`: the interpreter's own start, the floor every command pays;
- `lifecycle --help`: goal under 0.15 s of CPU;
- the baseline of a submit, measured in the same run: a plain script that imports SQLAlchemy and
  the driver, connects and commits one INSERT (what any Python submit must at least pay);
- the plain-driver baseline: the same INSERT from a script that imports psycopg alone;
- `lifecycle withdraw N`: a command that only submits a request (marks the member, writes the
  outbox row and the access-log entry; the relay dispatches it), goal under 0.4 s. Its untimed
  first run leaves the submit plan (lifecycle/cli/submit_plan.py), so the timed runs take the
  short way, as every submit after the first does on a site;
- `withdraw N without its plan`: the same with the plan deleted before each run, i.e. the full
  command, as the first submit after an edited map or changed settings runs;
- with ``--previous REF``: `--help`, `withdraw N` and `status` from that commit of this
  repository (``git archive`` into a temporary directory, run with this venv), e.g. the code
  before a change;
- `lifecycle status`: the ops view on an idle site, goal under 1.5 s.

    .venv/bin/python bench/bench_cli.py --runs 7 [--previous 7466252]

Everything it created is dropped at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import free_port, stop_group, wait_port  # noqa: E402

LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))


def _url(admin: str, db: str) -> str:
    return admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{db}"


def timed(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    ok_codes: tuple[int, ...] = (0,),
    before: Callable[[], None] | None = None,
):
    """(wall seconds, CPU seconds) of one run of ``cmd`` as a fresh process; ``before`` runs
    first, untimed."""
    if before is not None:
        before()
    before_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    cpu = (after.ru_utime - before_usage.ru_utime) + (after.ru_stime - before_usage.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--previous", help="also time --help and withdraw from this git ref")
    args = ap.parse_args()

    tag = uuid.uuid4().hex[:8]
    names = {k: f"lcc_{tag}_{k}" for k in ("p", "a")}
    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    admin = psycopg.connect(args.pg, autocommit=True)
    redis_proc = worker = None
    try:
        for n in names.values():
            admin.execute(f'CREATE DATABASE "{n}"')
        master = tmp / "master.key"
        master.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        master.chmod(0o600)
        rport = free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_port(rport)
        rurl = f"redis://127.0.0.1:{rport}/0"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LIFECYCLE_") and k != "PYTHONDONTWRITEBYTECODE"
        } | {
            "LIFECYCLE_VAR_DIR": str(tmp / "var"),
            "LIFECYCLE_PRIMARY_DATABASE_URL": _url(args.pg, names["p"]),
            "LIFECYCLE_ARCHIVE_DATABASE_URL": _url(args.pg, names["a"]),
            "LIFECYCLE_MASTER_KEY_FILE": str(master),
            "LIFECYCLE_FILE_ROOTS": str(tmp / "files"),
            "LIFECYCLE_BROKER_URL": rurl,
            "LIFECYCLE_RESULT_BACKEND": rurl,
            "LIFECYCLE_HOST_NAME": "bench",
        }
        for cmd in (["db", "upgrade"], ["demo", "seed", "--members", "200"]):
            subprocess.run([LIFECYCLE, *cmd], env=env, cwd=tmp, check=True, capture_output=True)
        log = (tmp / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-c", "1",
             "--loglevel", "WARNING", "-n", f"bench-{tag}@%h"],
            env=env | {"PYTHONPATH": str(REPO)}, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        # Idle means the worker answers: status waits for it, so measure only once it does.
        deadline = time.monotonic() + 60
        while timed_ok(env, tmp) is False:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("worker did not start:\n" + (tmp / "worker.log").read_text())

        member = iter(range(1, 201))
        baseline = tmp / "baseline_insert.py"
        baseline.write_text(BASELINE_INSERT)
        plain = tmp / "plain_insert.py"
        plain.write_text(PLAIN_INSERT)
        plan = tmp / "var" / "cache" / "submit-plan.json"

        def drop_plan() -> None:
            plan.unlink(missing_ok=True)

        primary_dsn = args.pg.rsplit("/", 1)[0] + f"/{names['p']}"
        with psycopg.connect(primary_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_baseline (id serial PRIMARY KEY, n int)")
        cases = {
            "python -c pass": lambda: timed([sys.executable, "-c", "pass"], env, tmp),
            "baseline: SQLAlchemy + one INSERT": lambda: timed(
                [sys.executable, str(baseline), _url(args.pg, names["p"])], env, tmp
            ),
            "baseline: psycopg + one INSERT": lambda: timed(
                [sys.executable, str(plain), primary_dsn], env, tmp
            ),
            "lifecycle --help": lambda: timed([LIFECYCLE, "--help"], env, tmp),
            "lifecycle withdraw N (submit)": lambda: timed(
                [LIFECYCLE, "withdraw", str(next(member))], env, tmp
            ),
            # The full command, as the first submit after an edited map or new settings runs.
            "withdraw N without its plan": lambda: timed(
                [LIFECYCLE, "withdraw", str(next(member))], env, tmp, before=drop_plan
            ),
            # Exit 1 is "attention" (e.g. the beat heartbeat is missing: no beat runs here).
            "lifecycle status": lambda: timed([LIFECYCLE, "status"], env, tmp, (0, 1)),
        }
        if args.previous:
            old = _checkout(args.previous, tmp / "previous")
            old_env = env | {"PYTHONPATH": str(old)}
            cases[f"--help, code of {args.previous}"] = lambda: timed(
                [sys.executable, "-c", ENTRY_POINT, "--help"], old_env, tmp
            )
            cases[f"withdraw N, code of {args.previous}"] = lambda: timed(
                [sys.executable, "-c", ENTRY_POINT, "withdraw", str(next(member))],
                old_env,
                tmp,
            )
            cases[f"status, code of {args.previous}"] = lambda: timed(
                [sys.executable, "-c", ENTRY_POINT, "status"], old_env, tmp, (0, 1)
            )
        load_start = os.getloadavg()
        print(f"{'command':36} {'wall median':>12} {'CPU median':>11}  (runs: {args.runs})")
        medians: dict[str, tuple[float, float]] = {}
        for label, run in cases.items():
            run()  # untimed: writes the bytecode cache (see the docstring)
            runs = [run() for _ in range(args.runs)]
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            medians[label] = (wall, cpu)
            print(f"{label:36} {wall:11.3f}s {cpu:10.3f}s")
        (bw, bc), (sw, sc) = (
            medians["baseline: SQLAlchemy + one INSERT"],
            medians["lifecycle withdraw N (submit)"],
        )
        print(f"submit / baseline: {sw / bw:.2f} (wall), {sc / bc:.2f} (CPU); goal < 0.4 s")
        pw, pc = medians["baseline: psycopg + one INSERT"]
        print(f"submit / plain-driver baseline: {sw / pw:.2f} (wall), {sc / pc:.2f} (CPU)")
        load_end = os.getloadavg()
        print(
            "load average (1, 5, 15 min): "
            f"start {' '.join(f'{x:.2f}' for x in load_start)}, "
            f"end {' '.join(f'{x:.2f}' for x in load_end)}"
        )
    finally:
        for proc in (worker, redis_proc):
            if proc is not None:
                stop_group(proc)
        for n in names.values():
            admin.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
        admin.close()
        # Its master key and the worker's log: nothing of the run stays behind.
        shutil.rmtree(tmp, ignore_errors=True)


# The least a Python submit pays: the interpreter, SQLAlchemy with the driver, one connection
# and one committed INSERT (into a scratch table of the primary database).
BASELINE_INSERT = """
import sys
import sqlalchemy
engine = sqlalchemy.create_engine(sys.argv[1])
with engine.begin() as conn:
    conn.execute(sqlalchemy.text("INSERT INTO bench_baseline (n) VALUES (1)"))
"""


# The least a submit on the plain driver pays (what `lifecycle withdraw N` now runs on): the
# interpreter, psycopg, one connection and one committed INSERT.
PLAIN_INSERT = """
import sys
import psycopg
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("INSERT INTO bench_baseline (n) VALUES (1)")
"""


# What the `lifecycle` console script runs, for the code of --previous (`python -m` would add
# runpy's own start-up and run the entry module twice, as __main__ and when imported).
ENTRY_POINT = "import sys; from lifecycle.cli.main import run; sys.exit(run())"


def _checkout(ref: str, into: Path) -> Path:
    """The repository's files at ``ref``, unpacked into ``into`` (for --previous)."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def timed_ok(env: dict[str, str], cwd: Path) -> bool:
    """True once `lifecycle status --json` sees a worker online."""
    proc = subprocess.run(
        [LIFECYCLE, "status", "--json"], env=env, cwd=cwd, capture_output=True, text=True
    )
    try:
        return int(json.loads(proc.stdout)["workers"]["online"]) > 0
    except (ValueError, KeyError, TypeError):
        return False


if __name__ == "__main__":
    main()
