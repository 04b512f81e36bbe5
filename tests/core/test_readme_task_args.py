"""The README's examples of what Flower shows for a job are what the code really renders."""

from __future__ import annotations

import re

from tasks.base import _task_param_names
from tests.helpers import REPO
from workers.app import app
from workers.taskargs import render_args

# `lifecycle.some.task  label=value label=value` in the README.
EXAMPLE = re.compile(r"`(lifecycle\.[\w.]+)  ([^`]+)`")


def _value(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def test_readme_task_args_match_the_rendered_ones() -> None:
    readme = re.sub(r"\s*\n\s*", " ", (REPO / "README.md").read_text())
    examples = EXAMPLE.findall(readme)
    assert examples, "the README shows no task example"
    for name, shown in examples:
        params = _task_param_names(app, name)
        assert params, f"{name}: no such task"
        labels = {p.removesuffix("_id") or p: p for p in params}
        given: dict[str, int | str] = {}
        for pair in shown.split():
            label, _, value = pair.partition("=")
            assert label in labels, f"{name}: the task has no argument shown as {label!r}"
            given[labels[label]] = _value(value)
        # Positional as the code sends ids, keyword for the rest (as the sweep dispatches).
        args = [given.pop(p) for p in params if p in given and isinstance(given[p], int)]
        argsrepr, kwargsrepr = render_args(args, given, params)
        assert " ".join(x for x in (argsrepr, kwargsrepr) if x) == shown, name
