"""The revocation stream's feed, on the store of the backend under test: a real mirror with its
journal, following the store; what a new stream is sent first, live events, resuming, and
every bound (streams per client, queue length, deleted clients, loss, shutdown)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.db.models import KeyStatus
from auth_service.errors import ServiceUnavailableError
from auth_service.services import store_keys as keys
from auth_service.services.keyring import KeyRing, KeySnapshot, VerificationKey
from auth_service.services.revocation_feed import (
    Event,
    RevocationFeed,
    TooManyStreamsError,
    event_for,
)
from auth_service.store.base import Store, StoreUnavailableError
from auth_service.store.mirror import CHANNEL, Announcement, Journal, MirroredStore

HOUR = timedelta(hours=1)
JOURNAL = Journal(keys.EVENTS_PREFIX, timedelta(minutes=15), keys.INDEX_MARKER_KEY)


@pytest.fixture
async def mirror(store: Store) -> AsyncIterator[MirroredStore]:
    mirrored = MirroredStore(store, prefixes=keys.MIRRORED_PREFIXES, journal=JOURNAL)
    await store.put(keys.INDEX_MARKER_KEY, "epochA", HOUR)
    follower = asyncio.create_task(mirrored.follow(marker_key=keys.INDEX_MARKER_KEY))
    for _ in range(200):
        if mirrored.current:
            break
        await asyncio.sleep(0.01)
    assert mirrored.current
    yield mirrored
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)


@pytest.fixture
def feed(mirror: MirroredStore) -> RevocationFeed:
    return RevocationFeed(mirror, KeyRing(), per_client=2, queue_size=5)


def _types(events: list[Event]) -> list[str]:
    return [event.type for event in events]


async def test_a_new_stream_gets_the_keys_a_snapshot_of_every_live_entry_then_synced(
    feed: RevocationFeed, mirror: MirroredStore
) -> None:
    await mirror.put(keys.sid_key("s1"), "1", HOUR)
    await mirror.put(keys.revoked_after_key("u1"), "1700000000", HOUR)
    await asyncio.sleep(0.1)
    first = await feed.opening(feed.open("reader"), None)
    assert _types(first)[:2] == ["keys", "resync"] and first[-1].type == "synced"
    snapshot = {(e.type, tuple(sorted(e.data.items()))) for e in first[2:-1]}
    until = {e.type: e.data["until"] for e in first[2:-1]}
    assert snapshot == {
        ("sid", (("sid", "s1"), ("until", until["sid"]))),
        ("user", (("revoked_after", 1700000000), ("until", until["user"]), ("user", "u1"))),
    }
    assert abs(until["sid"] - (time.time() + 3600)) < 5


async def test_a_revocation_written_anywhere_reaches_every_open_stream_with_an_id(
    feed: RevocationFeed, mirror: MirroredStore
) -> None:
    one, two = feed.open("client-a"), feed.open("client-b")
    await mirror.put(keys.jti_key("j1"), "1", HOUR)
    for stream in (one, two):
        event = await stream.next(2.0)
        assert event is not None and event.type == "jti" and event.data["jti"] == "j1"
        assert event.id is not None and event.id.startswith("epochA.")
        assert event.frame().startswith(f"id: {event.id}\nevent: jti\ndata: ".encode())


async def test_a_resume_replays_what_came_after_its_id_and_no_resync(
    feed: RevocationFeed, mirror: MirroredStore
) -> None:
    stream = feed.open("client-a")
    await mirror.put(keys.sid_key("before"), "1", HOUR)
    seen = await stream.next(2.0)
    assert seen is not None and seen.id is not None
    feed.close(stream)
    await mirror.put(keys.sid_key("missed"), "1", HOUR)
    replay = await feed.opening(feed.open("client-a"), seen.id)
    assert "resync" not in _types(replay)
    assert _types(replay)[0] == "keys" and replay[-1].type == "synced"
    sids = [e.data["sid"] for e in replay if e.type == "sid"]
    assert sids[-1] == "missed"  # the overlap may replay "before" too: harmless
    assert all(e.id is not None for e in replay if e.type == "sid")


@pytest.mark.parametrize(
    "last_id",
    [
        "otherEpoch.{now}-1abcd",  # the index was rebuilt since: the journal may lack events
        "epochA.{old}-1abcd",  # older than the journal holds
        "not-an-id",
        "epochA.12x-1",
    ],
    ids=["other-epoch", "too-old", "garbage", "bad-millis"],
)
async def test_a_resume_that_cannot_be_honoured_gets_resync_and_the_snapshot(
    feed: RevocationFeed, mirror: MirroredStore, last_id: str
) -> None:
    await mirror.put(keys.sid_key("held"), "1", HOUR)
    await asyncio.sleep(0.05)
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - int(JOURNAL.ttl.total_seconds() * 1000) - 60_000
    first = await feed.opening(feed.open("reader"), last_id.format(now=now_ms, old=old_ms))
    assert _types(first)[:2] == ["keys", "resync"]
    assert {"type": "sid", "sid": "held"} in [
        {"type": e.type, "sid": e.data.get("sid")} for e in first
    ]


async def test_a_client_holds_at_most_its_streams_and_a_closed_one_frees_its_place(
    feed: RevocationFeed,
) -> None:
    first, _second = feed.open("client-a"), feed.open("client-a")
    with pytest.raises(TooManyStreamsError):
        feed.open("client-a")
    feed.open("client-b")  # another client is not counted against it
    feed.close(first)
    feed.open("client-a")


async def test_a_reader_too_far_behind_is_closed_instead_of_buffering(
    feed: RevocationFeed, mirror: MirroredStore
) -> None:
    stream = feed.open("client-a")
    for n in range(6):  # queue_size is 5
        await mirror.put(keys.jti_key(f"j{n}"), "1", HOUR)
    await asyncio.sleep(0.2)
    assert stream.closed
    assert await stream.next(2.0) is None


async def test_deleting_a_client_ends_its_streams_and_only_its(
    feed: RevocationFeed, mirror: MirroredStore
) -> None:
    deleted, other = feed.open("client-a"), feed.open("client-b")
    await mirror.put(keys.client_deleted_key("client-a"), "1", HOUR)
    event = await other.next(2.0)
    assert event is not None and event.type == "client" and event.data["client_id"] == "client-a"
    assert deleted.closed and await deleted.next(2.0) is None


async def test_losing_the_subscription_or_shutting_down_ends_every_stream(
    feed: RevocationFeed,
) -> None:
    one = feed.open("client-a")
    feed.lost()
    assert one.closed
    two = feed.open("client-a")
    feed.shut_down()
    assert two.closed
    with pytest.raises(ServiceUnavailableError):
        feed.open("client-a")


async def test_a_stream_waits_for_its_heartbeat_interval_then_times_out(
    feed: RevocationFeed,
) -> None:
    stream = feed.open("client-a")
    with pytest.raises(TimeoutError):
        await stream.next(0.05)


async def test_a_revoked_key_is_announced_once_as_a_keys_event(
    mirror: MirroredStore, key_pool: list[rsa.RSAPrivateKey]
) -> None:
    ring = KeyRing()
    feed = RevocationFeed(mirror, ring, per_client=2)
    key = VerificationKey("kid-1", KeyStatus.ACTIVE, key_pool[0].public_key(), None)
    ring.replace(KeySnapshot(keys={"kid-1": key}))  # the first load: nothing to announce
    stream = feed.open("client-a")
    revoked = KeySnapshot(keys={"kid-1": replace(key, status=KeyStatus.REVOKED)})
    ring.replace(revoked)
    ring.replace(revoked)  # a reload that changed nothing
    event = await stream.next(2.0)
    assert event == Event("keys", {"revoked": ["kid-1"]})
    with pytest.raises(TimeoutError):
        await stream.next(0.05)
    assert feed.keys_event() == Event("keys", {"revoked": ["kid-1"]})


def test_store_keys_translate_into_events_and_other_keys_into_none() -> None:
    now = 1_000.0
    cases = {
        keys.jti_key("j"): ("1", Event("jti", {"jti": "j", "until": 1010})),
        keys.sid_key("s"): ("1", Event("sid", {"sid": "s", "until": 1010})),
        keys.revoked_after_key("u"): (
            "999",
            Event("user", {"user": "u", "revoked_after": 999, "until": 1010}),
        ),
        keys.disabled_key("u"): ("1", Event("user_disabled", {"user": "u", "until": 1010})),
        keys.client_deleted_key("svc_x"): (
            "1",
            Event("client", {"client_id": "svc_x", "until": 1010}),
        ),
    }
    for key, (value, expected) in cases.items():
        assert event_for(Announcement(key, value, 10_000, None), now) == expected
    assert event_for(Announcement(keys.disabled_key("u"), None, 0, None), now) == Event(
        "user_enabled", {"user": "u"}
    )
    assert event_for(Announcement(keys.jti_key("j"), None, 0, None), now) is None
    assert event_for(Announcement(keys.INDEX_MARKER_KEY, "e", 10_000, None), now) is None
    assert event_for(Announcement(keys.revoked_after_key("u"), "x", 10_000, None), now) is None
    # A replayed event's ``until`` counts from when it was written, not from now:
    written = Announcement(keys.sid_key("s"), "1", 10_000, "e.500000-1abcd")
    replayed = event_for(written, now, replayed=True)
    assert replayed is not None and replayed.data["until"] == 510
    # ...and a live one's from now, whatever its id says (an id cannot make it expire early):
    live = event_for(written, now)
    assert live is not None and live.data["until"] == 1010


async def test_a_herd_of_resumes_reads_the_journal_once_but_never_a_read_begun_before_it(
    feed: RevocationFeed, mirror: MirroredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = feed.open("client-a")
    await mirror.put(keys.sid_key("s0"), "1", HOUR)
    seen = await stream.next(2.0)
    assert seen is not None and seen.id is not None
    reads = 0
    release = asyncio.Event()
    real = mirror.read_journal

    async def counted() -> list[tuple[int, Announcement]]:
        nonlocal reads
        reads += 1
        await release.wait()
        return await real()

    monkeypatch.setattr(mirror, "read_journal", counted)
    herd = [feed.open(f"client-{n}") for n in range(20)]
    waiting = [asyncio.create_task(feed.opening(s, seen.id)) for s in herd]
    await asyncio.sleep(0.05)
    assert reads == 1
    late = feed.open("late")  # attached after the shared read began: it must read again
    late_opening = asyncio.create_task(feed.opening(late, seen.id))
    await asyncio.sleep(0.05)
    assert reads == 2
    await mirror.put(keys.sid_key("s1"), "1", HOUR)
    release.set()
    openings = await asyncio.gather(*waiting, late_opening)
    for first in openings:
        assert "resync" not in _types(first)
    late_sids = [e.data["sid"] for e in openings[-1] if e.type == "sid"]
    assert "s1" in late_sids or (await late.next(2.0)) is not None


async def test_an_id_from_the_channel_that_is_not_ours_cannot_break_the_stream_s_framing(
    feed: RevocationFeed, mirror: MirroredStore, store: Store
) -> None:
    """Anyone who can publish on the store's channel once could end a frame with a newline
    in the id and append a ``resync`` of their own, which wipes every follower's state."""
    stream = feed.open("client-a")
    forged = "x.1-1\nevent: resync\ndata: {}\n\nid: y.2-2"
    message = json.dumps({"k": keys.jti_key("harmless"), "v": "1", "ms": 60_000, "id": forged})
    await store.publish(CHANNEL, message)
    event = await stream.next(2.0)
    assert event is not None and event.type == "jti" and event.id is None
    frame = event.frame().decode()
    assert frame.count("\n\n") == 1 and "resync" not in frame
    assert event.data["until"] > time.time() + 50  # not the forged id's 1970 time
    assert Announcement.parse(message) == Announcement(keys.jti_key("harmless"), "1", 60_000, None)


