"""What a new user meets first, on a served process: the CLI's key commands on the embedded
default need no exported secret and reach the running server within a second; a port in use
is one line and exit 2; the README's first example runs as written."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.backends import is_postgres
from tests.support.processes import BIN

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Operator niceties pass 0001 xq"


def _cli(environment: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], env=environment, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _token(base: str) -> str:
    email = "nicety@example.com"
    httpx.post(f"{base}/auth/register", json={"email": email, "password": PASSWORD})
    login = httpx.post(f"{base}/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


def test_a_cli_key_revocation_reaches_the_running_server_within_a_second(
    served: tuple[str, Path], environment: dict[str, str], tmp_path: Path
) -> None:
    base, log = served
    token = _token(base)
    created = _cli(environment, tmp_path, "clients", "create", "niceties")
    assert created.returncode == 0, created.stderr
    client_id = re.search(r"client_id=(\S+)", created.stdout)
    secret = re.search(r"client_secret=(\S+)", created.stdout)
    assert client_id and secret
    auth = (client_id.group(1), secret.group(1))
    assert httpx.post(f"{base}/validate", json={"token": token}, auth=auth).json()["valid"]
    listed = _cli(environment, tmp_path, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    active = next(line.split()[0] for line in listed.stdout.splitlines() if " active " in line)
    if not is_postgres():
        assert "AUTH_KEY_ENCRYPTION_SECRET" not in environment  # read from serve's own file
    revoked = _cli(environment, tmp_path, "keys", "revoke", active)
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 1.0
    verdict: dict[str, object] = {}
    while time.monotonic() < deadline:
        verdict = httpx.post(f"{base}/validate", json={"token": token}, auth=auth).json()
        if verdict == {"valid": False, "error": "key_revoked"}:
            break
        time.sleep(0.05)
    assert verdict == {"valid": False, "error": "key_revoked"}, log.read_text()


def test_a_port_in_use_is_one_line_and_exit_2(environment: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        answer = _cli(environment, tmp_path, "serve", "--port", str(port))
    assert answer.returncode == 2, answer.stderr
    lines = [line for line in answer.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"auth-service: error: cannot listen on 127.0.0.1:{port}: "
    ), answer.stderr
    assert "in use" in lines[0]
    # Refused before anything else: not even the development secret was generated.
    assert not list(tmp_path.rglob("*.key-encryption-secret"))


def test_the_readme_first_example_runs_as_written(
    served: tuple[str, Path], environment: dict[str, str], tmp_path: Path
) -> None:
    base, _log = served
    readme = (ROOT / "README.md").read_text()
    start = readme.index("A first look at the main path")
    block = readme[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    script = block.replace("localhost:8000", base.removeprefix("http://")).replace(
        ".venv/bin/auth-service", str(BIN)
    )
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script + '\necho "CLIENT=$CLIENT_ID"'],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert '"valid":true' in ran.stdout.replace(" ", ""), ran.stdout
    assert re.search(r"CLIENT=\S+", ran.stdout)
