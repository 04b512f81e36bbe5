"""Age batches of a table keyed by text (OpenCart's ``oc_session.session_id``, a varchar).

A sweep batch row (``lifecycle_sweep_batches``) names its range by two integers, and its task
carries ids only. A text-keyed table's batches are therefore numbered ``1..n`` (``first_id =
last_id = n``) and the range's real bounds, the first and last key of the slice as the
database orders them, are stored in the batch row's plan (``counts``), which the batch reads
when it claims the row and overwrites with its counts when done: the keys leave the
lifecycle's table with the batch. The batch selects ``key BETWEEN first AND last`` in the
database's own collation, the order the plan read them in, so the primary key serves both the
plan and every batch, and the slices never overlap.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import types as sqltypes

FIRST_KEY = "first_key"
LAST_KEY = "last_key"


def is_text_key(column: Any) -> bool:
    """The (reflected) key column holds text, not an integer."""
    return not isinstance(column.type, sqltypes.Integer | sqltypes.Numeric)


def numbered(
    ranges: list[tuple[Any, Any, int]],
) -> tuple[list[tuple[int, int, int]], list[dict[str, Any]]]:
    """Text ranges as numbered batch ranges, and the plan each batch row keeps."""
    nums = [(i, i, n) for i, (_a, _b, n) in enumerate(ranges, start=1)]
    plans = [{FIRST_KEY: str(a), LAST_KEY: str(b)} for a, b, _n in ranges]
    return nums, plans


def bounds(plan: dict[str, Any], first: int, last: int) -> tuple[Any, Any]:
    """The key range a batch covers: the stored text bounds, else its integer ids."""
    if FIRST_KEY in plan:
        return plan[FIRST_KEY], plan[LAST_KEY]
    return first, last
