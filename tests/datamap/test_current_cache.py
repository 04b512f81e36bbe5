"""The validated data map kept on disk between commands (lifecycle.datamap.current): a second
process reads it without the loader, an edited map is parsed and validated again, and a cache
file that is not safe to read (or not readable) costs a parse, never a wrong map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.datamap.paths import SHIPPED_DEMO_MAP

PROBE = """
import json, sys
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.model import DataMapError
try:
    dm = current_datamap()
except DataMapError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
print(json.dumps({
    "parsed": "lifecycle.datamap.loader" in sys.modules,
    "source": dm.source,
    "subject": dm.subject.table,
    "tables": sorted(dm.tables),
    "period": str(dm.rules["complaint"].period),
}))
"""


def _run(var: Path, map_file: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env |= {"LIFECYCLE_VAR_DIR": str(var), "LIFECYCLE_DATA_MAP": str(map_file)}
    r = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture
def site_map(tmp_path: Path) -> Path:
    p = tmp_path / "site.yaml"
    p.write_text(SHIPPED_DEMO_MAP.read_text(encoding="utf-8"), encoding="utf-8")
    return p


def _entries(var: Path) -> list[Path]:
    return sorted((var / "cache").glob("datamap-*.pickle"))


def test_a_second_process_reads_the_validated_map_without_the_loader(
    tmp_path: Path, site_map: Path
) -> None:
    var = tmp_path / "var"
    first = _run(var, site_map)
    assert first["parsed"] is True
    [entry] = _entries(var)
    assert entry.stat().st_mode & 0o777 == 0o600
    second = _run(var, site_map)
    assert second["parsed"] is False
    assert second == first | {"parsed": False}
    assert second["source"] == str(site_map)


def test_an_edited_map_is_parsed_again_and_a_bad_edit_still_fails_with_its_line(
    tmp_path: Path, site_map: Path
) -> None:
    var = tmp_path / "var"
    before = _run(var, site_map)
    text = site_map.read_text(encoding="utf-8")
    assert "period: 3y" in text
    site_map.write_text(text.replace("period: 3y", "period: 2y", 1), encoding="utf-8")
    after = _run(var, site_map)
    assert after["parsed"] is True and after["period"] != before["period"]
    assert len(_entries(var)) == 1  # the older version's entry is gone
    assert _run(var, site_map) == after | {"parsed": False}
    site_map.write_text(text.replace("period: 3y", "period: forever", 1), encoding="utf-8")
    bad = _run(var, site_map)
    assert str(bad["error"]).startswith(f"data map {site_map}:88: "), bad
    assert "\n" not in str(bad["error"])
    # The refused text is not stored, and the earlier good entry is kept.
    assert len(_entries(var)) == 1


def test_a_cache_file_others_can_write_or_a_corrupt_one_is_not_read(
    tmp_path: Path, site_map: Path
) -> None:
    var = tmp_path / "var"
    good = _run(var, site_map)
    [entry] = _entries(var)
    entry.chmod(0o666)
    assert _run(var, site_map) == good  # parsed again: "parsed" is True
    [entry] = _entries(var)
    assert entry.stat().st_mode & 0o777 == 0o600  # and stored safely again
    entry.write_bytes(b"not a pickle")
    assert _run(var, site_map) == good
    assert _run(var, site_map) == good | {"parsed": False}


def test_an_unwritable_cache_costs_a_parse_only(tmp_path: Path, site_map: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "cache").write_text("a file where the folder would be")
    assert _run(var, site_map)["parsed"] is True
    assert _run(var, site_map)["parsed"] is True
