"""Data for scripts/bench.py's scenarios, made through the service's own HTTP API and CLI.

Users are registered over HTTP at the configured (production) argon2 cost and each is logged
in several times: every login gives one distinct access token (for /validate) and one unused
refresh token (the starting pool of /auth/refresh). The service client comes from
`auth-service clients create`.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from benchkit import BIN

USERS = 100
LOGINS_PER_USER = 10
CONCURRENCY = 4  # the service's argon2 pool has os.cpu_count() threads; 4 keeps it busy


@dataclass
class Fixtures:
    credentials: list[tuple[str, str]] = field(default_factory=list)
    access_tokens: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    basic: str = ""


def create_client(env: dict[str, str], name: str = "bench") -> str:
    """A new service client; returns its HTTP Basic ``Authorization`` header value."""
    output = subprocess.run(
        [str(BIN / "auth-service"), "clients", "create", name],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    pair = f"{values['client_id']}:{values['client_secret']}".encode()
    return "Basic " + base64.b64encode(pair).decode()


async def _each(count: int, work: Callable[[int], Awaitable[None]]) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _make(base: str, fixtures: Fixtures, users: int, logins_per_user: int) -> None:
    run = secrets.token_hex(4)
    fixtures.credentials = [
        (f"bench-{run}-{i:03d}@example.com", f"Bench {run} pass-{i:03d} {secrets.token_hex(6)}")
        for i in range(users)
    ]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def register(i: int) -> None:
            email, password = fixtures.credentials[i]
            reply = await client.post("/auth/register", json={"email": email, "password": password})
            if reply.status_code != 201:
                raise RuntimeError(f"register {email}: {reply.status_code} {reply.text}")

        async def login(i: int) -> None:
            email, password = fixtures.credentials[i % users]
            reply = await client.post("/auth/login", json={"email": email, "password": password})
            if reply.status_code != 200:
                raise RuntimeError(f"login {email}: {reply.status_code} {reply.text}")
            pair = reply.json()
            fixtures.access_tokens.append(pair["access_token"])
            fixtures.refresh_tokens.append(pair["refresh_token"])

        await _each(users, register)
        await _each(users * logins_per_user, login)


def make_fixtures(
    base: str, env: dict[str, str], users: int = USERS, logins_per_user: int = LOGINS_PER_USER
) -> Fixtures:
    fixtures = Fixtures(basic=create_client(env))
    asyncio.run(_make(base, fixtures, users, logins_per_user))
    if len(set(fixtures.access_tokens)) != users * logins_per_user:
        raise RuntimeError("the logins did not give distinct access tokens")
    return fixtures


def check_validation(base: str, basic: str, tokens: list[str]) -> None:
    """One /validate and one full /validate/batch answer valid: the scenarios measure success.

    The call also puts the client's verified secret in the service's cache, so the first wrk
    connections do not all run argon2 for it at once.
    """
    headers = {"Authorization": basic}
    one = httpx.post(f"{base}/validate", json={"token": tokens[0]}, headers=headers, timeout=30)
    if one.status_code != 200 or one.json().get("valid") is not True:
        raise RuntimeError(f"/validate: {one.status_code} {one.text[:300]}")
    many = httpx.post(
        f"{base}/validate/batch", json={"tokens": tokens[:100]}, headers=headers, timeout=30
    )
    if many.status_code != 200 or not all(r["valid"] for r in many.json()["results"]):
        raise RuntimeError(f"/validate/batch: {many.status_code} {many.text[:300]}")


def server_etag(base: str) -> str:
    return httpx.get(f"{base}/.well-known/jwks.json", timeout=10).headers["etag"]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path
