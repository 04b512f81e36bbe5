"""Beat task: the data map's discovery pass and linkage check, their findings stored.

A scan that could not run, or could not read every table, fails the task (Flower, `lifecycle
status`) with its one-line reason; what it did read is stored all the same.
"""

from __future__ import annotations

from lifecycle.core import dispatch
from lifecycle.datamap import findings
from tasks.base import LifecycleTask
from workers.app import app


@app.task(
    base=LifecycleTask,
    name=dispatch.DATAMAP_SCAN,
    bind=True,
    time_limit=3600,
    soft_time_limit=3600 - 60,
    lease="name",
)
def datamap_scan(self: LifecycleTask) -> dict[str, int]:
    return findings.scan(task_id=self.request.id)
