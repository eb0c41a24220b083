"""The client library's tests run against the real service: ``auth-service migrate`` and
``serve`` as processes (uvicorn), on the embedded default (a SQLite file, in-process store).

The ``auth-service`` command is found in ``AUTH_SERVICE_COMMAND``, else beside this Python,
else in the repository's ``.venv`` (so a fresh venv with only this package installed can run
these tests against the service checked out beside it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

_REPO = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-Horse-Battery-Staple-42"


def service_command() -> str:
    explicit = os.environ.get("AUTH_SERVICE_COMMAND")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "auth-service"
    if beside.exists():
        return str(beside)
    repo = _REPO / ".venv" / "bin" / "auth-service"
    if repo.exists():
        return str(repo)
    found = shutil.which("auth-service")
    if found:
        return found
    pytest.fail("no auth-service command: set AUTH_SERVICE_COMMAND or run `make venv` first")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One served instance; ``stop()`` and ``start()`` keep its port, database and keys."""

    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    client_id: str = ""
    client_secret: str = ""
    _process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
        env.update(
            AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{self.workdir / 'auth.db'}",
            AUTH_ISSUER="http://127.0.0.1",
            AUTH_SCHEDULER_ENABLED="false",
            AUTH_ADMIN_PASSWORD=PASSWORD,
            # The tests log in many users from one address:
            AUTH_LOGIN_IP_LIMIT="100000",
            AUTH_REGISTER_IP_LIMIT="100000",
        )
        env.update(self.extra_env)
        return env

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [service_command(), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def set_up(self) -> None:
        self.cli("migrate")
        printed = dict(
            line.split("=", 1) for line in self.cli("clients", "create", "tests").split()
        )
        self.client_id, self.client_secret = printed["client_id"], printed["client_secret"]
        self.cli("create-admin", "--email", "admin@example.com")

    def start(self) -> None:
        assert self._process is None
        with (self.workdir / "serve.log").open("a") as log:
            self._process = subprocess.Popen(
                [service_command(), "serve", "--port", str(self.port)],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self._process.poll() is None, self.log()
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                if httpx.get(f"{self.base_url}/health/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail("the service did not become ready:\n" + self.log())

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def log(self) -> str:
        path = self.workdir / "serve.log"
        return path.read_text() if path.exists() else ""

    # -- acting as a user and as an operator --------------------------------------------------
    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.base_url}{path}", timeout=10, **kwargs)

    def login(self, email: str | None = None) -> dict[str, Any]:
        """Register (if need be) and log in; the token pair."""
        email = email or f"user-{secrets.token_hex(6)}@example.com"
        self.post("/auth/register", json={"email": email, "password": PASSWORD})
        answer = self.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        pair: dict[str, Any] = answer.json()
        return pair

    def logout(self, pair: dict[str, Any]) -> None:
        answer = self.post(
            "/auth/logout",
            json={"refresh_token": pair["refresh_token"]},
            headers={"Authorization": f"Bearer {pair['access_token']}"},
        )
        assert answer.status_code == 204, answer.text

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.login('admin@example.com')['access_token']}"}

    def rotate_keys(self) -> dict[str, Any]:
        answer = self.post("/admin/keys/rotate", headers=self.admin_headers())
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def revoke_key(self, kid: str) -> dict[str, Any]:
        answer = self.post(f"/admin/keys/{kid}/revoke", headers=self.admin_headers())
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def validate(self, token: str) -> dict[str, Any]:
        answer = self.post(
            "/validate", json={"token": token}, auth=(self.client_id, self.client_secret)
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def serve_instance(tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[Service]:
    """Set up and serve an instance in ``tmp`` (with ``extra_env`` settings); stop it after."""
    service = Service(tmp, dict(extra_env or {}))
    service.set_up()
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One instance shared by a module's tests (they must not stop it)."""
    yield from serve_instance(tmp_path_factory.mktemp("served"))


@pytest.fixture
def own_service(tmp_path: Path) -> Iterator[Service]:
    """An instance of the test's own: it may stop, restart or rotate it."""
    yield from serve_instance(tmp_path)
