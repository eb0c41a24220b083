"""The revocation mirror: answers from memory only while it is known to be current."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from auth_service.store import MemoryStore, RedisStore, Store
from auth_service.store.mirror import CHANNEL, MirroredStore
from tests.support.backends import REDIS_URL, is_postgres

HOUR = timedelta(hours=1)
PREFIXES = ("revoked:", "user:")  # what the service tells it (services.store_keys)


class CountingStore:
    """The real store, counting reads (to prove which reads the mirror answers)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        self.reads += 1
        return await self.inner.get_many(keys)


async def _until(predicate: Callable[[], bool], seconds: float = 1.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
async def second_store(store: Store, redis_prefix: str) -> AsyncIterator[Store]:
    """Another instance's connection to the same store."""
    if not is_postgres():
        yield store
        return
    other = RedisStore.from_url(REDIS_URL, prefix=redis_prefix)
    yield other
    await other.close()


@contextlib.asynccontextmanager
async def following(
    mirror: MirroredStore, *, wait: bool = True, **options: Any
) -> AsyncIterator[MirroredStore]:
    task = asyncio.create_task(mirror.follow(**options))
    try:
        if wait:
            assert await _until(lambda: mirror.current, 2.0)
        yield mirror
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_current_mirror_answers_without_reading_the_store(store: Store) -> None:
    counting = CountingStore(store)
    mirror = MirroredStore(counting, prefixes=PREFIXES)  # type: ignore[arg-type]
    assert await mirror.get_many(["revoked:jti:a"]) == [None]
    assert counting.reads == 1  # not current yet: the store answers
    async with following(mirror):
        await mirror.put("revoked:jti:a", "1", HOUR)
        assert await mirror.get_many(["revoked:jti:a", "revoked:jti:b"]) == ["1", None]
        assert counting.reads == 1
        assert await mirror.get_many(["login:x"]) == [None]  # not mirrored: the store answers
        assert counting.reads == 2


async def test_a_revocation_reaches_another_instance_within_a_second(
    store: Store, second_store: Store
) -> None:
    first, second = (
        MirroredStore(store, prefixes=PREFIXES),
        MirroredStore(second_store, prefixes=PREFIXES),
    )
    async with following(first), following(second):
        await first.put("revoked:sid:s1", "1", HOUR)
        assert await _until(lambda: second._lookup(["revoked:sid:s1"]) == ["1"], 1.0)
        assert await second.get_many(["revoked:sid:s1"]) == ["1"]
        await first.delete("revoked:sid:s1")
        assert await _until(lambda: second._lookup(["revoked:sid:s1"]) == [None], 1.0)


async def test_resync_picks_up_what_was_written_before_subscribing(store: Store) -> None:
    await store.put("user:u1:disabled", "1", HOUR)  # written by an instance without a mirror
    mirror = MirroredStore(store, prefixes=PREFIXES)
    async with following(mirror):
        assert mirror._lookup(["user:u1:disabled"]) == ["1"]


async def test_entries_expire_locally_with_their_store_ttl(store: Store) -> None:
    mirror = MirroredStore(store, prefixes=PREFIXES)
    async with following(mirror):
        await mirror.put("revoked:jti:short", "1", timedelta(milliseconds=100))
        assert await mirror.get_many(["revoked:jti:short"]) == ["1"]
        await asyncio.sleep(0.2)
        assert await mirror.get_many(["revoked:jti:short"]) == [None]


async def test_a_malformed_event_is_ignored(store: Store) -> None:
    mirror = MirroredStore(store, prefixes=PREFIXES)
    async with following(mirror):
        for junk in (
            "not json",
            json.dumps({"v": "1"}),
            json.dumps({"k": "login:x", "v": "1", "ms": 1000}),
        ):
            await store.publish(CHANNEL, junk)
        await store.publish(CHANNEL, json.dumps({"k": "revoked:jti:z", "v": "1", "ms": 60_000}))
        assert await _until(lambda: mirror._lookup(["revoked:jti:z"]) == ["1"])
        assert mirror.current
        assert "login:x" not in mirror._entries


async def test_a_lost_subscription_falls_back_to_the_store() -> None:
    inner = MemoryStore()
    mirror = MirroredStore(inner, prefixes=PREFIXES)
    async with following(mirror):
        await inner.close()  # the connection is gone: the subscription ends
        assert await _until(lambda: not mirror.current)
        with pytest.raises(Exception, match="closed"):
            await mirror.get_many(["revoked:jti:a"])  # asks the store, never the stale mirror


async def test_an_outage_is_answered_from_memory_for_the_grace_only() -> None:
    """A store that cannot answer (a Redis restart, a failover): a mirror that was current
    answers from memory for ``outage_grace`` seconds, then fails closed again."""
    now = [100.0]
    inner = MemoryStore()
    await inner.put("revoked:jti:a", "1", HOUR)
    mirror = MirroredStore(inner, prefixes=PREFIXES, outage_grace=5.0, time_source=lambda: now[0])
    async with following(mirror):
        await inner.close()
        assert await _until(lambda: not mirror.current)
        assert await mirror.get_many(["revoked:jti:a", "revoked:jti:b"]) == ["1", None]
        with pytest.raises(Exception, match="closed"):
            await mirror.get_many(["revoked:jti:a", "login:from:x"])  # not a mirrored key
        now[0] += 5.1
        with pytest.raises(Exception, match="closed"):
            await mirror.get_many(["revoked:jti:a"])
    never = MirroredStore(MemoryStore(), prefixes=PREFIXES)  # no grace, never current
    await never.inner.close()
    with pytest.raises(Exception, match="closed"):
        await never.get_many(["revoked:jti:a"])


# -- the store is an index that can come back empty (DESIGN.md "Revocation is durable") ---

MARKER = "revoked:epoch"


class Completer:
    """A ``before_resync`` callback: fails while ``failing``, else writes the index."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0
        self.failing = False

    async def __call__(self) -> None:
        self.calls += 1
        if self.failing:
            raise RuntimeError("database down")
        if (await self.store.get_many([MARKER]))[0] is None:
            await self.store.put("revoked:sid:from-db", "1", HOUR)
            await self.store.put(MARKER, "e1", HOUR)


async def test_the_index_is_completed_before_the_scan_or_the_mirror_stays_stale(
    store: Store,
) -> None:
    complete = Completer(store)
    complete.failing = True
    mirror = MirroredStore(store, prefixes=PREFIXES)
    async with following(mirror, wait=False, before_resync=complete, marker_key=MARKER):
        assert await _until(lambda: complete.calls >= 1)
        await asyncio.sleep(0.1)
        assert not mirror.current  # an empty store is not served from memory
        complete.failing = False
        assert await _until(lambda: mirror.current, 3.0)
        assert mirror._lookup(["revoked:sid:from-db", MARKER]) == ["1", "e1"]


async def test_a_scan_without_the_marker_never_makes_the_mirror_current(store: Store) -> None:
    mirror = MirroredStore(store, prefixes=PREFIXES)
    async with following(mirror, wait=False, marker_key=MARKER):
        await asyncio.sleep(0.5)  # several resubscriptions, each scanning an empty index
        assert not mirror.current
        await store.put(MARKER, "e1", HOUR)
        assert await _until(lambda: mirror.current, 3.0)


async def test_a_flush_under_a_current_mirror_resyncs_through_the_callback(
    store: Store,
) -> None:
    """A flush sends no event: the watch sees the marker gone, and the mirror rebuilds."""
    complete = Completer(store)
    mirror = MirroredStore(store, prefixes=PREFIXES)
    options: dict[str, Any] = {"before_resync": complete, "marker_key": MARKER}
    async with following(mirror, watch_seconds=0.1, **options):
        assert complete.calls == 1
        await store.delete(MARKER)  # behind the mirror's back, as FLUSHDB
        await store.delete("revoked:sid:from-db")
        assert await _until(lambda: not mirror.current, 1.0)
        assert await _until(lambda: mirror.current, 3.0)
        assert complete.calls == 2
        assert await store.get_many(["revoked:sid:from-db", MARKER]) == ["1", "e1"]
