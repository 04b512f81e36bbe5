"""The handler access log: who read or changed whose data, hash-chained, 2 years, CSV export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights.withdrawal import carry_out
from lifecycle.vault import accesslog, keystore
from tests.helpers import LifecycleEnv, assert_map_fits_with_demo_rrns, seed_site, table_counts


@pytest.fixture
def site(lifecycle_env: LifecycleEnv):  # type: ignore[no-untyped-def]
    seed_site(lifecycle_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 20)
    clear_context_cache()
    yield lifecycle_env
    clear_context_cache()


def _rows(url: str, sql: str, **params: object) -> list[tuple]:  # type: ignore[type-arg]
    eng = create_engine(url)
    with eng.connect() as c:
        out = [tuple(r) for r in c.execute(text(sql), params)]
    eng.dispose()
    return out


def _log(env: LifecycleEnv) -> list[tuple]:  # type: ignore[type-arg]
    out = []
    for *head, details in _rows(
        env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"],
        "SELECT operator, kind, action, subject_ref, request_id, details FROM access_log "
        "ORDER BY seq",
    ):
        d = dict(json.loads(details) if isinstance(details, str) else details)
        # Every entry says where it came from (접속지) and which OS account ran it.
        assert d.pop("origin") and d.pop("os_user"), head
        out.append((*head, d))
    return out


def _ref(env: LifecycleEnv, member_id: int) -> str:
    eng = create_engine(env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"])
    with Session(eng) as s, s.begin():
        ref = keystore.subject_ref(s, member_id)
    eng.dispose()
    return ref


def _active_payer(env: LifecycleEnv) -> int:
    return int(
        _rows(
            env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"],
            "SELECT m.id FROM members m WHERE status = 'active' AND EXISTS "
            "(SELECT 1 FROM payments p WHERE p.member_id = m.id) ORDER BY m.id LIMIT 1",
        )[0][0]
    )


def test_requests_and_reads_name_the_operator(site: LifecycleEnv, tmp_path: Path) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    mid = _active_payer(site)
    ref = _ref(site, mid)

    # withdraw: the request row and the access log name the operator; the worker's entry names
    # the request's actor (the website fills the same column for its own rows).
    r = site.run("--operator", "clerk-park", "withdraw", str(mid))
    assert r.returncode == 0, r.stderr
    [(rid, actor)] = _rows(
        primary, "SELECT id, actor FROM lifecycle_requests WHERE member_id = :m", m=mid
    )
    assert actor == "clerk-park"
    assert carry_out(get_context(), rid)["state"] == "completed"

    out = tmp_path / "m.json"
    r = site.run(
        "archive", "retrieve", str(mid), "--basis", "국세기본법 제81조의6 세무조사", "--out",
        str(out), "--operator", "officer-kim",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr

    other = int(_rows(primary, "SELECT min(id) FROM members WHERE status = 'active'")[0][0])
    r = site.run("--operator", "clerk-park", "correct", str(other), "--set", "job=회계사")
    assert r.returncode == 0, r.stderr
    [(cid,)] = _rows(primary, "SELECT id FROM lifecycle_requests WHERE kind = 'correction'")
    from lifecycle.rights.correction import run_correction

    run_correction(cid)

    r = site.run(
        "recipients", "add", "partner", "--webhook", "http://127.0.0.1:9/hook", "--secret",
        "whsec_a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = site.run("--operator", "clerk-park", "provide", str(other), "--to", "partner",
                 "--fields", "mobile,name", "--basis", "legal_request")  # fmt: skip
    assert r.returncode == 0, r.stderr

    log = _log(site)
    got = [(op, kind, action, sref, req) for op, kind, action, sref, req, _ in log]
    assert ("clerk-park", "destroy", "withdraw (request)", ref, rid) in got
    assert ("clerk-park", "destroy", "withdrawal (carried out by worker)", ref, rid) in got
    assert ("officer-kim", "read", "archive retrieve", ref, None) in got
    other_ref = _ref(site, other)
    assert ("clerk-park", "change", "correct (request)", other_ref, cid) in got
    assert ("clerk-park", "change", "correct (applied by worker)", other_ref, cid) in got
    assert ("clerk-park", "provide", "provide", other_ref, None) in got
    # Field names and counts, never values or member ids.
    blob = repr(log)
    assert "회계사" not in blob and f"'{mid}'" not in blob
    [(details,)] = [(d,) for _, _, a, _, _, d in log if a == "correct (applied by worker)"]
    assert details == {"fields": ["job"]}

    # Export: UTF-8 with BOM, Korean headings, one row per entry; the export is logged too.
    r = site.run("accesslog", "export", "--output", str(tmp_path / "a.csv"))
    assert r.returncode == 0, r.stderr
    raw = (tmp_path / "a.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0][:3] == ["일련번호", "접속일시", "처리자"] and len(rows) == len(log) + 1
    assert _log(site)[-1][1:3] == ("export", "accesslog export")
    r = site.run("accesslog", "verify")
    assert r.returncode == 0 and f"{len(log) + 1} entries" in r.stdout, r.stderr


def test_tampering_is_detected_also_across_a_prune(site: LifecycleEnv) -> None:
    archive = site.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    eng = create_engine(archive)
    with Session(eng) as s, s.begin():
        for i in range(5):
            accesslog.record(s, operator="op", kind="read", action="test", member_id=i + 1)
    assert site.run("accesslog", "verify").returncode == 0

    with eng.begin() as c:
        c.execute(text("UPDATE access_log SET operator = 'someone-else' WHERE seq = 3"))
    r = site.run("accesslog", "verify")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "broken at entry 3" in r.stderr
    with eng.begin() as c:
        c.execute(text("UPDATE access_log SET operator = 'op' WHERE seq = 3"))
    assert site.run("accesslog", "verify").returncode == 0

    # Two years on, everything so far is pruned: the kept chain starts at the checkpoint and
    # still verifies; the prune itself is an entry naming that checkpoint.
    with Session(eng) as s, s.begin():
        n = accesslog.prune(s, now=datetime.now(UTC) + timedelta(days=800))
    assert n == 5
    assert _rows(archive, "SELECT seq, kind FROM access_log") == [(6, "prune")]
    assert site.run("accesslog", "verify").returncode == 0
    with Session(eng) as s, s.begin():
        accesslog.record(s, operator="op", kind="read", action="test", member_id=9)
    # Quietly moving the checkpoint (to hide deleted entries) is detected...
    with eng.begin() as c:
        c.execute(text("DELETE FROM access_log WHERE seq = 6"))
        c.execute(
            text("UPDATE access_log_head SET base_seq = 6, base_hash = "
                 "(SELECT prev_hash FROM access_log WHERE seq = 7)")
        )  # fmt: skip
    r = site.run("accesslog", "verify")
    assert r.returncode == 1 and "moved without a prune entry" in r.stderr, r.stderr
    eng.dispose()


def test_tail_truncation_is_caught_by_the_checkpoint_outside_the_archive(
    site: LifecycleEnv,
) -> None:
    archive = site.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    eng = create_engine(archive)
    with Session(eng) as s, s.begin():
        for i in range(6):
            accesslog.record(s, operator="op", kind="read", action="test", member_id=i + 1)
    r = site.run("accesslog", "checkpoint")
    assert r.returncode == 0, r.stderr
    assert "access log checkpoint: entry 6" in r.stdout
    assert (site.var_dir / "accesslog-checkpoints.jsonl").read_text().count("\n") == 1
    assert site.run("accesslog", "verify").returncode == 0
    # The last 3 entries deleted and the head moved back with them: the chain alone still links.
    with eng.begin() as c:
        c.execute(text("DELETE FROM access_log WHERE seq > 3"))
        c.execute(
            text("UPDATE access_log_head SET seq = 3, "
                 "hash = (SELECT hash FROM access_log WHERE seq = 3)")
        )  # fmt: skip
    r = site.run("accesslog", "verify")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "access log broken at entry 4" in r.stderr and "truncated" in r.stderr
    # The nightly checkpoint job fails on it too (and still anchors the ledger).
    r = site.run("accesslog", "checkpoint")
    assert r.returncode == 1 and "truncated" in r.stderr
    eng.dispose()


def test_bad_input_is_refused_and_logs_nothing(site: LifecycleEnv, tmp_path: Path) -> None:
    primary, archive = (
        site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"],
        site.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"],
    )
    before = (table_counts(primary), table_counts(archive))
    for args, message in (
        (["accesslog", "export", "--output", str(tmp_path / "no" / "a.csv")], "does not exist"),
        (["accesslog", "export", "--output", str(tmp_path)], "is a directory"),
        (["--operator", "x" * 200, "withdraw", "1"], "--operator must be"),
        (["--operator", "bad\x1bname", "correct", "1", "--set", "job=x"], "--operator must be"),
    ):
        r = site.run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert (table_counts(primary), table_counts(archive)) == before


def test_recipients_replay_datamap_check_and_key_rotation_are_logged(
    site: LifecycleEnv, tmp_path: Path
) -> None:
    from lifecycle.core.db import session
    from models.recipients import Delivery, Recipient
    from tests.helpers import write_master_key

    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    member = int(_rows(primary, "SELECT min(id) FROM members WHERE status = 'active'")[0][0])
    r = site.run("--operator", "clerk-park", "recipients", "add", "insurer", "--email",
                 "dpo@insurer.example")  # fmt: skip
    assert r.returncode == 0, r.stderr
    # A correction delivery that failed for good; the operator sends it again.
    with session("primary") as s:
        insurer = s.scalar(select(Recipient.id).where(Recipient.name == "insurer"))
        d = Delivery(message_id="m-replay-1", recipient_id=insurer, kind="correction",
                     request_id=None, member_id=member, fields=["mobile"],
                     payload={"mobile": "010-2222-3333"}, state="failed", attempts=8)  # fmt: skip
        s.add(d)
        s.flush()
        did = d.id
    r = site.run("--operator", "clerk-park", "deliveries", "replay", str(did))
    assert r.returncode == 0, r.stderr
    r = site.run("--operator", "officer-kim", "datamap", "check")
    assert_map_fits_with_demo_rrns(r)
    member_ref = _ref(site, member)  # before the rotation: the test process keeps the old key
    new_key = write_master_key(tmp_path / "new.key")
    r = site.run("--operator", "ops-choi", "keys", "rotate", "--new-key-file", str(new_key))
    assert r.returncode == 0, r.stderr

    log = _log(site)
    by_action = {action: (op, kind, sref, details) for op, kind, action, sref, _, details in log}
    op, kind, _, details = by_action["recipients add"]
    assert (op, kind, details["recipient"], details["channel"]) == (
        "clerk-park", "change", "insurer", "email")  # fmt: skip
    op, kind, sref, details = by_action["deliveries replay"]
    assert (op, kind, sref) == ("clerk-park", "provide", member_ref)
    assert details == {"delivery": did, "kind": "correction", "fields": ["mobile"],
                       "recipient": "insurer"}  # fmt: skip
    op, kind, _, details = by_action["datamap check"]
    rrns = _rows(primary, "SELECT count(*) FROM members WHERE rrn IS NOT NULL AND rrn <> ''")
    assert (op, kind, details) == ("officer-kim", "read", {"identifier_rows": {"rrn": rrns[0][0]}})
    op, kind, _, details = by_action["keys rotate"]
    assert (op, kind) == ("ops-choi", "change") and "rewrapped" in details
    blob = repr(log)
    assert "010-2222-3333" not in blob and "dpo@insurer.example" not in blob
