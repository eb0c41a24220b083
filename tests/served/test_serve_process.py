"""The real thing: `auth-service migrate` and `serve` as processes, the real clock, HTTP on a port."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.backends import is_postgres
from tests.support.processes import BIN


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


def test_a_served_process_sends_no_server_header_and_every_security_header(
    served: tuple[str, Path],
) -> None:
    """uvicorn's own ``server`` header is off; the middleware's headers reach the wire."""
    base, _ = served
    for path in ("/health/live", "/nowhere", "/.well-known/jwks.json"):
        response = httpx.get(f"{base}{path}", timeout=5)
        assert "server" not in response.headers, path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
