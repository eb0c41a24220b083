"""A Redis pub/sub subscription for ``RedisStore.subscribe``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from types import TracebackType
from typing import Self

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from auth_service.store.base import StoreUnavailableError
from auth_service.store.redis_calls import text, unavailable

_POLL_SECONDS = 1.0
"""How long one pub/sub read waits before re-checking the store and the connection's
health (redis-py sends its health-check PING before a read once it is due)."""


class RedisSubscription:
    """One pub/sub connection subscribed to one channel for the ``async with`` block."""

    def __init__(
        self,
        client: Redis,
        full_channel: str,
        *,
        confirm_seconds: float,
        closed: Callable[[], bool],
    ) -> None:
        self._client = client
        self._confirm_seconds = confirm_seconds
        self._closed = closed
        self._channel = full_channel
        self._pubsub: PubSub | None = None
        self._lost = False

    async def __aenter__(self) -> Self:
        pubsub = self._client.pubsub()
        self._pubsub = pubsub
        try:
            with unavailable("subscribe"):
                await pubsub.subscribe(self._channel)
                await self._await_confirmation(pubsub)
        except BaseException:
            await self._cleanup(unsubscribe=False)
            raise
        return self

    async def _await_confirmation(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._confirm_seconds
        while (remaining := deadline - loop.time()) > 0:
            message = await pubsub.get_message(timeout=remaining)
            if (
                message is not None
                and message["type"] == "subscribe"
                and text(message["channel"]) == self._channel
            ):
                return
        raise StoreUnavailableError(f"redis did not confirm the subscription to {self._channel}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._cleanup(unsubscribe=not self._lost)

    async def _cleanup(self, *, unsubscribe: bool) -> None:
        """Unsubscribe (if the connection is believed alive) and close; never raises."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is None:
            return
        try:
            if unsubscribe:
                with suppress(Exception):
                    await pubsub.unsubscribe(self._channel)
        finally:
            # Bound to a typed name: redis-py leaves ``PubSub.aclose`` unannotated.
            close_pubsub: Callable[[], Awaitable[None]] = pubsub.aclose
            with suppress(Exception):
                await close_pubsub()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        while True:
            pubsub = self._pubsub
            if pubsub is None:
                raise StoreUnavailableError("the subscription has ended")
            if self._lost:
                raise StoreUnavailableError(f"the subscription to {self._channel} was lost")
            if self._closed():
                self._lost = True
                raise StoreUnavailableError("the redis store is closed")
            try:
                with unavailable("subscription read"):
                    message = await pubsub.get_message(timeout=_POLL_SECONDS)
            except StoreUnavailableError:
                self._lost = True
                raise
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                return text(message["data"])
            if kind in ("subscribe", "unsubscribe"):
                # redis-py reconnected and resubscribed by itself: whatever was published
                # in between is lost, so the caller must resubscribe and resynchronise.
                self._lost = True
                raise StoreUnavailableError(
                    f"the connection for {self._channel} was interrupted; messages may be lost"
                )
