"""Bad settings and bad command lines: one line, non-zero exit, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import LifecycleEnv, free_port


def _one_line_error(r, code: int | None = None) -> str:  # type: ignore[no-untyped-def]
    assert r.returncode != 0, r.stdout
    if code is not None:
        assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("lifecycle: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("LIFECYCLE_PRIMARY_DATABASE_URL", "not a url", "LIFECYCLE_PRIMARY_DATABASE_URL"),
        ("LIFECYCLE_ARCHIVE_DATABASE_URL", "mysql://u@h/db", "LIFECYCLE_ARCHIVE_DATABASE_URL"),
        ("LIFECYCLE_BROKER_URL", "amqp://guest@localhost//", "LIFECYCLE_BROKER_URL"),
        ("LIFECYCLE_FLOWER_PORT", "99999", "LIFECYCLE_FLOWER_PORT"),
    ],
)
def test_invalid_setting_stops_with_one_line(
    embedded_env: LifecycleEnv, var: str, value: str, needle: str
) -> None:
    line = _one_line_error(embedded_env.run("db", "upgrade", **{var: value}), 2)
    assert needle in line
    assert not (embedded_env.var_dir / "primary.sqlite3").exists()


def test_archive_url_equal_to_primary_is_refused(embedded_env: LifecycleEnv) -> None:
    url = f"sqlite:///{embedded_env.var_dir}/same.sqlite3"
    line = _one_line_error(
        embedded_env.run(
            "db",
            "upgrade",
            LIFECYCLE_PRIMARY_DATABASE_URL=url,
            LIFECYCLE_ARCHIVE_DATABASE_URL=url,
        ),
        2,
    )
    assert "must differ" in line


def test_password_never_echoed(embedded_env: LifecycleEnv) -> None:
    r = embedded_env.run("db", "upgrade", LIFECYCLE_BROKER_URL="amqp://user:s3cr3t@host//")
    _one_line_error(r, 2)
    assert "s3cr3t" not in r.stderr


def test_unreadable_key_file(embedded_env: LifecycleEnv, tmp_path: Path) -> None:
    # A directory is unreadable as a file even for root (CI runs as root, so chmod 0 won't do).
    key = tmp_path / "k"
    key.mkdir()
    line = _one_line_error(embedded_env.run("up", LIFECYCLE_MASTER_KEY_FILE=str(key)), 2)
    assert "not readable" in line


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "does not exist"), (b"not base64!!", "not base64"), (b"c2hvcnQ=", "32 bytes")],
)
def test_bad_master_key_file(
    embedded_env: LifecycleEnv, tmp_path: Path, content: bytes | None, needle: str
) -> None:
    key = tmp_path / "master.key"
    if content is not None:
        key.write_bytes(content)
    line = _one_line_error(embedded_env.run("up", LIFECYCLE_MASTER_KEY_FILE=str(key)), 2)
    assert needle in line


def test_embedded_master_key_is_created_0600(embedded_env: LifecycleEnv) -> None:
    from lifecycle.core.settings import get_settings

    key = get_settings().master_key_bytes()
    assert len(key) == 32
    path = embedded_env.var_dir / "master.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert get_settings().master_key_bytes() == key  # stable across calls


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["db", "upgrade", "--bogus"],
        ["ping", "--nope"],
    ],
)
def test_bad_command_line(embedded_env: LifecycleEnv, argv: list[str]) -> None:
    def snapshot() -> set[Path]:
        return set(embedded_env.var_dir.rglob("*")) if embedded_env.var_dir.exists() else set()

    before = snapshot()
    _one_line_error(embedded_env.run(*argv), 2)
    assert snapshot() == before


def test_database_unreachable(embedded_env: LifecycleEnv) -> None:
    port = free_port()
    line = _one_line_error(
        embedded_env.run(
            "db",
            "upgrade",
            LIFECYCLE_PRIMARY_DATABASE_URL=f"postgresql://u@127.0.0.1:{port}/x",
        ),
        3,
    )
    assert "primary database" in line and "unreachable" in line


def test_broker_unreachable(embedded_env: LifecycleEnv) -> None:
    port = free_port()
    r = embedded_env.run(
        "ping",
        LIFECYCLE_BROKER_URL=f"redis://127.0.0.1:{port}/0",
        LIFECYCLE_RESULT_BACKEND=f"redis://127.0.0.1:{port}/1",
    )
    line = _one_line_error(r, 3)
    assert "broker unreachable" in line or "result backend unreachable" in line


def test_db_upgrade_twice_on_postgres(lifecycle_env: LifecycleEnv) -> None:
    for _ in range(2):
        r = lifecycle_env.run("db", "upgrade")
        assert r.returncode == 0, r.stderr
        assert "primary database at revision" in r.stdout
