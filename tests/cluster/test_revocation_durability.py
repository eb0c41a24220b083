"""Revocation is durable (DESIGN.md) across real processes: two `auth-service serve` instances
on one PostgreSQL database and one Redis prefix. A logout made on A survives a flush of the
store (no instance restarted, no event sent) on both instances, and a restart of B after it:
the store is rebuilt from the database, never left an empty index."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import redis.asyncio

from tests.support.backends import REDIS_URL
from tests.support.cluster import POLL, Cluster, bearer, boot, login, register, validate

PASSWORD = "Durable revocation 0001 xq"
WITHIN = 1.0  # seconds: a flushed revocation is enforced again by every instance


async def _flush(prefix: str) -> None:
    """FLUSHDB for this cluster's keys (other tests share the Redis)."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        assert keys, "the cluster wrote nothing to the store?"
        await client.delete(*keys)
    finally:
        await client.aclose()


async def _stored(prefix: str, *keys: str) -> list[str | None]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return [
            None if v is None else str(v) for v in await client.mget([prefix + k for k in keys])
        ]
    finally:
        await client.aclose()


async def _verdict(http: httpx.AsyncClient, base: str, token: str, auth: tuple[str, str]) -> str:
    """ "valid", or the refusal reason (a 503 while rebuilding is reported as such)."""
    response = await validate(http, base, token, auth)
    if response.status_code != 200:
        return f"http {response.status_code}"
    body = response.json()
    return "valid" if body["valid"] else str(body["error"])


async def test_a_logout_survives_a_store_flush_and_a_restart(
    cluster: Cluster, http: httpx.AsyncClient, redis_prefix: str
) -> None:
    app = await boot(cluster, http, count=2)
    a, b = app.instances
    await register(http, a.base, "dora@example.com", PASSWORD)
    token = await login(http, a.base, "dora@example.com", PASSWORD)
    for instance in (a, b):
        assert await _verdict(http, instance.base, token, app.client_auth) == "valid"
    logout = await http.post(f"{a.base}/auth/logout", headers=bearer(token))
    assert logout.status_code == 204, logout.text

    await _flush(redis_prefix)
    flushed_at = time.monotonic()
    seen: dict[str, list[str]] = {a.name: [], b.name: []}
    while time.monotonic() - flushed_at < WITHIN:
        for instance in (a, b):
            seen[instance.name].append(await _verdict(http, instance.base, token, app.client_auth))
        await asyncio.sleep(POLL)
    for name, verdicts in seen.items():
        assert verdicts and "valid" not in verdicts, (name, verdicts, cluster.logs())
        assert verdicts[-1] in {"session_revoked", "token_revoked"}, (name, verdicts)
    me = await http.get(f"{a.base}/auth/me", headers=bearer(token))
    assert me.status_code == 401, me.text

    # Nobody restarted, yet the store is the index again: rebuilt from the database.
    sid = jwt.decode(token, options={"verify_signature": False})["sid"]
    deadline = time.monotonic() + 5
    while (await _stored(redis_prefix, f"revoked:sid:{sid}", "revoked:epoch"))[1] is None:
        assert time.monotonic() < deadline, f"the index was not rebuilt\n{cluster.logs()}"
        await asyncio.sleep(POLL)
    assert (await _stored(redis_prefix, f"revoked:sid:{sid}"))[0] == "1"

    # Restart B: the new process starts on the shared store and still refuses the token.
    b.process.terminate()
    b.process.wait(timeout=10)
    (b_again,) = cluster.start(1)
    verdict = await _verdict(http, b_again.base, token, app.client_auth)
    assert verdict in {"session_revoked", "token_revoked"}, (verdict, cluster.logs())
    me = await http.get(f"{b_again.base}/auth/me", headers=bearer(token))
    assert me.status_code == 401, me.text
