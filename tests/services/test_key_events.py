"""Every instance's key cache follows the database: on events, and on a slow timer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import update

from auth_service.container import Container, start, stop
from auth_service.db.models import SigningKey
from auth_service.services.keys import KEYS_CHANNEL
from auth_service.settings import Settings
from auth_service.store import RedisStore, Store
from tests.support.backends import REDIS_URL, is_postgres


async def _wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@pytest.fixture
async def pair(
    make_container: Callable[..., Container], store: Store, redis_prefix: str, settings: Settings
) -> AsyncIterator[tuple[Container, Container]]:
    """Two running instances on one database and one store (own connections on Redis)."""
    async with AsyncExitStack() as stack:
        second_store = store
        if is_postgres():
            second_store = RedisStore.from_url(REDIS_URL, prefix=redis_prefix)
            stack.push_async_callback(second_store.close)
        first = make_container()
        second = make_container(store=second_store)
        for container in (first, second):
            await start(container)
            stack.push_async_callback(stop, container)
        yield first, second


async def _revoke_next(container: Container) -> str:
    snapshot = container.keyring.snapshot
    next_kid = next(kid for kid, key in snapshot.keys.items() if key.status == "next")
    async with container.db.writer() as session, session.begin():
        await session.execute(
            update(SigningKey).where(SigningKey.kid == next_kid).values(status="revoked")
        )
    return next_kid


async def test_a_keys_changed_event_reloads_every_instance_within_a_second(
    pair: tuple[Container, Container],
) -> None:
    first, second = pair
    kid = await _revoke_next(first)
    assert second.keyring.lookup(kid) is not None and second.keyring.lookup(kid).status == "next"  # type: ignore[union-attr]
    await first.store.publish(KEYS_CHANNEL, "changed")
    assert await _wait_until(lambda: second.keyring.lookup(kid).status == "revoked", 1.0)  # type: ignore[union-attr]
    assert kid.encode() not in second.keyring.snapshot.jwks.body


async def test_the_slow_timer_reloads_without_an_event(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    container = make_container(make_settings(key_cache_refresh_seconds=1))
    await start(container)
    try:
        kid = await _revoke_next(container)
        assert await _wait_until(
            lambda: container.keyring.lookup(kid).status == "revoked",
            2.5,  # type: ignore[union-attr]
        )
    finally:
        await stop(container)


async def test_a_failed_reload_keeps_the_cached_keys(
    pair: tuple[Container, Container],
) -> None:
    first, _second = pair
    before = first.keyring.snapshot
    await first.engine.dispose()
    async with first.db.writer() as session, session.begin():
        await session.execute(update(SigningKey).values(private_key_encrypted=b"\x01garbage"))
    await first.store.publish(KEYS_CHANNEL, "changed")
    await asyncio.sleep(0.3)
    assert first.keyring.snapshot is before  # still signing with what it had
