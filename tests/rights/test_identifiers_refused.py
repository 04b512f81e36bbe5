"""Corrections, provisions and third-party deliveries refuse a flagged unique identifier (the
demo's RRN, 개인정보 보호법 제24조의2) with one line, changing nothing. Real PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select, text

from tests.helpers import LifecycleEnv, add_members, create_demo_schema, table_dump

RRN = "790314-2345678"


def _one_line(r) -> str:  # type: ignore[no-untyped-def]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def test_correct_provide_and_replay_refuse_the_rrn(primary_env: LifecycleEnv) -> None:
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit
    from lifecycle.rights.correction import run_correction
    from models.recipients import Delivery, Provision, Recipient
    from models.requests import LifecycleRequest

    env = primary_env
    eng = create_demo_schema()
    add_members(eng, 2, rrn=RRN)
    assert env.run("recipients", "add", "insurer", "--email", "p@insurer.example").returncode == 0
    before = table_dump(eng, "members") + table_dump(eng, "lifecycle_")

    # 정정 through the CLI: refused before anything is created.
    line = _one_line(env.run("correct", "1", "--set", "rrn=800101-1234567"))
    assert "field rrn holds a unique identifier (주민등록번호" in line
    assert "lifecycle identifiers destroy rrn" in line and "800101" not in line
    # 제3자 제공 of the RRN, alone or with other fields: refused.
    for fields in ("rrn", "name,rrn"):
        line = _one_line(env.run("provide", "1", "--to", "insurer", "--fields", fields))
        assert "field rrn holds a unique identifier" in line and "cannot be provided" in line
    assert table_dump(eng, "members") + table_dump(eng, "lifecycle_") == before

    # A correction the website wrote itself: the job refuses it with the reason, value untouched.
    with session("primary") as s:
        rid = submit(s, "correction", 2, {"rrn": "800101-1234567", "hobbies": "바둑"})
    assert run_correction(rid)["state"] == "failed"
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert "unique identifier" in (req.error or "") and req.payload is None
    with eng.connect() as c:
        assert c.execute(text("SELECT rrn, hobbies FROM members WHERE id = 2")).one()[0] == RRN
        assert c.scalar(text("SELECT count(*) FROM lifecycle_restrictions")) == 0

    # A correction delivery made before the map flagged the RRN is not sent again.
    with session("primary") as s:
        insurer = s.scalar(select(Recipient.id).where(Recipient.name == "insurer"))
        d = Delivery(message_id="old-correction-1", recipient_id=insurer, kind="correction",
                     request_id=None, member_id=1, fields=["rrn"], payload={"rrn": RRN},
                     state="failed", attempts=8)  # fmt: skip
        s.add(d)
        s.flush()
        did = d.id
    line = _one_line(env.run("deliveries", "replay", str(did)))
    assert "cannot be sent again" in line and RRN not in line
    with session("primary") as s:
        assert s.get(Delivery, did).state == "failed"
        assert s.scalar(select(func.count()).select_from(Provision)) == 0
