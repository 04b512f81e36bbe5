"""Idempotent submit under concurrency: 40 callers with one idempotency key get one request id,
and each caller's own transaction stays usable (threads, and two processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from lifecycle.core import db
from lifecycle.requests.outbox import submit
from models.requests import LifecycleRequest
from tests.helpers import migrate_embedded

CALLERS = 40
KEY = "site-withdraw-7-attempt"


def _caller(
    maker: sessionmaker[Session],
    tag: str,
    barrier: threading.Barrier,
    out: dict[str, int],
    errors: list,  # type: ignore[type-arg]
) -> None:
    try:
        with maker() as s, s.begin():
            # The caller's transaction already did work of its own before the submit (on
            # SQLite a write takes the database lock until commit, so there the other callers
            # could not reach the barrier: its writers never overlap, reads do) ...
            if s.get_bind().dialect.name == "sqlite":
                barrier.wait(30)
                submit(s, "withdrawal", 1000, idempotency_key=f"own-before-{tag}")
            else:
                submit(s, "withdrawal", 1000, idempotency_key=f"own-before-{tag}")
                barrier.wait(30)
            out[tag] = submit(s, "withdrawal", 7, idempotency_key=KEY)
            # ... and must still be usable after it, whether it won or lost the race.
            submit(s, "withdrawal", 1001, idempotency_key=f"own-after-{tag}")
            s.execute(select(func.count()).select_from(LifecycleRequest)).scalar_one()
    except BaseException as exc:
        errors.append(exc)


def _race_in_threads(n: int, tag: str) -> dict[str, int]:
    # The website's callers, each with a connection of its own (the lifecycle's pool is sized
    # for its workers, not for 40 simultaneous website requests).
    eng = create_engine(db.engine("primary").url, pool_size=n, max_overflow=0)
    maker = sessionmaker(eng)
    barrier = threading.Barrier(n)
    out: dict[str, int] = {}
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_caller, args=(maker, f"{tag}{i}", barrier, out, errors))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    eng.dispose()
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors[:3]]
    return out


def _check_rows(expected_callers: int) -> int:
    with db.session("primary") as s:
        ids = s.scalars(
            select(LifecycleRequest.id).where(LifecycleRequest.idempotency_key == KEY)
        ).all()
        own = s.scalar(
            select(func.count())
            .select_from(LifecycleRequest)
            .where(LifecycleRequest.idempotency_key.like("own-%"))
        )
    assert len(ids) == 1
    assert own == 2 * expected_callers  # every caller's own work committed
    return ids[0]


def test_40_threads_one_key_one_id(primary_env) -> None:  # type: ignore[no-untyped-def]
    out = _race_in_threads(CALLERS, "t")
    assert len(out) == CALLERS
    assert set(out.values()) == {_check_rows(CALLERS)}


def test_40_threads_one_key_one_id_sqlite(embedded_env) -> None:  # type: ignore[no-untyped-def]
    migrate_embedded(embedded_env)
    out = _race_in_threads(CALLERS, "t")
    assert len(out) == CALLERS
    assert set(out.values()) == {_check_rows(CALLERS)}


_PROCESS = textwrap.dedent(
    """
    import json, sys
    from tests.requests.test_submit_concurrency import _race_in_threads
    n, tag = int(sys.argv[1]), sys.argv[2]
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(_race_in_threads(n, tag)))
    """
)


def test_two_processes_40_submits_one_key_one_id(primary_env) -> None:  # type: ignore[no-untyped-def]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, str(CALLERS // 2), tag],
            env=primary_env.environ(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    # Both processes have imported everything before either is let go, so their threads race.
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready", p.communicate(timeout=30)[1][-3000:]
    out: dict[str, int] = {}
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr[-3000:]
        out |= json.loads(stdout.strip().splitlines()[-1])
    assert len(out) == CALLERS
    assert set(out.values()) == {_check_rows(CALLERS)}
