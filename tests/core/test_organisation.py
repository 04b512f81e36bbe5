"""The organisation's name (개인정보처리자): a setting, never the demo centre's on a real site."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lifecycle.channels.templates import member_notice
from lifecycle.core.errors import SettingsError
from lifecycle.core.settings import DEMO_ORGANISATION, Settings, reset_settings_cache
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from tests.helpers import LifecycleEnv


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_demo_map_names_the_demo_centre() -> None:
    assert _settings().organisation() == DEMO_ORGANISATION


def test_a_site_map_without_a_name_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        _settings(data_map=tmp_path / "site.yaml").organisation()
    assert "LIFECYCLE_ORGANISATION_NAME is not set" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_setting_wins_and_is_trimmed(tmp_path: Path) -> None:
    s = _settings(data_map=tmp_path / "site.yaml", organisation_name="  그누 커뮤니티 ")
    assert s.organisation() == "그누 커뮤니티"
    assert _settings(organisation_name="").organisation() == DEMO_ORGANISATION


def test_a_name_over_several_lines_is_refused() -> None:
    with pytest.raises(ValueError, match="one line"):
        _settings(organisation_name="A\nB")


def test_notices_carry_the_configured_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_ORGANISATION_NAME", "그누 커뮤니티")
    reset_settings_cache()
    try:
        rendered = member_notice("withdrawal_completed", {"request_id": 1, "member_id": 2})
    finally:
        monkeypatch.delenv("LIFECYCLE_ORGANISATION_NAME")
        reset_settings_cache()
    text = rendered.subject + rendered.body
    assert "그누 커뮤니티" in text and DEMO_ORGANISATION not in text


@pytest.mark.integration
def test_status_asks_for_the_name_when_a_site_map_is_in_use(embedded_env: LifecycleEnv) -> None:
    site_map = embedded_env.var_dir.parent / "site.yaml"
    site_map.write_text(SHIPPED_DEMO_MAP.read_text())
    assert embedded_env.run("db", "upgrade").returncode == 0
    r = embedded_env.run("status", "--json", LIFECYCLE_DATA_MAP=str(site_map))
    assert r.returncode == 1, r.stderr
    attention = json.loads(r.stdout)["attention"]
    assert any("LIFECYCLE_ORGANISATION_NAME is not set" in a for a in attention), attention
    named = embedded_env.run(
        "status", "--json", LIFECYCLE_DATA_MAP=str(site_map), LIFECYCLE_ORGANISATION_NAME="X"
    )
    assert not any("ORGANISATION" in a for a in json.loads(named.stdout)["attention"])