class _JournalDown:
    """A store whose journal writes fail (the rest works)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.published: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def put(self, key: str, value: str, ttl: timedelta) -> None:
        if key.startswith(keys.EVENTS_PREFIX):
            raise StoreUnavailableError("journal write refused")
        await self.inner.put(key, value, ttl)

    async def publish(self, channel: str, message: str) -> None:
        self.published.append(message)
        await self.inner.publish(channel, message)


async def test_a_journal_write_that_fails_still_reaches_the_live_followers(store: Store) -> None:
    failing = _JournalDown(store)
    mirrored = MirroredStore(failing, prefixes=keys.MIRRORED_PREFIXES, journal=JOURNAL)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailableError):
        await mirrored.put(keys.sid_key("s1"), "1", HOUR)  # the caller still sees the failure
    assert len(failing.published) == 1 and "s1" in failing.published[0]


async def test_a_client_reconnecting_in_a_loop_is_refused_before_any_snapshot_is_built(
    feed: RevocationFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("auth_service.services.revocation_feed.CONNECTS_PER_MINUTE", 3)
    for _ in range(3):
        feed.close(await feed.admit("client-a"))
    with pytest.raises(TooManyStreamsError) as refused:
        await feed.admit("client-a")
    assert refused.value.retry_after_seconds >= 1
    feed.close(await feed.admit("client-b"))  # counted per client


async def test_a_stream_closed_for_falling_behind_frees_its_place_at_once(
    feed: RevocationFeed, mirror: MirroredStore
) -> None:
    behind, _other = feed.open("client-a"), feed.open("client-a")
    for n in range(6):  # queue_size is 5: the first stream overflows (its writer may be stuck)
        behind.push(Event("jti", {"jti": f"j{n}"}))
    assert behind.closed
    feed.open("client-a")
