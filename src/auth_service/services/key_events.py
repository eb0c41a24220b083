"""Keep the in-memory key cache current: reload on every "keys changed" event, after every
(re)subscription (events may have been missed while disconnected), and on a slow timer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from auth_service.db.models import SigningKey
from auth_service.services.keyring import KeyRing
from auth_service.services.keys import KeyContext, load_snapshot
from auth_service.services.store_keys import KEYS_CHANNEL
from auth_service.store.following import follow_channel

log = logging.getLogger(__name__)

_RETRY_SECONDS = (0.5, 1, 2, 5)


async def reload_keyring(ctx: KeyContext, keyring: KeyRing) -> bool:
    """Swap in a fresh snapshot; on failure keep serving the old one. True on success."""
    try:
        async with keyring.reload_lock:
            keyring.replace(await load_snapshot(ctx))
    except Exception:
        log.exception("reloading the signing keys failed; keeping the cached keys")
        return False
    return True


async def _timer(ctx: KeyContext, keyring: KeyRing, every: timedelta) -> None:
    while True:
        await asyncio.sleep(every.total_seconds())
        await reload_keyring(ctx, keyring)  # never raises: a failure keeps the old keys


async def _listen(ctx: KeyContext, keyring: KeyRing, ready: asyncio.Event) -> None:
    async def serve(messages: AsyncIterator[str], healthy: Callable[[], None]) -> None:
        await reload_keyring(ctx, keyring)  # resync: events may have been missed
        ready.set()
        healthy()
        async for _message in messages:
            await reload_keyring(ctx, keyring)

    await follow_channel(
        ctx.store, KEYS_CHANNEL, serve, name="the key events follower", retry_seconds=_RETRY_SECONDS
    )


async def _statuses(ctx: KeyContext) -> set[tuple[str, str]]:
    async with ctx.sessionmaker() as session:
        rows = await session.execute(select(SigningKey.kid, SigningKey.status))
        return {(str(kid), str(status)) for kid, status in rows.all()}


async def watch_key_statuses(ctx: KeyContext, keyring: KeyRing, *, every: timedelta) -> None:
    """Reload the cache whenever the keys' (kid, status) pairs change. Runs until cancelled."""
    seen: set[tuple[str, str]] | None = None
    while True:
        try:
            now = await _statuses(ctx)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not look at the signing keys (%s)", type(exc).__name__)
        else:
            if seen is not None and now != seen:
                await reload_keyring(ctx, keyring)
            seen = now
        await asyncio.sleep(every.total_seconds())


async def follow_key_events(
    ctx: KeyContext, keyring: KeyRing, *, refresh_every: timedelta, ready: asyncio.Event
) -> None:
    """Run until cancelled."""
    async with asyncio.TaskGroup() as group:
        group.create_task(_listen(ctx, keyring, ready))
        group.create_task(_timer(ctx, keyring, refresh_every))
