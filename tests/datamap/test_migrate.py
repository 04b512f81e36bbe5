"""`lifecycle datamap migrate`: a map in older spellings loads, and is rewritten to today's
spellings with its comments, order and quoting kept, to a map that loads to the same model."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.datamap.loader import parse_datamap
from lifecycle.datamap.migrate import DEPRECATED, migrate, same_model
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from tests.helpers import LifecycleEnv

OLD = Path(__file__).parent / "maps" / "demo-old-spellings.yaml"
SHIPPED = sorted(SHIPPED_DEMO_MAP.parent.glob("*.yaml"))


def _comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]


def test_the_old_spellings_load_and_migrate_to_the_same_model() -> None:
    text = OLD.read_text(encoding="utf-8")
    before = parse_datamap(text, str(OLD))
    result = migrate(text, str(OLD))
    assert len(result.edits) == 9
    after = parse_datamap(result.text, "migrated")
    assert same_model(before, after)
    assert before.rule("advertising").period == after.rule("advertising").period
    # Only the spellings changed: every comment, every other line, the order and the quoting.
    assert _comments(result.text) == _comments(text)
    assert len(result.text.splitlines()) == len(text.splitlines())
    changed = [
        (a.strip(), b.strip())
        for a, b in zip(text.splitlines(), result.text.splitlines(), strict=True)
        if a != b
    ]
    assert ("period: P5Y", "period: 5y") in changed
    assert ("period: 6m", "period: 6mo") in changed
    assert ('period: "P3Y"', 'period: "3y"') in changed
    assert ("inactive_for: P1Y", "inactive_for: 1y") in changed
    assert any("after: 36mo" in b for _, b in changed)
    assert len(changed) == 9
    # Migrating again changes nothing.
    assert migrate(result.text).current


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_maps_are_current(path: Path) -> None:
    assert migrate(path.read_text(encoding="utf-8"), str(path)).current


def test_every_deprecated_spelling_names_its_replacement() -> None:
    for rule in DEPRECATED:
        assert rule.old and rule.new and rule.where
        assert (rule.value is None) != (rule.rename is None)


def test_migrate_prints_a_diff_then_writes_with_a_backup(
    embedded_env: LifecycleEnv, tmp_path: Path
) -> None:
    m = tmp_path / "site.yaml"
    original = OLD.read_text(encoding="utf-8")
    m.write_text(original, encoding="utf-8")

    r = embedded_env.run("datamap", "migrate", "--file", str(m))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"--- {m} (now)\n+++ {m} (migrated)\n")
    assert "-    period: 6m\n+    period: 6mo\n" in r.stdout
    assert "9 deprecated spellings; run with --write" in r.stderr
    assert m.read_text(encoding="utf-8") == original
    assert not list(tmp_path.glob("*.bak*"))

    r = embedded_env.run("datamap", "migrate", "--file", str(m), "--write")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site.yaml.bak").read_text(encoding="utf-8") == original
    assert m.read_text(encoding="utf-8") == migrate(original).text

    r = embedded_env.run("datamap", "migrate", "--file", str(m))
    assert r.returncode == 0 and r.stdout == f"data map {m}: already current\n", r.stdout
    assert embedded_env.run("datamap", "check", "--offline", "--file", str(m)).returncode == 0


def test_a_map_that_would_not_load_is_refused_in_one_line_and_left_alone(
    embedded_env: LifecycleEnv, tmp_path: Path
) -> None:
    # Spellings are all migrate rewrites: a rule citing internal policy (the first demo map's
    # counselling rule) is refused by the loader, before and after.
    m = tmp_path / "site.yaml"
    text = OLD.read_text(encoding="utf-8").replace(
        '"정보주체의 별도 동의 (개인정보 보호법 제23조 제1항 제1호, 민감정보)"',
        '"내부 방침: 상담기록 보존"',
    )
    text = text.replace("    consent: counselling_consent_at\n", "")
    m.write_text(text, encoding="utf-8")
    r = embedded_env.run("datamap", "migrate", "--file", str(m), "--write")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal policy is no legal basis" in lines[0], r.stderr
    assert m.read_text(encoding="utf-8") == text
    assert not list(tmp_path.glob("*.bak*"))
    r = embedded_env.run("datamap", "migrate", "--file", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "file not found" in r.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("subject: [a\n  b: c\n", encoding="utf-8")
    r = embedded_env.run("datamap", "migrate", "--file", str(broken), "--write")
    assert r.returncode == 2 and r.stderr.startswith(f"lifecycle: error: data map {broken}:2: ")
    assert r.stderr.count("\n") == 1 and broken.read_text(encoding="utf-8").startswith("subject")
