"""Staleness counted from the last byte received (not from when the loss is detected), the
``synced`` event's ``heartbeat``, and the SSE parser's size caps against a hostile server."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.revocations import RevocationFollower, SseParser, heartbeat_of
from auth_service_client.verifier import LocalVerifier
from test_jwks_cache import _KEYS, AUDIENCE, ISSUER, token
from test_revocations_follower import Clock, FakeStream, frame, until


@pytest.fixture
async def fake() -> FakeStream:
    return FakeStream()


async def test_a_frozen_server_makes_verify_fall_back_within_heartbeat_plus_stale_after(
    fake: FakeStream,
) -> None:
    mono = Clock(0.0)
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    verifier = LocalVerifier(
        "http://auth", issuer=ISSUER, audience=AUDIENCE, http=http, revocations=True,
        client_id="svc", client_secret="s", stale_after=5, heartbeat=15, monotonic=mono,
    )  # fmt: skip
    good = token(_KEYS[0], "k0")
    async with verifier:
        follower = verifier.follower
        assert follower is not None
        stream = await fake.next_connection(1)
        await stream.put(frame("synced"))
        await until(lambda: follower.current)
        assert (await verifier.verify(good)).valid
        mono.now = 14.0  # silent, but within one heartbeat: healthy
        assert follower.stale_for() == 0 and follower.current
        await stream.put(b": hb\n\n")  # a heartbeat comment renews it
        await asyncio.sleep(0.05)
        mono.now = 28.0
        assert follower.stale_for() == 0
        mono.now = 29.0 + 4.5  # frozen since 14: stale since 29 (14 + heartbeat)
        assert not follower.current
        assert follower.stale_for() == pytest.approx(4.5)
        assert (await verifier.verify(good)).valid  # not yet stale_after
        mono.now = 29.0 + 5.5  # 20.5 s after the last byte: past heartbeat + stale_after
        assert follower.stale_for() == pytest.approx(5.5)
        with pytest.raises(ServiceUnavailableError):
            await verifier.verify(good)
    await http.aclose()


async def test_once_lost_staleness_counts_from_the_last_good_moment(fake: FakeStream) -> None:
    mono = Clock(0.0)
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    follower = RevocationFollower(
        http, "http://auth/events/revocations", "svc", "s", heartbeat=15, monotonic=mono,
        backoff=(5.0, 5.0),
    )  # fmt: skip
    follower.start()
    stream = await fake.next_connection(1)
    await stream.put(frame("synced"))
    await until(lambda: follower.current)
    mono.now = 40.0  # silent since 0: good until 15
    await stream.put(None)  # the connection ends (detected at 40)
    await until(lambda: not follower._synced)
    mono.now = 50.0
    assert follower.stale_for() == pytest.approx(35.0)
    await follower.aclose()
    await http.aclose()


async def test_the_synced_heartbeat_is_adopted(fake: FakeStream) -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    follower = RevocationFollower(
        http, "http://auth/events/revocations", "svc", "s", heartbeat=0.1, backoff=(0.01, 0.05)
    )
    follower.start()
    stream = await fake.next_connection(1)
    await stream.put(frame("synced", {"heartbeat": 0.5}))
    await until(lambda: follower.current)
    assert follower.heartbeat == 0.5
    for _ in range(4):  # the server's 0.3 s beats are within its 0.5 s: no reconnect loop
        await asyncio.sleep(0.3)
        await stream.put(b": hb\n\n")
    assert len(fake.connections) == 1 and follower.current
    await follower.aclose()
    await http.aclose()


@pytest.mark.parametrize("value", [0, -1, 301, "15", True, None, float("nan"), [15]])
def test_an_implausible_synced_heartbeat_is_ignored(value: object) -> None:
    assert heartbeat_of({"heartbeat": value}) is None


def test_a_plausible_synced_heartbeat_is_read() -> None:
    assert heartbeat_of({"heartbeat": 15}) == 15.0
    assert heartbeat_of({"heartbeat": 300}) == 300.0
    assert heartbeat_of({}) is None


def test_data_lines_without_a_blank_line_are_capped() -> None:
    parser = SseParser()
    line = b"data: " + b"x" * 1000 + b"\n"
    for _ in range(104):  # 1.04 MB in one never-dispatched event: still taken
        parser.feed(line * 10)
    assert parser.held() <= 1 << 20
    with pytest.raises(ValueError, match="event"):
        parser.feed(line * 10)  # past 1 MiB


def test_a_line_without_an_end_is_capped() -> None:
    parser = SseParser()
    for _ in range(16):
        parser.feed(b"x" * 65_536)
    with pytest.raises(ValueError, match="line"):
        parser.feed(b"x" * 65_536)  # past 1 MiB unparsed


def test_many_small_events_are_fine() -> None:
    parser = SseParser()
    events = [e for _ in range(3000) for e in parser.feed(b"data: " + b"y" * 500 + b"\n\n")]
    assert len(events) == 3000


async def test_a_hostile_server_is_dropped_and_reconnected(fake: FakeStream) -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    follower = RevocationFollower(
        http, "http://auth/events/revocations", "svc", "s", backoff=(0.01, 0.05)
    )
    follower.start()
    stream = await fake.next_connection(1)
    await stream.put(frame("synced"))
    await until(lambda: follower.current)
    chunk = (b"data: " + b"z" * 1000 + b"\n") * 64
    for _ in range(40):  # 2.5 MB of data lines, never a blank line
        await stream.put(chunk)
    await fake.next_connection(2)  # dropped as a protocol error, then a reconnect
    assert not follower._synced
    await follower.aclose()
    await http.aclose()
