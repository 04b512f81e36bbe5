"""The map language for real schemas (docs/datamap.md): what it accepts, what it refuses in one
line naming the map line, and how patterns and optional tables expand. No database."""

from __future__ import annotations

import pytest

from lifecycle.datamap.loader import parse_datamap
from lifecycle.datamap.model import DataMapError, FileTemplate
from tests.helpers import REPO

MAP = REPO / "lifecycle" / "datamap" / "maps" / "gnuboard5.yaml"
G5 = MAP.read_text(encoding="utf-8")


def edit(old: str, new: str, text: str = G5) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def refused(text: str) -> DataMapError:
    with pytest.raises(DataMapError) as exc:
        parse_datamap(text, "g5.yaml")
    assert "\n" not in str(exc.value)
    return exc.value


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "at", "says"),
    [
        (
            "  on_withdrawal: blank_and_keep\n",
            "  on_withdrawal: blank_and_keep\n  status_column: mb_level\n",
            "withdrawn:",
            "give either withdrawn:",
        ),
        (
            '    format: "%Y%m%d"\n',
            '    format: "every day"\n',
            'format: "every day"',
            "is not a date format",
        ),
        (
            "    key: []\n",
            "    key: []\n    purpose_end: [withdrawal, {age: {column: dt_time, after: 1y}}]\n",
            "key: []",
            "has no key",
        ),
        (
            "  g5_shop_order_data:\n    key: []\n    subject_column: mb_id\n    member_key: mb_id\n"
            "    optional: true\n    columns:\n      payment_gateway:",
            "  g5_shop_order_data:\n    key: []\n    subject_column: mb_id\n    member_key: mb_id\n"
            "    optional: true\n    columns:\n      payment:",
            "key: []",
            "has no key",
        ),
        (
            'via: {table: "g5_write_*", match: bo_table, column: wr_id, parent_key: wr_id}',
            'via: {table: "g5_write_*", column: wr_id, parent_key: wr_id}',
            'via: {table: "g5_write_*"',
            "needs match: COLUMN",
        ),
        (
            "{column: me_send_mb_id, member_key: mb_id, blank: [me_send_ip]}",
            "{column: me_send_mb_id, member_key: mb_nick, blank: [me_send_ip]}",
            "- {column: me_send_mb_id",
            "member_key 'mb_nick' must be the subject's key or login_column",
        ),
        (
            "  g5_board_new:\n    key: bn_id\n    subject_column: mb_id\n",
            "  g5_board_new:\n    key: bn_id\n    subject_column: mb_id\n    members: "
            "[{column: mb_id}, {column: wr_id}]\n",
            "members: [{column: mb_id}",
            "has both subject_column and members",
        ),
        (
            "  g5_visit:\n    key: vi_id\n    purpose_end: [{age: vi_date}]",
            "  g5_visit:\n    key: vi_id\n    purpose_end: [withdrawal]",
            "  g5_visit:",
            "has no subject relation",
        ),
        (
            "  g5_write_*:",
            "  g5_*_write_*:",
            "g5_*_write_*:",
            "may hold one '*' only",
        ),
    ],
)
def test_refused_in_one_line_naming_the_map_line(old: str, new: str, at: str, says: str) -> None:
    text = edit(old, new)
    err = refused(text)
    assert says in err.message, err.message
    assert err.line == line_of(text, at), (err.line, err.message)


def test_cleared_columns_must_be_destroy_now() -> None:
    line = next(ln for ln in G5.splitlines() if ln.startswith("  messages: {period: 0d,"))
    text = edit(line, '  messages: {period: 1y, legal_basis: "상법 제33조"}')
    # (Declared a contract record, so 상법 제33조 covers it and the blank: check is reached.)
    text = text.replace("[posts, messages,", "[posts, {messages: contract},")
    err = refused(text)
    assert "blank: column me_send_ip is in category 'messages'" in err.message
    assert err.line == line_of(text, "- {column: me_send_mb_id")


def test_patterns_expand_and_missing_optional_tables_are_notes() -> None:
    dm = parse_datamap(G5, "g5.yaml")
    live = {"g5_member", "g5_write_free", "g5_write_qna", "g5_write_new_board", "g5_board_file",
            "g5_memo", "g5_visit", "g5_write_free_backup"}  # fmt: skip
    x = dm.expand(live)
    boards = sorted(n for n, t in x.tables.items() if t.pattern == "g5_write_*")
    assert boards == ["g5_write_free", "g5_write_free_backup", "g5_write_new_board", "g5_write_qna"]
    via = x.tables["g5_board_file"].via
    assert via is not None and dict(via.tables)["new_board"] == "g5_write_new_board"
    assert "g5_shop_order" not in x.tables
    notes = [n for n in x.notes if "optional table g5_shop_order " in n]
    assert notes and notes[0].startswith(f"g5.yaml:{line_of(G5, '  g5_shop_order:')}:")
    # A table the map names is never claimed by a pattern; errors on expanded tables point at
    # the pattern's line.
    assert x.line_of("tables", "g5_write_qna") == line_of(G5, "g5_write_*:")
    order = [t.name for t in x.tables_in_dependency_order()]
    assert order.index("g5_board_file") < min(order.index(b) for b in boards)
    assert order[-1] == "g5_member"


def test_path_templates() -> None:
    icon = FileTemplate("data/member/{mb_id[:2]}/{mb_id}.gif", "profile")
    assert icon.fields == ("mb_id",)
    assert icon.render({"mb_id": "lee_mh7"}) == "data/member/le/lee_mh7.gif"
    assert icon.render({"mb_id": ""}) is None
    up = FileTemplate("data/file/{bo_table}/{bf_file}", "uploads")
    assert up.render({"bo_table": "free", "bf_file": None}) is None
    dm = parse_datamap(G5, "g5.yaml")
    assert dm.resolve_path("data/file/free/x.jpg") == "/var/www/gnuboard/data/file/free/x.jpg"
    assert dm.resolve_path("/abs/x.jpg") == "/abs/x.jpg"


def test_site_root_must_be_absolute() -> None:
    text = edit("  root: /var/www/gnuboard", "  root: www/gnuboard")
    err = refused(text)
    assert "site.root must be an absolute path" in err.message
    assert err.line == line_of(text, "root: www/gnuboard")


def test_the_demo_map_still_reads_as_before() -> None:
    demo = (MAP.parent / "demo.yaml").read_text(encoding="utf-8")
    dm = parse_datamap(demo, "demo.yaml")
    s = dm.subject
    assert (s.status_column, s.withdrawn_at_column, s.marker_column, s.keep_row) == (
        "status", "withdrawn_at", None, False)  # fmt: skip
    assert all(t.keys == (t.key,) for t in dm.tables.values())
    assert dm.tables["payments"].direct_by_key
