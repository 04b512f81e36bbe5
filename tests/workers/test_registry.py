"""One registry of task names (lifecycle/core/dispatch.py), and the Celery app, beat and the
routes agree with it: a task registered under a name the registry lacks, a registry name no task
answers to, or a schedule entry naming an unknown task fails here."""

from __future__ import annotations

import ast
import fnmatch
import importlib
from pathlib import Path

from lifecycle.core import dispatch

REPO = Path(__file__).resolve().parents[2]


def _registered() -> set[str]:
    from workers.app import TASK_MODULES, app

    for module in TASK_MODULES:
        importlib.import_module(module)
    return {
        name
        for name, task in app.tasks.items()
        if not name.startswith("celery.") and not task.__module__.startswith("tests.")
    }


def test_every_registered_task_is_in_the_registry_and_every_name_is_registered() -> None:
    registered = _registered()
    assert registered - dispatch.NAMES == set(), "tasks missing from lifecycle/core/dispatch.py"
    assert dispatch.NAMES - registered == set(), "registry names no task is registered under"


def test_every_name_constant_is_in_the_registry() -> None:
    # A constant added to dispatch.py but left out of PARAMS (and so NAMES) would be a name the
    # tests above never compare.
    constants = {
        v
        for k, v in vars(dispatch).items()
        if k.isupper() and isinstance(v, str) and v.startswith("lifecycle.")
    }
    assert constants == set(dispatch.NAMES)


def test_beat_schedules_only_registry_names() -> None:
    from lifecycle.core.settings import get_settings
    from schedules.beat import beat_schedule

    schedule = beat_schedule(get_settings())
    assert schedule
    unknown = {key: e["task"] for key, e in schedule.items() if e["task"] not in dispatch.NAMES}
    assert unknown == {}


def test_routes_name_registry_tasks() -> None:
    from lifecycle.core.settings import get_settings
    from workers.config import celery_config

    routes = celery_config(get_settings())["task_routes"]
    for pattern in routes:
        matched = fnmatch.filter(dispatch.NAMES, pattern)
        assert matched, f"route {pattern!r} matches no task in the registry"


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    }


def test_the_runtime_writes_no_task_name_as_a_string() -> None:
    # The declarations, beat and the routes use the constants; a literal copy would drift.
    offenders = {
        str(path.relative_to(REPO)): sorted(_string_constants(path) & dispatch.NAMES)
        for path in sorted((REPO / "workers").rglob("*.py"))
    }
    assert {p: names for p, names in offenders.items() if names} == {}
