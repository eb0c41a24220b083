"""The ``Store`` contract, run against ``MemoryStore`` and ``RedisStore``.

Environment:
- ``AUTH_TEST_REDIS_URL``: the Redis to test against (default redis://127.0.0.1:6379/0).
- ``AUTH_TEST_BACKEND=embedded``: only the memory store runs (redis tests are skipped).
- ``CI=true``: an unreachable Redis fails the redis tests instead of skipping them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from auth_service.store import (
    MemoryStore,
    RateLimitResult,
    RedisStore,
    Store,
    StoreUnavailableError,
    create_store,
)

SHORT = timedelta(milliseconds=150)
AFTER_SHORT = 0.3  # seconds: comfortably past SHORT
LONG = timedelta(seconds=10)
RECEIVE_TIMEOUT = 3.0


def _redis_url() -> str:
    return os.environ.get("AUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _skip_redis_if_embedded() -> None:
    if os.environ.get("AUTH_TEST_BACKEND") == "embedded":
        pytest.skip("AUTH_TEST_BACKEND=embedded: only the memory store is tested")


def _unique_prefix() -> str:
    return f"authtest:{uuid4().hex}:"


async def _redis_client_or_skip(**kwargs: Any) -> Redis:
    """A client for the test Redis; skip (fail when CI=true) if it is unreachable."""
    url = _redis_url()
    client = Redis.from_url(url, decode_responses=True, socket_timeout=2.0, **kwargs)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        message = f"Redis not reachable at {url}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the redis store must be tested)")
        pytest.skip(message)
    return client


async def _delete_prefixed_keys(prefixes: list[str]) -> None:
    if not prefixes:
        return
    async with Redis.from_url(_redis_url(), decode_responses=True) as client:
        for prefix in prefixes:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await client.delete(*keys)


MakeStore = Callable[[str], Store]
"""Makes a store with the given prefix; all stores made share one backend."""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    stores: list[Store] = []
    prefixes: list[str] = []
    client: Redis | None = None
    if request.param == "redis":
        _skip_redis_if_embedded()
        client = await _redis_client_or_skip()

    def make(prefix: str) -> Store:
        prefixes.append(prefix)
        stores.append(MemoryStore(prefix) if client is None else RedisStore(client, prefix))
        return stores[-1]

    try:
        yield make
    finally:
        for store in stores:
            await store.close()
        if client is not None:
            await client.aclose()
            await _delete_prefixed_keys(prefixes)


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return make_store(_unique_prefix())


async def _not_refused(store: Store) -> list[str]:
    """Operations that did not raise StoreUnavailableError (any other error propagates)."""
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "put": lambda: store.put("k", "v", LONG),
        "put_if_absent": lambda: store.put_if_absent("k", "v", LONG),
        "get_many": lambda: store.get_many(["k"]),
        "delete": lambda: store.delete("k"),
        "hit": lambda: store.hit("c", 1, LONG),
        "reset_counter": lambda: store.reset_counter("c"),
        "acquire_lock": lambda: store.acquire_lock("l", LONG),
        "release_lock": lambda: store.release_lock("l", "t"),
        "extend_lock": lambda: store.extend_lock("l", "t", LONG),
        "publish": lambda: store.publish("ch", "m"),
        "ping": store.ping,
        "subscribe": lambda: store.subscribe("ch").__aenter__(),  # entered, never left
    }
    names = []
    for name, call in operations.items():
        try:
            await call()
        except StoreUnavailableError:
            continue
        names.append(name)
    return names


async def _receive(messages: AsyncIterator[str]) -> str:
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        return await anext(messages)


async def test_get_many_returns_values_in_order_with_none_for_missing(store: Store) -> None:
    await store.put("a", "1", LONG)
    await store.put("c", "old", LONG)
    await store.put("c", "3", LONG)
    assert await store.get_many(["c", "missing", "a", "a"]) == ["3", None, "1", "1"]
    assert await store.get_many([]) == []


async def test_values_expire_after_their_ttl(store: Store) -> None:
    await store.put("short", "x", SHORT)
    await store.put("long", "y", LONG)
    await asyncio.sleep(AFTER_SHORT)
    assert await store.get_many(["short", "long"]) == [None, "y"]


async def test_put_if_absent_sets_only_once(store: Store) -> None:
    assert await store.put_if_absent("k", "first", SHORT) is True
    assert await store.put_if_absent("k", "second", SHORT) is False
    assert await store.get_many(["k"]) == ["first"]
    await asyncio.sleep(AFTER_SHORT)
    assert await store.put_if_absent("k", "third", LONG) is True
    assert await store.get_many(["k"]) == ["third"]


async def test_delete_reports_whether_the_key_existed(store: Store) -> None:
    await store.put("k", "v", LONG)
    assert await store.delete("k") is True
    assert await store.get_many(["k"]) == [None]
    assert await store.delete("k") is False
    assert await store.delete("never-set") is False


async def test_ttl_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="positive"):
        await store.put("k", "v", timedelta(0))
    with pytest.raises(ValueError, match="positive"):
        await store.hit("c", 3, -LONG)


async def test_hit_counts_and_refuses_over_the_limit(store: Store) -> None:
    first = await store.hit("login:alice", 2, LONG)
    second = await store.hit("login:alice", 2, LONG)
    third = await store.hit("login:alice", 2, LONG)
    assert first == RateLimitResult(allowed=True, count=1, retry_after_seconds=0)
    assert second == RateLimitResult(allowed=True, count=2, retry_after_seconds=0)
    assert third.allowed is False
    assert third.count == 3
    assert 1 <= third.retry_after_seconds <= 10
    assert (await store.hit("login:bob", 2, LONG)).count == 1


async def test_hit_window_resets_after_it_expires(store: Store) -> None:
    await store.hit("c", 1, SHORT)
    refused = await store.hit("c", 1, SHORT)
    assert refused == RateLimitResult(allowed=False, count=2, retry_after_seconds=1)
    await asyncio.sleep(AFTER_SHORT)
    assert await store.hit("c", 1, SHORT) == RateLimitResult(True, 1, 0)


async def test_window_starts_at_the_first_hit(store: Store) -> None:
    window = timedelta(milliseconds=500)
    await store.hit("c", 10, window)
    await asyncio.sleep(0.15)
    assert (await store.hit("c", 10, window)).count == 2  # does not move the window's end
    await asyncio.sleep(0.42)
    assert (await store.hit("c", 10, window)).count == 1


async def test_reset_counter_forgets_the_count(store: Store) -> None:
    for _ in range(3):
        await store.hit("c", 2, LONG)
    await store.reset_counter("c")
    await store.reset_counter("never-hit")
    assert await store.hit("c", 2, LONG) == RateLimitResult(True, 1, 0)


async def test_exactly_one_of_many_concurrent_acquirers_gets_the_lock(store: Store) -> None:
    tokens = await asyncio.gather(*(store.acquire_lock("rotate", LONG) for _ in range(20)))
    holders = [t for t in tokens if t is not None]
    assert len(holders) == 1
    assert len(holders[0]) >= 16


async def test_only_the_holders_token_releases_or_extends_the_lock(store: Store) -> None:
    token = await store.acquire_lock("l", LONG)
    assert token is not None
    assert await store.release_lock("l", "not-the-token") is False
    assert await store.extend_lock("l", "not-the-token", LONG) is False
    assert await store.acquire_lock("l", LONG) is None
    assert await store.release_lock("l", token) is True
    assert await store.release_lock("l", token) is False
    second = await store.acquire_lock("l", LONG)
    assert second is not None
    assert second != token


async def test_lock_expires_after_its_ttl(store: Store) -> None:
    token = await store.acquire_lock("l", SHORT)
    assert token is not None
    await asyncio.sleep(AFTER_SHORT)
    assert await store.extend_lock("l", token, LONG) is False
    assert await store.release_lock("l", token) is False
    assert await store.acquire_lock("l", LONG) is not None


async def test_extend_keeps_the_lock_alive(store: Store) -> None:
    token = await store.acquire_lock("l", timedelta(milliseconds=300))
    assert token is not None
    await asyncio.sleep(0.1)
    assert await store.extend_lock("l", token, timedelta(seconds=1)) is True
    await asyncio.sleep(0.3)  # past the original TTL
    assert await store.acquire_lock("l", LONG) is None
    assert await store.release_lock("l", token) is True


async def test_locks_and_keys_do_not_collide(store: Store) -> None:
    await store.put("l", "plain value", LONG)
    assert await store.acquire_lock("l", LONG) is not None
    assert await store.get_many(["l"]) == ["plain value"]


async def test_publish_reaches_every_current_subscriber(store: Store) -> None:
    await store.publish("events", "before anyone listened")
    async with store.subscribe("events") as one, store.subscribe("events") as two:
        await store.publish("other-channel", "not for us")
        await store.publish("events", "first")
        await store.publish("events", "second")
        assert [await _receive(one), await _receive(one)] == ["first", "second"]
        assert [await _receive(two), await _receive(two)] == ["first", "second"]
    await store.publish("events", "after everyone left")


async def test_close_ends_active_subscriptions(store: Store) -> None:
    async with store.subscribe("events") as messages:
        waiter = asyncio.create_task(_receive(messages))
        await asyncio.sleep(0.05)
        await store.close()
        with pytest.raises(StoreUnavailableError):
            await waiter


async def test_prefixes_isolate_stores_sharing_a_backend(make_store: MakeStore) -> None:
    first, second = make_store(_unique_prefix()), make_store(_unique_prefix())
    await first.put("k", "first", LONG)
    await first.hit("c", 5, LONG)
    assert await first.acquire_lock("l", LONG) is not None
    assert await second.get_many(["k"]) == [None]
    assert (await second.hit("c", 5, LONG)).count == 1
    assert await second.acquire_lock("l", LONG) is not None
    assert await second.delete("k") is False
    assert await first.get_many(["k"]) == ["first"]
    async with second.subscribe("events") as messages:
        await first.publish("events", "from first")
        await second.publish("events", "from second")
        assert await _receive(messages) == "from second"


async def test_every_operation_raises_store_unavailable_after_close(store: Store) -> None:
    await store.ping()
    await store.close()
    await store.close()  # idempotent
    assert await _not_refused(store) == []


async def test_create_store_picks_the_implementation() -> None:
    assert isinstance(create_store(None, "p:"), MemoryStore)
    redis_store = create_store("redis://127.0.0.1:1/0", "p:")
    assert isinstance(redis_store, RedisStore)
    await redis_store.close()


# Memory only.


async def test_memory_expiry_follows_the_time_source() -> None:
    now = [1000.0]
    store = MemoryStore(time_source=lambda: now[0])
    await store.put("k", "v", timedelta(seconds=5))
    await store.hit("c", 1, timedelta(seconds=5))
    now[0] += 4.9
    assert await store.get_many(["k"]) == ["v"]
    assert (await store.hit("c", 1, timedelta(seconds=5))).retry_after_seconds == 1
    now[0] += 0.1
    assert await store.get_many(["k"]) == [None]
    assert (await store.hit("c", 1, timedelta(seconds=5))).count == 1


async def test_memory_sweep_keeps_expired_entries_from_piling_up() -> None:
    now = [1000.0]
    store = MemoryStore(time_source=lambda: now[0])
    for i in range(5000):
        await store.put(f"k{i}", "v", timedelta(seconds=1))
        now[0] += 0.01  # each entry expires 100 writes later
    assert len(store._entries) <= 1024 + 100


async def test_memory_slow_subscriber_is_dropped_and_leaving_unregisters() -> None:
    store = MemoryStore()
    async with store.subscribe("ch") as messages:
        for i in range(10_001):
            await store.publish("ch", str(i))
        with pytest.raises(StoreUnavailableError):
            await _receive(messages)
    async with store.subscribe("ch"):
        assert store._channels
    assert not store._channels
    await store.close()


# Redis only.


async def test_unreachable_redis_raises_store_unavailable_never_a_redis_error() -> None:
    _skip_redis_if_embedded()
    store = RedisStore.from_url("redis://127.0.0.1:1/0", _unique_prefix(), socket_timeout=0.2)
    try:
        assert await _not_refused(store) == []
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_leaving_subscribe_unsubscribes() -> None:
    _skip_redis_if_embedded()
    client = await _redis_client_or_skip()
    channel = f"{(prefix := _unique_prefix())}ch"
    store = RedisStore(client, prefix)
    try:
        async with store.subscribe("ch"):
            assert await client.pubsub_numsub(channel) == [(channel, 1)]
        assert await client.pubsub_numsub(channel) == [(channel, 0)]
    finally:
        await store.close()


@pytest.mark.redis
@pytest.mark.parametrize("retries", [0, 3])
async def test_redis_lost_subscription_connection_raises_store_unavailable(retries: int) -> None:
    """With retries redis-py reconnects and resubscribes silently; that still raises."""
    _skip_redis_if_embedded()
    name = f"authtest-{uuid4().hex}"
    client = await _redis_client_or_skip(client_name=name, retry=Retry(NoBackoff(), retries))
    admin = await _redis_client_or_skip()
    store = RedisStore(client, _unique_prefix())
    try:
        async with store.subscribe("ch") as messages:
            connections = [c for c in await admin.client_list() if c["name"] == name]
            pubsub_ids = [c["id"] for c in connections if int(c["sub"]) > 0]
            assert len(pubsub_ids) == 1
            await admin.client_kill_filter(_id=pubsub_ids[0])
            with pytest.raises(StoreUnavailableError):
                await _receive(messages)
            with pytest.raises(StoreUnavailableError):
                await _receive(messages)
    finally:
        await store.close()
        await admin.aclose()
