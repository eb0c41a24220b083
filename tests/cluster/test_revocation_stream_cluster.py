"""The revocation stream across real processes: two ``auth-service serve`` instances on one
PostgreSQL database and one Redis. A logout on A reaches a stream held on B within a second;
a stream that dropped resumes on A from B's last event id with what it missed, no resync."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt

from tests.support.cluster import Cluster, bearer, boot, login, register
from tests.support.sse import Frame, frames, until_synced

PASSWORD = "Streamed revocation 0001 xq"
WITHIN = 1.0


async def _logout(http: httpx.AsyncClient, base: str, token: str) -> str:
    """Log out on ``base``; the session id the logout revoked."""
    response = await http.post(f"{base}/auth/logout", headers=bearer(token))
    assert response.status_code == 204, response.text
    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


async def _frame_with(stream: object, kind: str, key: str, value: str) -> Frame:
    async for frame in stream:  # type: ignore[attr-defined]
        if frame.type == kind and frame.data.get(key) == value:
            return frame  # type: ignore[no-any-return]
    raise AssertionError(f"the stream ended before a {kind} {value}")


async def test_a_logout_on_a_reaches_a_stream_on_b_within_a_second(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    app = await boot(cluster, http, count=2)
    a, b = app.instances
    await register(http, a.base, "erin@example.com", PASSWORD)
    delays = []
    async with http.stream(
        "GET", f"{b.base}/events/revocations", auth=app.client_auth, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = frames(response)
        first = await until_synced(stream)
        assert [f.type for f in first][:2] == ["keys", "resync"]
        for _ in range(5):
            token = await login(http, a.base, "erin@example.com", PASSWORD)
            started = time.monotonic()
            sid = await _logout(http, a.base, token)
            frame = await asyncio.wait_for(_frame_with(stream, "sid", "sid", sid), WITHIN)
            delays.append(time.monotonic() - started)
            assert frame.id is not None
    assert max(delays) < WITHIN, delays


async def test_a_dropped_stream_resumes_on_the_other_instance_with_what_it_missed(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    app = await boot(cluster, http, count=2)
    a, b = app.instances
    await register(http, a.base, "finn@example.com", PASSWORD)
    async with http.stream(
        "GET", f"{b.base}/events/revocations", auth=app.client_auth, timeout=30
    ) as response:
        stream = frames(response)
        await until_synced(stream)
        sid = await _logout(http, a.base, await login(http, a.base, "finn@example.com", PASSWORD))
        last = await asyncio.wait_for(_frame_with(stream, "sid", "sid", sid), WITHIN)
    missed = [
        await _logout(http, a.base, await login(http, a.base, "finn@example.com", PASSWORD))
        for _ in range(3)
    ]
    assert last.id is not None
    async with http.stream(
        "GET",
        f"{a.base}/events/revocations",
        auth=app.client_auth,
        headers={"Last-Event-ID": last.id},
        timeout=30,
    ) as response:
        replay = await until_synced(frames(response))
    assert "resync" not in [f.type for f in replay]
    replayed = [f.data["sid"] for f in replay if f.type == "sid"]
    assert set(missed) <= set(replayed), (missed, replayed)
