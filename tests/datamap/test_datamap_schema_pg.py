"""The real-schema map features on a PostgreSQL primary (the Gnuboard5 tests run on MariaDB):
a login-id link, a composite key reached through a pattern parent, a table created after the
map, several member columns, the member row kept blank, a withdrawal marker, an age-only table
and path templates; then a withdrawal and a sweep, and nobody else's row changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.withdrawal import carry_out, resolve_member, submit_withdrawal
from lifecycle.shred.jobs import run_job
from tests.helpers import LifecycleEnv, accounting
from workers.app import reconfigure

DDL = """
CREATE TABLE site_member (
  mno serial PRIMARY KEY, login varchar(20) NOT NULL UNIQUE, name varchar(50) NOT NULL DEFAULT '',
  email varchar(100) NOT NULL DEFAULT '', joined timestamp NOT NULL DEFAULT '1970-01-01',
  points integer NOT NULL DEFAULT 0, left_on varchar(8) NOT NULL DEFAULT '');
CREATE TABLE post_free (id serial PRIMARY KEY, login varchar(255) NOT NULL DEFAULT '',
  parent integer NOT NULL DEFAULT 0, body text NOT NULL DEFAULT '');
CREATE TABLE post_qna (LIKE post_free INCLUDING ALL);
CREATE TABLE post_file (board varchar(20) NOT NULL, post_id integer NOT NULL,
  fno integer NOT NULL, stored varchar(255) NOT NULL DEFAULT '',
  PRIMARY KEY (board, post_id, fno));
CREATE TABLE memo (id serial PRIMARY KEY, sender varchar(20) NOT NULL DEFAULT '',
  recipient varchar(20) NOT NULL DEFAULT '', body text NOT NULL DEFAULT '',
  sender_ip varchar(40) NOT NULL DEFAULT '');
CREATE TABLE orders (id bigint PRIMARY KEY, login varchar(255) NOT NULL, buyer varchar(50),
  amount integer NOT NULL, ordered_at timestamp NOT NULL);
CREATE TABLE visit (id integer PRIMARY KEY, ip varchar(40) NOT NULL, day date NOT NULL);
"""

MAP = """
version: 1
site: {root: ROOT}
subject:
  table: site_member
  key: mno
  login_column: login
  withdrawn: {column: left_on, format: "%Y%m%d"}
  on_withdrawal: blank_and_keep
  contact: {email: email}
categories: [posts]
retention:
  posts: {period: 0d, legal_basis: "개인정보 보호법 제21조"}
  contract: {period: 5y, legal_basis: "전자상거래법 제6조"}
  access_log: {period: 3mo, legal_basis: "통신비밀보호법 제15조의2"}
tables:
  site_member:
    key: mno
    subject_column: mno
    columns:
      profile: [name, joined]
      contact: [email]
    non_personal: [points]
    files: [{template: "icons/{login[:2]}/{login}.gif", category: profile}]
  post_*:
    key: id
    subject_column: login
    member_key: login
    columns:
      posts: [body]
    non_personal: [parent]
  post_file:
    key: [board, post_id, fno]
    via: {table: "post_*", match: board, column: post_id, parent_key: id}
    columns:
      uploads: [stored]
    files: ["files/{board}/{stored}"]
  memo:
    key: id
    members:
      - {column: sender, member_key: login, blank: [sender_ip]}
      - {column: recipient, member_key: login}
    columns:
      posts: [body, sender_ip]
  orders:
    key: id
    subject_column: login
    member_key: login
    retain_from: ordered_at
    columns:
      contract: [buyer, amount, ordered_at]
  visit:
    key: id
    purpose_end: [{age: day}]
    retain_from: day
    columns:
      access_log: [ip, day]
