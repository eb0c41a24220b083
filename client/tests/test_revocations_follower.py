"""The revocation follower against an in-test SSE service speaking the wire format
(docs/design/client-library.md): parsing, each event, resync/synced, reconnects with
Last-Event-ID, the heartbeat timeout, TTLs; and the verifier's stale fallback."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest

from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.revocations import RevocationFollower, SseEvent, SseParser
from auth_service_client.types import Verdict
from auth_service_client.verifier import LocalVerifier
from test_jwks_cache import _KEYS, AUDIENCE, ISSUER, FakeJwks, public_jwk, token


def frame(event: str, data: dict[str, Any] | None = None, id: str | None = None) -> bytes:
    head = f"id: {id}\n" if id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data or {})}\n\n".encode()


class _Queued(httpx.AsyncByteStream):
    def __init__(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._queue = queue

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk


class FakeStream:
    """``/events/revocations``: each connection is a queue the test writes frames into;
    ``/.well-known/jwks.json`` is a ``FakeJwks``."""

    def __init__(self) -> None:
        self.connections: list[asyncio.Queue[bytes | None]] = []
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.jwks = FakeJwks([public_jwk(_KEYS[0], "k0"), public_jwk(_KEYS[1], "k1")])
        self.connected = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("jwks.json"):
            return await self.jwks(request)
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "invalid_client"})
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.connections.append(queue)
        self.connected.set()
        return httpx.Response(
            200, headers={"Content-Type": "text/event-stream"}, stream=_Queued(queue)
        )

    async def next_connection(self, count: int) -> asyncio.Queue[bytes | None]:
        async with asyncio.timeout(5):
            while len(self.connections) < count:
                self.connected.clear()
                await self.connected.wait()
        return self.connections[count - 1]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def until(condition: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
async def fake() -> FakeStream:
    return FakeStream()


def follower_for(
    fake: FakeStream, clock: Clock, **options: Any
) -> tuple[RevocationFollower, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    options.setdefault("backoff", (0.01, 0.05))
    follower = RevocationFollower(
        http, "http://auth/events/revocations", "svc id", "s:e+c/r", clock=clock, **options
    )
    return follower, http


def test_sse_frames_are_parsed_across_any_chunking() -> None:
    stream = (
        b': hb\r\n\r\nid: 1.5-1\r\nevent: jti\r\ndata: {"jti": "a"}\r\n\r\n'
        b"event: x\ndata: one\ndata:two\n\n: comment\n\nid: 7\nevent: sid\ndata: {}\r\r"
        + "event: é\ndata: ü\n\n".encode()
    )
    expected = [
        SseEvent("jti", '{"jti": "a"}', "1.5-1"),
        SseEvent("x", "one\ntwo", "1.5-1"),
        SseEvent("sid", "{}", "7"),
        SseEvent("é", "ü", "7"),
    ]
    for size in (1, 2, 3, 7, len(stream)):
        parser = SseParser()
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i : i + size])]
        assert events == expected, size


async def test_events_apply_with_the_service_precedence_and_expire(fake: FakeStream) -> None:
    clock = Clock()
    follower, http = follower_for(fake, clock)
    changes: list[int] = []
    unregister = follower.on_revocation(lambda: changes.append(1))
    async with http:
        follower.start()
        stream = await fake.next_connection(1)
        request = fake.requests[0]
        user_pass = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        assert [unquote_plus(p) for p in user_pass.split(":")] == ["svc id", "s:e+c/r"]
        assert "last-event-id" not in request.headers
        for item in (frame("keys", {"revoked": []}), frame("resync")):
            stream.put_nowait(item)
        await asyncio.sleep(0.02)
        assert not follower.current and follower.stale_for() == float("inf")
        t = clock.now
        user = {"sub": "u1", "jti": "j1", "sid": "s1", "iat": t - 100}
        service = {"sub": "c1", "client_id": "c1", "jti": "j2", "iat": t}
        for item in (
            frame("jti", {"jti": "j1", "until": t + 60}, "e-1"),
            frame("sid", {"sid": "s1", "until": t + 120}, "e-2"),
            frame("user", {"user": "u1", "revoked_after": t - 50, "until": t + 180}, "e-3"),
            frame("user_disabled", {"user": "u1", "until": t + 240}, "e-4"),
            frame("client", {"client_id": "c1", "until": t + 60}, "e-5"),
            frame("synced"),
        ):
            stream.put_nowait(item)
        await until(lambda: follower.current)
        assert follower.last_event_id == "e-5" and len(changes) == 5
        reason = follower.revoked_reason
        assert reason(user) == "user_disabled"
        stream.put_nowait(frame("user_enabled", {"user": "u1"}, "e-6"))
        await until(lambda: reason(user) != "user_disabled")
        assert reason(user) == "token_revoked"  # the jti
        assert reason({**user, "jti": "j9"}) == "session_revoked"
        assert reason({**user, "jti": "j9", "sid": "s9"}) == "token_revoked"  # revoke-after
        assert reason({**user, "jti": "j9", "sid": "s9", "iat": t - 49}) is None
        assert reason(service) == "token_revoked"  # its deleted client
        assert reason({**service, "client_id": "c2", "sub": "c2"}) is None
        clock.now = t + 61  # the jti and client entries lapse; the session's does not
        assert reason(user) == "session_revoked" and reason(service) is None
        clock.now = t + 121
        assert reason(user) == "token_revoked"  # revoke-after still holds
        clock.now = t + 181
        assert reason(user) is None
        unregister()
        stream.put_nowait(frame("resync"))  # drops every entry held
        stream.put_nowait(frame("jti", {"jti": "j3", "until": clock.now + 9}, "e-7"))
        await until(lambda: follower.revoked_reason({"sub": "u", "sid": "s", "jti": "j3"}))
        assert len(follower.state) == 1 and len(changes) == 6
        await follower.aclose()


async def test_a_lost_stream_reconnects_with_last_event_id_and_is_not_current(
    fake: FakeStream,
) -> None:
    follower, http = follower_for(fake, Clock())
    async with http:
        follower.start()
        first = await fake.next_connection(1)
        first.put_nowait(frame("jti", {"jti": "j1", "until": 2e6}, "1.100-1"))
        first.put_nowait(frame("synced"))
        await until(lambda: follower.current)
        first.put_nowait(None)  # the service goes away
        await until(lambda: not follower.current)
        assert follower.stale_for() < 1
        second = await fake.next_connection(2)
        assert fake.requests[1].headers["last-event-id"] == "1.100-1"
        assert follower.revoked_reason({"sub": "u", "sid": "s", "jti": "j1"}) == "token_revoked"
        second.put_nowait(frame("synced"))  # a resume keeps the state held
        await until(lambda: follower.current)
        assert follower.revoked_reason({"sub": "u", "sid": "s", "jti": "j1"}) == "token_revoked"
        await follower.aclose()


async def test_no_byte_for_twice_the_heartbeat_reconnects(fake: FakeStream) -> None:
    follower, http = follower_for(fake, Clock(), heartbeat=0.1)
    async with http:
        follower.start()
        first = await fake.next_connection(1)
        first.put_nowait(frame("synced"))
        for _ in range(10):  # heartbeats (within the 0.1 s) keep it up...
            await asyncio.sleep(0.05)
            first.put_nowait(b": hb\n\n")
        assert len(fake.connections) == 1 and follower.current
        await fake.next_connection(2)  # ...silence does not (0.2 s)
        assert not follower.current
        await follower.aclose()


async def test_a_refused_stream_is_retried_and_never_current(fake: FakeStream) -> None:
    fake.status = 401
    follower, http = follower_for(fake, Clock())
    async with http:
        follower.start()
        await until(lambda: len(fake.requests) >= 3)
        assert not follower.current
        await follower.aclose()


def verifier_for(fake: FakeStream, **options: Any) -> tuple[LocalVerifier, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    verifier = LocalVerifier(
        "http://auth", issuer=ISSUER, audience=AUDIENCE, revocations=True, client_id="c",
        client_secret="s", http=http, backoff=(0.01, 0.05), **options,
    )  # fmt: skip
    return verifier, http


async def test_stale_state_falls_back_and_without_a_fallback_is_unavailable(
    fake: FakeStream,
) -> None:
    asked: list[str] = []

    async def remote(tok: str) -> Verdict:
        asked.append(tok)
        return Verdict(False, None, "token_revoked")

    good = token(_KEYS[0], "k0")
    verifier, http = verifier_for(fake, fallback=remote, stale_after=0.3)
    bare, _ = verifier_for(fake, stale_after=0.3)
    bare._http = http  # share the transport
    async with http, verifier, bare:
        assert await verifier.verify(good) == Verdict(False, None, "token_revoked")  # not synced
        with pytest.raises(ServiceUnavailableError):
            await bare.verify(good)
        for stream in (await fake.next_connection(1), await fake.next_connection(2)):
            stream.put_nowait(frame("synced"))
        await until(lambda: verifier.follower is not None and verifier.follower.current)
        await until(lambda: bare.follower is not None and bare.follower.current)
        assert (await verifier.verify(good)).valid and (await bare.verify(good)).valid
        assert len(asked) == 1
        fake.status = 503
        for stream in fake.connections:
            stream.put_nowait(None)
        await asyncio.sleep(0.05)
        assert (await verifier.verify(good)).valid  # lost, but not for stale_after yet
        await asyncio.sleep(0.3)
        assert not (await verifier.verify(good)).valid and len(asked) == 2
        with pytest.raises(ServiceUnavailableError):
            await bare.verify(good)
        invalid = token(_KEYS[0], "k0", iss="https://evil")
        assert (await verifier.verify(invalid)).error == "invalid_issuer"  # decided locally
        assert len(asked) == 2


async def test_a_revoked_kid_is_key_revoked_and_refetches_the_jwks(fake: FakeStream) -> None:
    verifier, http = verifier_for(fake)
    under_k1 = token(_KEYS[1], "k1")
    async with http, verifier:
        stream = await fake.next_connection(1)
        stream.put_nowait(frame("keys", {"revoked": []}))
        stream.put_nowait(frame("synced"))
        await until(lambda: verifier.follower is not None and verifier.follower.current)
        verdict = await verifier.verify(under_k1)
        assert verdict.valid and verdict.claims is not None
        fetches = len(fake.jwks.requests)
        seen: list[int] = []
        verifier.on_revocation(lambda: seen.append(1))
        stream.put_nowait(frame("keys", {"revoked": ["k1"]}))
        await until(lambda: bool(seen))
        assert (await verifier.verify(under_k1)).error == "key_revoked"  # cached token too
        assert verifier.revoked_reason(verdict.claims) == "key_revoked"
        stream.put_nowait(frame("keys", {"revoked": ["k1", "k2"]}))
        await asyncio.sleep(0.3)
        assert len(fake.jwks.requests) == fetches  # the first fetch was under a second ago
        await until(lambda: len(fake.jwks.requests) == fetches + 1, timeout=2)
        await asyncio.sleep(0.1)
        assert len(fake.jwks.requests) == fetches + 1  # one refetch for both key events
