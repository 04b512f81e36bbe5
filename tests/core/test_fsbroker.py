"""The embedded broker's exchange files stay valid JSON when processes bind at the same moment.

Stock kombu 5.7 fails this (9 of 20 rounds here): a first bind opens the file with truncation
before locking, so two first binds leave one list followed by the other's tail. Flower's
parallel inspections did exactly that on a fresh embedded broker in CI.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

from kombu import Connection, Exchange, Queue

from lifecycle.core.settings import get_settings
from tests.helpers import LifecycleEnv
from workers import fsbroker
from workers.config import celery_config

PROCESSES = 8
ROUNDS = 20


def _bind(conf: dict[str, Any], exchange: str, i: int, barrier: Any) -> None:
    with Connection(
        conf["broker_url"],
        transport=conf["broker_transport"],
        transport_options=conf["broker_transport_options"],
    ) as conn:
        channel = conn.channel()
        barrier.wait()
        # Names of different lengths, so a shorter list written over a longer one shows.
        queue = Queue(f"reply-{'x' * 7 * i}-{i}", Exchange(exchange, "direct"), routing_key=f"k{i}")
        queue(channel).declare()


def test_concurrent_first_binds_leave_every_binding_in_valid_json(
    embedded_env: LifecycleEnv,
) -> None:
    conf = celery_config(get_settings())
    assert conf["broker_transport"] == fsbroker.TRANSPORT_PATH
    control = Path(conf["broker_transport_options"]["control_folder"])
    ctx = multiprocessing.get_context("fork")
    for r in range(ROUNDS):
        exchange = f"race{r}"
        barrier = ctx.Barrier(PROCESSES)
        procs = [
            ctx.Process(target=_bind, args=(conf, exchange, i, barrier)) for i in range(PROCESSES)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * PROCESSES, f"round {r}"
        table = json.loads((control / f"{exchange}.exchange").read_text())
        assert sorted(q for _, _, q in table) == sorted(
            f"reply-{'x' * 7 * i}-{i}" for i in range(PROCESSES)
        ), f"round {r}"
    # No temporary file is left behind in the control folder.
    assert not [p.name for p in control.iterdir() if p.name.endswith(".tmp")]


def test_an_existing_table_is_kept(tmp_path: Path) -> None:
    file = tmp_path / "x.exchange"
    file.write_text('[["k", "", "q"]]')
    fsbroker.ensure_exchange_file(file)
    assert json.loads(file.read_text()) == [["k", "", "q"]]
    fresh = tmp_path / "y.exchange"
    fsbroker.ensure_exchange_file(fresh)
    assert fresh.read_bytes() == b"[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.exchange", "y.exchange"]
