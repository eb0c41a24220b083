"""The deployment files: docker-compose.yml is a valid Compose file (checked against the
Compose Specification's JSON schema: no `docker compose` is installed here) and keeps its
promises; the Dockerfile's; scripts/generate_secrets.sh."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_compose_file_is_valid_against_the_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)
    # and a wrong one is not (the validator does check)
    broken = {**compose, "services": {"x": {"deploy": {"replicas": "two"}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


def test_the_compose_file_keeps_its_promises(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["auth"]["deploy"]["replicas"] == 2
    assert services["postgres"]["volumes"] and "postgres-data" in compose["volumes"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    migrate = services["migrate"]
    assert migrate["entrypoint"] == ["auth-service", "migrate"] and migrate["restart"] == "no"
    waits = services["auth"]["depends_on"]
    assert waits["migrate"]["condition"] == "service_completed_successfully"
    assert waits["redis"]["condition"] == waits["postgres"]["condition"] == "service_healthy"
    lb = services["lb"]
    assert lb["ports"] == ["${AUTH_PUBLIC_PORT:-8000}:8000"]  # one URL for clients
    assert not any("ports" in services[name] for name in services if name != "lb")
    proxy = lb["networks"]["backend"]["ipv4_address"]
    environment = services["auth"]["environment"]
    assert environment["AUTH_TRUSTED_PROXIES"] == proxy
    assert environment["AUTH_ENVIRONMENT"] == "production"
    assert "AUTH_KEY_ENCRYPTION_SECRET" not in environment  # a Docker secret instead
    for name in ("auth", "migrate"):
        assert services[name]["secrets"] == ["auth_key_encryption_secret"]
    assert compose["secrets"]["auth_key_encryption_secret"]["file"].startswith("./secrets/")
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server auth:8000" in nginx and "X-Forwarded-For" in nginx


def test_the_image_runs_the_wheel_as_a_non_root_user_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM python:3.12-slim") == 2  # multi-stage
    assert "pip wheel" in dockerfile and "pip install --no-cache-dir /wheels/*.whl" in dockerfile
    users = [line for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users == ["USER auth"]
    assert "HEALTHCHECK" in dockerfile and "/health/live" in dockerfile
    assert 'auth-service serve --host 0.0.0.0 --port 8000 --workers \\"${AUTH_WORKERS}\\"' in (
        dockerfile
    )


def test_generate_secrets_writes_private_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "generate_secrets.sh"
    first = subprocess.run([script, str(tmp_path)], capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    secret = (tmp_path / "secrets" / "auth_key_encryption_secret").read_text().strip()
    assert len(secret) >= 64
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert len(env["POSTGRES_PASSWORD"]) >= 64 and len(env["AUTH_METRICS_TOKEN"]) >= 64
    for path in (tmp_path / ".env", tmp_path / "secrets" / "auth_key_encryption_secret"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = subprocess.run([script, str(tmp_path)], capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    assert (tmp_path / "secrets" / "auth_key_encryption_secret").read_text().strip() == secret
    forced = subprocess.run(
        [script, "--force", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert forced.returncode == 0
    assert (tmp_path / "secrets" / "auth_key_encryption_secret").read_text().strip() != secret
