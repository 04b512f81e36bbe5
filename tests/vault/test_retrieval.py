"""`lifecycle archive retrieve`: only with a basis, only to a new file, always in the ledger."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from tests.helpers import LifecycleEnv, seed_site, site_engine


@pytest.fixture
def withdrawn(primary_env: LifecycleEnv) -> tuple[LifecycleEnv, int]:
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 30)
    clear_context_cache()
    eng = site_engine(primary)
    with eng.connect() as c:
        mid = c.execute(
            text(
                "SELECT m.id FROM members m WHERE status = 'active' AND EXISTS "
                "(SELECT 1 FROM payments p WHERE p.member_id = m.id) ORDER BY m.id LIMIT 1"
            )
        ).scalar_one()
    eng.dispose()
    ctx = get_context()
    rid = submit_withdrawal(ctx, int(mid))
    assert carry_out(ctx, rid)["state"] == "completed"
    yield primary_env, int(mid)
    clear_context_cache()


def _ledger(env: LifecycleEnv) -> list[tuple[str, str, int, str]]:
    eng = create_engine(env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"])
    with eng.connect() as c:
        rows = c.execute(
            text(
                "SELECT action, actor, rows, reason FROM ledger_entries "
                "WHERE action = 'archive_retrieve' ORDER BY seq"
            )
        ).all()
    eng.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_retrieve_needs_a_basis_and_writes_only_a_new_file(
    withdrawn: tuple[LifecycleEnv, int], tmp_path: Path
) -> None:
    env, mid = withdrawn
    out = tmp_path / "member.json"
    r = env.run("archive", "retrieve", str(mid), "--out", str(out))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--basis is required" in r.stderr
    assert not out.exists() and _ledger(env) == []

    basis = "국세기본법 제81조의6 세무조사 자료 제출"
    r = env.run(
        "archive", "retrieve", str(mid), "--basis", basis, "--out", str(out),
        "--operator", "privacy-officer-kim",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["member_id"] == mid and doc["basis"] == basis
    cats = {rec["category"] for rec in doc["records"]}
    assert "payment" in cats
    assert all(rec["data"] for rec in doc["records"])
    # Nothing of the member's data on stdout: only counts and the file name.
    assert str(out) in r.stdout and "records" not in r.stdout.replace("record(s)", "")
    [(_action, actor, rows, reason)] = _ledger(env)
    assert actor == "operator:privacy-officer-kim" and reason == basis
    assert rows == len(doc["records"])

    # An existing file is never overwritten; an unknown member is refused; nothing is logged.
    r = env.run("archive", "retrieve", str(mid), "--basis", basis, "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr
    r = env.run("archive", "retrieve", "999999", "--basis", basis, "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "no records of member 999999" in r.stderr
    assert not (tmp_path / "x").exists()
    assert len(_ledger(env)) == 1
