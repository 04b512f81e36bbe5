"""What the map calls a file: a file two rows name is kept while one of them is live (only the
leaver's reference goes), and a value that is not a path is refused, never "already absent".

Withdrawal through real workers on PostgreSQL or MariaDB (primary), with the shred hand-off;
the template form of a file reference, parsed back into its fields; the plausibility rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from lifecycle.datamap.file_values import implausible_path
from lifecycle.datamap.model import FileTemplate
from lifecycle.engine.context import clear_context_cache
from tests.helpers import (
    LifecycleEnv,
    seed_site,
    site_engine,
    sql_rows,
    wait_error_line,
    wait_until,
)


def _write(url: str, sql: str, **params: object) -> None:
    eng = site_engine(url)
    try:
        with eng.begin() as c:
            c.execute(text(sql), params)
    finally:
        eng.dispose()


@pytest.mark.integration
def test_a_file_another_member_still_names_is_kept_and_the_ledger_says_why(
    primary_env: LifecycleEnv, start_worker
) -> None:  # type: ignore[no-untyped-def]
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 20, files=True, file_root=env.file_root)
    clear_context_cache()
    owners = sql_rows(
        primary,
        "SELECT m.id FROM members m WHERE m.status = 'active' AND (SELECT count(*) FROM "
        "uploaded_files f WHERE f.member_id = m.id) >= 2 ORDER BY m.id",
    )
    leaver = int(owners[0][0])  # type: ignore[call-overload]
    other = int(sql_rows(primary, "SELECT min(id) FROM members WHERE status = 'active' AND id <> "
                               ":a", a=leaver)[0][0])  # type: ignore[call-overload]  # fmt: skip
    paths = [str(p) for (p,) in sql_rows(
        primary, "SELECT path FROM uploaded_files WHERE member_id = :m ORDER BY id", m=leaver
    )]  # fmt: skip
    shared, own = paths[0], paths[1:]
    # The other member's row names the leaver's first upload (a copied attachment).
    _write(
        primary,
        "INSERT INTO uploaded_files (member_id, path, original_name, kind, uploaded_at) "
        "SELECT :o, path, original_name, kind, uploaded_at FROM uploaded_files "
        "WHERE member_id = :m AND path = :p",
        o=other, m=leaver, p=shared,
    )  # fmt: skip
    assert all(Path(p).exists() for p in paths)

    start_worker(env, concurrency=2)
    r = env.run("withdraw", str(leaver), "--wait", timeout=180)
    assert r.returncode == 0, r.stderr
    wait_until(
        lambda: not any(Path(p).exists() for p in own), 60, "the leaver's own files shredded"
    )
    assert Path(shared).exists(), "a file another member's row names was shredded"
    assert sql_rows(primary, "SELECT count(*) FROM uploaded_files WHERE path = :p", p=shared) == [
        (1,)
    ]
    assert sql_rows(primary, "SELECT member_id FROM uploaded_files WHERE path = :p", p=shared) == [
        (other,)
    ]
    entries = sql_rows(
        archive,
        "SELECT rows, details, request_id FROM ledger_entries WHERE action = 'file_keep'",
    )
    assert len(entries) == 1, entries
    rows, details, request_id = entries[0]
    details = json.loads(details) if isinstance(details, str) else details
    assert rows == 1 and request_id is not None
    assert details["named_by"] == ["uploaded_files.path"] and details["files"] == 1
    assert shared not in json.dumps(details)

    # Once no live row names it, the next leaver's withdrawal shreds it.
    r2 = env.run("withdraw", str(other), "--wait", timeout=180)
    assert r2.returncode == 0, r2.stderr
    wait_until(lambda: not Path(shared).exists(), 60, "the shared file shredded at last")


@pytest.mark.parametrize(
    ("template", "path", "fields"),
    [
        ("data/file/{bo_table}/{bf_file}", "data/file/free/abc.jpg", {"bo_table": "free",
                                                                      "bf_file": "abc.jpg"}),
        ("data/member/{mb_id[:2]}/{mb_id}.gif", "data/member/le/lee_mh7.gif", {"mb_id": "lee_mh7"}),
        ("data/member/{mb_id[:2]}/{mb_id}.gif", "data/member/xx/lee_mh7.gif", None),
        ("data/file/{bo_table}/{bf_file}", "data/other/free/abc.jpg", None),
        ("up/{a}/{a}.png", "up/x/y.png", None),
        ("up/{a[:2]}.png", "up/xy.png", None),  # a field only sliced cannot be looked up
    ],
)  # fmt: skip
def test_a_template_path_parses_back_into_its_fields(
    template: str, path: str, fields: dict[str, str] | None
) -> None:
    ft = FileTemplate(template, "uploads")
    assert ft.parse(path) == fields
    if fields is not None:
        assert ft.render(fields) == path


SERIALIZED = 'a:1:{i:0;s:21:"2024/05/scan_0001.pdf";}'


@pytest.mark.integration
def test_a_file_value_that_is_not_a_path_is_refused_and_nothing_is_deleted(
    primary_env: LifecycleEnv, start_worker
) -> None:  # type: ignore[no-untyped-def]
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 10, files=True, file_root=env.file_root)
    clear_context_cache()
    mid = int(sql_rows(primary, "SELECT min(member_id) FROM uploaded_files")[0][0])  # type: ignore[call-overload]
    _write(primary, "UPDATE uploaded_files SET path = :v WHERE member_id = :m", v=SERIALIZED, m=mid)
    before = sql_rows(primary, "SELECT count(*) FROM uploaded_files WHERE member_id = :m", m=mid)

    check = env.run("datamap", "check")
    assert check.returncode == 2, check.stdout + check.stderr
    assert "uploaded_files.path is listed under files but" in check.stderr
    assert "a serialized PHP value" in check.stderr and "scan_0001" not in check.stderr

    start_worker(env, concurrency=1)
    r = env.run("withdraw", str(mid), "--wait", timeout=180)
    assert r.returncode != 0, r.stdout
    line = wait_error_line(r)
    assert "not a file path (a serialized PHP value)" in line and "scan_0001" not in line
    assert sql_rows(primary, "SELECT count(*) FROM members WHERE id = :m", m=mid) == [(1,)]
    after = sql_rows(primary, "SELECT count(*) FROM uploaded_files WHERE member_id = :m", m=mid)
    assert after == before
    assert sql_rows(primary, "SELECT count(*) FROM lifecycle_shred_items") == [(0,)]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("data/file/free/abc.jpg", None),
        ("/var/www/data/회원 사진 (1).png", None),
        (SERIALIZED, "a serialized PHP value"),
        ('s:7:"abc.jpg";', "a serialized PHP value"),
        ('["2024/05/a.pdf", "2024/05/b.pdf"]', "a JSON value"),
        ('{"path": "a.pdf"}', "a JSON value"),
        ("[draft] notes.txt", None),
        ("https://cdn.example.com/a.jpg", "a URL, not a file on this host"),
        ("a\nb", "a value with a line break or NUL"),
        ("x" * 5000, "longer than a path can be"),
        (12, "not text"),
    ],
)
def test_what_counts_as_a_file_path(value: object, why: str | None) -> None:
    assert implausible_path(value) == why
