"""Beat task: verify the ledger and checkpoint its head outside the archive DB.

A ledger that does not verify fails the task (Flower, `lifecycle status`) and is not anchored.
"""

from __future__ import annotations

from lifecycle.vault import checkpoints
from tasks.base import LifecycleTask
from workers.app import app


@app.task(base=LifecycleTask, name="lifecycle.ledger.checkpoint")
def ledger_checkpoint() -> dict[str, int]:
    seq, _digest = checkpoints.take()
    return {"seq": seq}
