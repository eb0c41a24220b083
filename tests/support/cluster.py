"""Real `auth-service serve` processes on one database and one store, and HTTP helpers.

Adapted from ``tests/test_serve_process.py`` (copied, not imported): an environment built
from ``os.environ`` without any ``AUTH_*`` variable, a free port per process, readiness
polled on ``/health/ready``, and every process stopped in ``finally``. Then the timing and
the start-up (``boot``) of the three-process rotation tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt

BIN = Path(sys.executable).parent / "auth-service"
READY_SECONDS = 30.0
STOP_SECONDS = 10.0

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "Cluster admin pass 0001 xq"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_environment(
    database_url: str, redis_url: str, redis_prefix: str, secret: str
) -> dict[str, str]:
    """The settings every instance of one cluster shares (cheap argon2, fast key cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env.update(
        AUTH_DATABASE_URL=database_url,
        AUTH_REDIS_URL=redis_url,
        AUTH_REDIS_KEY_PREFIX=redis_prefix,
        AUTH_KEY_ENCRYPTION_SECRET=secret,
        AUTH_ISSUER="http://127.0.0.1",
        AUTH_ENVIRONMENT="development",
        AUTH_PASSWORD_HASH_MEMORY_KIB="8",
        AUTH_PASSWORD_HASH_TIME_COST="1",
        AUTH_JWKS_MAX_AGE_SECONDS="0",
        AUTH_KEY_CACHE_REFRESH_SECONDS="1",
        AUTH_LOGIN_FAILURE_LIMIT="1000",
        AUTH_LOGIN_IP_LIMIT="100000",
        AUTH_REGISTER_IP_LIMIT="100000",
        AUTH_CLIENT_AUTH_FAILURE_LIMIT="100000",
        AUTH_SCHEDULER_ENABLED="false",
    )
    return env


@dataclass
class Instance:
    name: str
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


@dataclass
class Cluster:
    """Starts instances (all at once, then waits for all) and stops every one it started."""

    env: dict[str, str]
    workdir: Path
    instances: list[Instance] = field(default_factory=list)

    def start(self, count: int, **overrides: str) -> list[Instance]:
        env = {**self.env, **overrides}
        started: list[Instance] = []
        for _ in range(count):
            instance = self._spawn(env)
            self.instances.append(instance)  # stop_all stops it even if a later step fails
            started.append(instance)
        deadline = time.monotonic() + READY_SECONDS
        for instance in started:
            self._wait_ready(instance, deadline)
        return started

    def _spawn(self, env: dict[str, str]) -> Instance:
        name = chr(ord("A") + len(self.instances))
        port = free_port()
        log = self.workdir / f"instance-{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [BIN, "serve", "--port", str(port)],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        return Instance(name, f"http://127.0.0.1:{port}", process, log)

    def _wait_ready(self, instance: Instance, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not instance.alive():
                raise AssertionError(
                    f"instance {instance.name} exited with {instance.process.returncode}:\n"
                    + self.logs()
                )
            try:
                if httpx.get(f"{instance.base}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"instance {instance.name} did not become ready:\n" + self.logs())

    def logs(self) -> str:
        return "\n".join(
            f"----- instance {i.name} ({i.base}) -----\n{i.log_text()}" for i in self.instances
        )

    def stop_all(self) -> None:
        for instance in self.instances:
            if instance.alive():
                instance.process.terminate()
        for instance in self.instances:
            try:
                instance.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                instance.process.kill()
                instance.process.wait()


def run_cli(env: dict[str, str], workdir: Path, *args: str) -> subprocess.Popen[str]:
    """Start one ``auth-service`` command (the caller collects it with ``cli_output``)."""
    return subprocess.Popen(
        [BIN, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,
    )


def cli_output(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=30)
    if process.returncode != 0:
        raise AssertionError(f"{process.args!r} failed ({process.returncode}):\n{stderr}")
    return stdout


def start_bootstrap(env: dict[str, str], workdir: Path) -> list[subprocess.Popen[str]]:
    """Create the admin user and a service client (started while the instances boot)."""
    return [
        run_cli(
            {**env, "AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD},
            workdir,
            "create-admin",
            "--email",
            ADMIN_EMAIL,
        ),
        run_cli(env, workdir, "clients", "create", "cluster-test"),
    ]


def finish_bootstrap(processes: list[subprocess.Popen[str]]) -> tuple[str, str]:
    """Wait for ``start_bootstrap``; returns the client's (id, secret)."""
    admin, client = (cli_output(process) for process in processes)
    assert "created admin" in admin, admin
    values = dict(line.split("=", 1) for line in client.splitlines() if "=" in line)
    return values["client_id"], values["client_secret"]


# -- HTTP ---------------------------------------------------------------------------------


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, base: str, email: str, password: str) -> str:
    """An access token from ``POST /auth/login``."""
    response = await client.post(f"{base}/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, (base, response.status_code, response.text)
    return str(response.json()["access_token"])


async def register(client: httpx.AsyncClient, base: str, email: str, password: str) -> None:
    response = await client.post(
        f"{base}/auth/register", json={"email": email, "password": password}
    )
    assert response.status_code == 201, (base, response.status_code, response.text)


async def validate(
    client: httpx.AsyncClient, base: str, token: str, auth: tuple[str, str]
) -> httpx.Response:
    return await client.post(f"{base}/validate", json={"token": token}, auth=auth)


async def key_rows(client: httpx.AsyncClient, base: str, admin: str) -> list[dict[str, Any]]:
    response = await client.get(f"{base}/admin/keys", headers=bearer(admin))
    assert response.status_code == 200, (base, response.status_code, response.text)
    return list(response.json()["keys"])


def statuses(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(row["status"]) for row in rows)


def row_with(rows: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """The one key row with ``status`` (asserts there is exactly one)."""
    matching = [row for row in rows if row["status"] == status]
    assert len(matching) == 1, (status, rows)
    return matching[0]


def kid_with(rows: list[dict[str, Any]], status: str) -> str:
    return str(row_with(rows, status)["kid"])


async def jwks_kids(client: httpx.AsyncClient, base: str) -> list[str]:
    response = await client.get(f"{base}/.well-known/jwks.json")
    assert response.status_code == 200, (base, response.status_code, response.text)
    return [str(key["kid"]) for key in response.json()["keys"]]


async def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline`` (at once if it has)."""
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


# -- the rotation tests' timing and start-up (were in tests/cluster/conftest.py) ---------

MARGIN = 0.2
PROPAGATION = 1.0  # a key change reaches every instance within this many seconds
# With the 1 s key-cache refresh timer, a lost "keys changed" event would still meet that
# deadline. The revocation test needs no old next key, so it sets the timer far beyond the
# test's length: only the event can reach the other instances in time.
EVENT_ONLY = {"AUTH_KEY_CACHE_REFRESH_SECONDS": "60"}
POLL = 0.05
ROTATE_EVERY = 1.5
RUN_SECONDS = 8.0
LAST_KEY_SECONDS = 2.0
MIN_VALIDATIONS = 500
MAX_RUN_SECONDS = 20.0
VALIDATORS = 3  # concurrent validation loops (more only contend for the two test CPUs)
PASSWORD = "Cluster test pass 0001 xq"
ONE_ROTATION = Counter(active=1, next=1, retired=1)

SCHEDULED_ROTATION = {
    "AUTH_SCHEDULER_ENABLED": "true",
    "AUTH_KEY_CHECK_INTERVAL_SECONDS": "0.5",
    "AUTH_KEY_ROTATION_INTERVAL_HOURS": "0.002",
}
ROTATION_INTERVAL = timedelta(hours=0.002)  # 7.2 s


@dataclass(frozen=True)
class Booted:
    instances: list[Instance]
    admin: str  # an admin's access token
    client_auth: tuple[str, str]  # HTTP Basic credentials of a service client
    ready_at: float  # time.monotonic() once every instance was ready


async def boot(
    cluster: Cluster,
    http: httpx.AsyncClient,
    count: int = 3,
    overrides: dict[str, str] | None = None,
) -> Booted:
    """Start ``count`` instances (the admin and a client are created meanwhile); log in."""
    bootstrap = start_bootstrap(cluster.env, cluster.workdir)
    try:
        instances = cluster.start(count, **(overrides or {}))
    finally:
        client_auth = finish_bootstrap(bootstrap)
    ready_at = time.monotonic()
    admin = await login(http, instances[0].base, ADMIN_EMAIL, ADMIN_PASSWORD)
    return Booted(instances, admin, client_auth, ready_at)


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def until_next_key_may_sign(rows: list[dict[str, Any]], refresh_seconds: float) -> None:
    """Sleep until the ``next`` key is older than JWKS max-age (0) + the key-cache refresh."""
    ready = parse_time(row_with(rows, "next")["created_at"]) + timedelta(seconds=refresh_seconds)
    await asyncio.sleep(max(0.0, (ready - utc_now()).total_seconds() + MARGIN))
