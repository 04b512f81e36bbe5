"""docker-compose.yml is valid (checked by the docker client where it exists)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.helpers import REPO


def _compose_available() -> bool:
    if not shutil.which("docker"):
        return False
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return r.returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="docker compose client not installed")
def test_docker_compose_config_is_valid(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "POSTGRES_PASSWORD=x\nPRIMARY_DB_PASSWORD=y\nARCHIVE_DB_PASSWORD=z\n"
        "FLOWER_BASIC_AUTH=ops:secret\n"
    )
    r = subprocess.run(
        [
            "docker",
            "compose",
            "--env-file",
            str(env_file),
            "-f",
            "docker-compose.yml",
            "config",
            "-q",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_compose_declares_the_production_shape() -> None:
    # Runs everywhere: the invariants ops rely on are in the file.
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"postgres", "redis", "worker", "beat", "flower", "migrate"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "noeviction" in redis_cmd and "--appendonly yes" in redis_cmd
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert all(p.startswith("127.0.0.1:") for p in services["flower"]["ports"])
    env = services["worker"]["environment"]
    assert env["LIFECYCLE_PRIMARY_DATABASE_URL"] != env["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    assert "lifecycle_archive" in env["LIFECYCLE_ARCHIVE_DATABASE_URL"]
