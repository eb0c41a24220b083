"""The real thing: `auth-service migrate` and `serve` as processes, the real clock, HTTP on a port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.backends import REDIS_URL, TEST_SECRET, is_postgres

BIN = Path(sys.executable).parent / "auth-service"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def environment(database_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AUTH_") or k.startswith("AUTH_TEST_")
    }
    env.update(
        AUTH_DATABASE_URL=database_url,
        AUTH_ISSUER="http://127.0.0.1",
        AUTH_SCHEDULER_ENABLED="false",
        AUTH_REDIS_KEY_PREFIX=redis_prefix,
    )
    if is_postgres():
        env.update(AUTH_REDIS_URL=REDIS_URL, AUTH_KEY_ENCRYPTION_SECRET=TEST_SECRET)
    else:  # the embedded default: the secret is generated beside a fresh SQLite file
        env["AUTH_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'served' / 'auth.db'}"
    return env


@pytest.fixture
def served(environment: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    subprocess.run([BIN, "migrate"], env=environment, check=True, capture_output=True, cwd=tmp_path)
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [BIN, "serve", "--port", str(port)],
            env=environment,
            stdout=sink,
            stderr=sink,
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the service did not become ready:\n" + log.read_text())
        yield base, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_served_process_publishes_two_keys_made_now(
    served: tuple[str, Path], environment: dict[str, str], tmp_path: Path
) -> None:
    base, log = served
    jwks = httpx.get(f"{base}/.well-known/jwks.json", timeout=5)
    assert jwks.status_code == 200
    assert len(jwks.json()["keys"]) == 2
    listing = subprocess.run(
        [BIN, "keys", "list"],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert sorted(row[1] for row in rows) == ["active", "next"]
    created = datetime.fromisoformat(rows[0][3])
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=2)  # the real clock is wired
    if not is_postgres():
        secret_file = tmp_path / "served" / "auth.db.key-encryption-secret"
        assert secret_file.stat().st_mode & 0o077 == 0
        assert "generated a development key-encryption secret" in log.read_text()
        assert secret_file.read_text().strip() not in log.read_text()
