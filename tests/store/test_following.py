"""follow_channel: one resubscribe loop for every follower (the mirror, key and client
events). Attack (found in this change): a cancellation that lands inside a client library's
timeout comes out as a TimeoutError; the loop took it for a lost store, subscribed again and
hung the instance's shutdown for 5 s on every stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from types import SimpleNamespace

from auth_service.store import MemoryStore
from auth_service.store.base import StoreUnavailableError
from auth_service.store.following import follow_channel


class SwallowingStore(MemoryStore):
    """A subscribe whose confirmation wait turns a cancellation into a store error, as
    ``asyncio.timeout`` does when the two coincide."""

    def __init__(self) -> None:
        super().__init__(prefix="t:")
        self.attempts = 0
        self.entered = asyncio.Event()

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:  # type: ignore[override]
        self.attempts += 1
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise StoreUnavailableError("confirmation timed out") from None
        yield _never()  # pragma: no cover


async def _never() -> AsyncIterator[str]:  # pragma: no cover
    await asyncio.sleep(3600)
    yield ""


async def _serve(messages: AsyncIterator[str], healthy: Callable[[], None]) -> None:
    healthy()
    async for _ in messages:  # pragma: no cover
        pass


async def test_a_cancellation_turned_into_a_store_error_still_stops_the_loop() -> None:
    store = SwallowingStore()
    task = asyncio.create_task(
        follow_channel(store, "c", _serve, name="test", retry_seconds=(0.01,))
    )
    await asyncio.wait_for(store.entered.wait(), 1)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1)
    assert done == {task}, "the follower did not stop"
    assert task.cancelled()
    assert store.attempts == 1


async def test_a_lost_store_is_subscribed_again() -> None:
    store = MemoryStore(prefix="t:")
    seen: list[str] = []
    rounds = 0

    async def serve(messages: AsyncIterator[str], healthy: Callable[[], None]) -> None:
        nonlocal rounds
        rounds += 1
        healthy()
        async for message in messages:
            seen.append(message)
            if rounds == 1:
                raise StoreUnavailableError("dropped")

    task = asyncio.create_task(
        follow_channel(store, "c", serve, name="test", retry_seconds=(0.01,))
    )
    try:
        for expected in (1, 2):
            while rounds < expected:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.02)
            await store.publish("c", f"m{expected}")
            while len(seen) < expected:
                await asyncio.sleep(0.01)
        assert seen == ["m1", "m2"] and rounds == 2
    finally:
        task.cancel()


class AbsorbingRedis:
    """A Redis client whose MGET absorbs a cancellation thrown into it (as redis-py can,
    when the cancel lands in its read) and answers as if nothing happened."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.connection_pool = SimpleNamespace(connection_kwargs={})

    def register_script(self, _source: str) -> object:
        return object()

    async def mget(self, keys: list[str]) -> list[None]:
        self.entered.set()
        with suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return [None for _ in keys]


async def test_a_cancellation_redis_absorbed_still_cancels_the_caller() -> None:
    """The follower that hung each stop for 5 s: its resync read absorbed the cancel."""
    from auth_service.store import RedisStore

    client = AbsorbingRedis()
    store = RedisStore(client, prefix="t:")  # type: ignore[arg-type]
    task = asyncio.create_task(store.get_many(["k"]))
    await asyncio.wait_for(client.entered.wait(), 1)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1)
    assert done == {task} and task.cancelled()
