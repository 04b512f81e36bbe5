"""Beat task: verify the ledger and the access log and checkpoint their heads outside the
archive DB.

A chain that does not verify fails the task (Flower, `lifecycle status`) and is not anchored; the
other chain is still checkpointed first.
"""

from __future__ import annotations

from lifecycle.core import dispatch
from lifecycle.vault import checkpoints
from lifecycle.vault.ledger import LedgerBroken
from tasks.base import LifecycleTask
from workers.app import app


@app.task(base=LifecycleTask, name=dispatch.LEDGER_CHECKPOINT)
def ledger_checkpoint() -> dict[str, int]:
    out: dict[str, int] = {}
    broken: list[LedgerBroken] = []
    for key, chain in (("seq", checkpoints.LEDGER), ("accesslog_seq", checkpoints.ACCESS_LOG)):
        try:
            out[key] = checkpoints.take(chain)[0]
        except LedgerBroken as exc:
            broken.append(exc)
    if broken:
        raise broken[0]
    return out