"""


def _rows(eng: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with eng.connect() as c:
        return [tuple(r) for r in c.execute(text(sql), params)]


@pytest.fixture
def pg_site(lifecycle_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    root = lifecycle_env.file_root / "www"
    for rel in ("icons/al/alice.gif", "icons/bo/bob.gif", "files/free/a1.jpg",
                "files/qna/b1.jpg", "files/qna/a2.jpg"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    map_path = tmp_path / "site.yaml"
    map_path.write_text(MAP.replace("ROOT", str(root)), encoding="utf-8")
    lifecycle_env.vars["LIFECYCLE_DATA_MAP"] = str(map_path)
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(map_path))
    reconfigure()
    primary = lifecycle_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    eng = create_engine(primary)
    with eng.begin() as c:
        for stmt in DDL.split(";"):
            if stmt.strip():
                c.execute(text(stmt))
        c.execute(text("INSERT INTO site_member (login, name, email, joined, left_on) VALUES "
                       "('alice', '앨리스', 'a@x.example', now(), ''), "
                       "('bob', '밥', 'b@x.example', now(), ''), "
                       "('carol', '캐롤', 'c@x.example', now(), '20260901')"))  # fmt: skip
        # Post 1 exists on both boards, by different members; bob comments on alice's post.
        c.execute(text("INSERT INTO post_free (id, login, parent, body) VALUES "
                       "(1, 'alice', 1, 'alice post'), (2, 'bob', 1, 'bob comment')"))  # fmt: skip
        c.execute(text("INSERT INTO post_qna (id, login, parent, body) VALUES "
                       "(1, 'bob', 1, 'bob q'), (2, 'alice', 2, 'alice q')"))  # fmt: skip
        c.execute(text("INSERT INTO post_file VALUES ('free', 1, 0, 'a1.jpg'), "
                       "('qna', 1, 0, 'b1.jpg'), ('qna', 2, 0, 'a2.jpg')"))  # fmt: skip
        c.execute(text("INSERT INTO memo (sender, recipient, body, sender_ip) VALUES "
                       "('alice', 'bob', 'hi bob', '1.1.1.1'), ('bob', 'alice', 'hi', '2.2.2.2'), "
                       "('carol', 'alice', 'both leave', '3.3.3.3')"))  # fmt: skip
        c.execute(text("INSERT INTO orders VALUES (10, 'alice', '앨리스', 100, now()), "
                       "(11, 'bob', '밥', 200, now())"))  # fmt: skip
        c.execute(text("INSERT INTO visit VALUES (1, '9.9.9.1', current_date - 200), "
                       "(2, '9.9.9.2', current_date - 1)"))  # fmt: skip
    clear_context_cache()
    yield lifecycle_env, eng, root
    clear_context_cache()
    eng.dispose()


def test_real_schema_features_on_postgresql(pg_site: Any) -> None:
    env, eng, root = pg_site
    ok = env.run("datamap", "check")
    assert ok.returncode == 0, ok.stderr
    assert "pattern post_* -> post_free, post_qna" in ok.stdout
    # A board created after the map: covered.
    with eng.begin() as c:
        c.execute(text("CREATE TABLE post_news (LIKE post_free INCLUDING ALL)"))
        c.execute(
            text("INSERT INTO post_news (id, login, parent, body) VALUES (1, 'alice', 1, 'n')")
        )
    bob_before = _rows(eng, "SELECT * FROM site_member WHERE login = 'bob'")
    ctx = get_context()
    rid = submit_withdrawal(ctx, resolve_member(ctx, "alice"))
    assert carry_out(ctx, rid)["state"] == "completed"
    run_sweep(get_context())  # carol (marker) and the old visit
    jobs = [r[0] for r in _rows(eng, "SELECT id FROM lifecycle_shred_jobs ORDER BY id")]
    for j in jobs:
        run_job(j)

    for t in ("post_free", "post_qna", "post_news", "orders"):
        assert _rows(eng, f"SELECT count(*) FROM {t} WHERE login = 'alice'") == [(0,)], t
    # Others' rows stay: bob's comment on alice's post, bob's post and file on the other board.
    assert _rows(eng, "SELECT id, login, body FROM post_free") == [(2, "bob", "bob comment")]
    assert _rows(eng, "SELECT id, login FROM post_qna") == [(1, "bob")]
    assert _rows(eng, "SELECT board, post_id FROM post_file") == [("qna", 1)]
    assert _rows(eng, "SELECT * FROM site_member WHERE login = 'bob'") == bob_before
    # Memos: alice's side cleared where bob stays; alice-carol gone (both left).
    memos = sorted(_rows(eng, "SELECT sender, recipient, body, sender_ip FROM memo"))
    assert memos == [("", "bob", "hi bob", ""), ("bob", "", "hi", "2.2.2.2")]
    # The member rows stay, blanked, ids reserved; the marker is the site's own.
    kept = dict(
        (r[0], r[1:]) for r in _rows(eng, "SELECT login, name, email, left_on FROM site_member")
    )
    assert kept["alice"][:2] == ("", "") and len(kept["alice"][2]) == 8
    assert kept["carol"] == ("", "", "20260901")
    assert _rows(eng, "SELECT id FROM visit") == [(2,)]
    # Files: alice's upload and icon shredded, bob's kept.
    assert not (root / "files/free/a1.jpg").exists() and not (root / "files/qna/a2.jpg").exists()
    assert not (root / "icons/al/alice.gif").exists()
    assert (root / "files/qna/b1.jpg").exists() and (root / "icons/bo/bob.gif").exists()
    acc = accounting(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"],
                     env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"])  # fmt: skip
    assert acc.ledger_ok, acc.ledger_message
    assert acc.archived == acc.ledger_archive and acc.archived[("orders", "contract")] == 1
