"""The shared fast state of every instance: revocations, rate limits, locks, events.

Two implementations satisfy this protocol: ``RedisStore`` (many instances) and
``MemoryStore`` (the embedded default, one instance). One contract test module,
``tests/store/test_store_contract.py``, runs against both.

Keys are plain strings; each implementation prepends its own ``prefix`` so that
several deployments (or test runs) can share one Redis. Values are strings.
TTLs are ``timedelta`` and are always honoured: nothing is stored forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol


class StoreUnavailableError(Exception):
    """The store could not be reached or answered with an error (wraps redis errors)."""


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The outcome of one hit on a fixed-window counter."""

    allowed: bool
    count: int
    retry_after_seconds: int  # 0 when allowed; otherwise whole seconds until the window ends (>= 1)


class Store(Protocol):
    async def put(self, key: str, value: str, ttl: timedelta) -> None:
        """Set ``key`` to ``value``, expiring after ``ttl`` (> 0), replacing any value."""
        ...

    async def put_if_absent(self, key: str, value: str, ttl: timedelta) -> bool:
        """Set ``key`` only if it does not exist (SET NX PX). True if this call set it."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """Values of ``keys`` in order (None where missing or expired), in ONE round trip."""
        ...

    async def scan(self, prefix: str) -> list[tuple[str, str, timedelta]]:
        """Every live entry whose key starts with ``prefix``: (key, value, remaining TTL).

        For resynchronising an in-memory mirror; not for hot paths (Redis: SCAN + pipeline).
        """
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        ...

    async def hit(self, key: str, limit: int, window: timedelta) -> RateLimitResult:
        """Count one event in the fixed window that starts at the key's first hit.

        Atomic across instances. ``allowed`` is ``count <= limit``.
        """
        ...

    async def reset_counter(self, key: str) -> None:
        """Forget a rate-limit counter (e.g. after a successful login)."""
        ...

    async def acquire_lock(self, name: str, ttl: timedelta) -> str | None:
        """Take the lock ``name`` for ``ttl`` (SET NX PX with a random token).

        Returns the token (needed to release or extend) or None if it is held.
        """
        ...

    async def release_lock(self, name: str, token: str) -> bool:
        """Release only if ``token`` still holds the lock (compare-and-delete)."""
        ...

    async def extend_lock(self, name: str, token: str, ttl: timedelta) -> bool:
        """Reset the TTL only if ``token`` still holds the lock; False if it was lost."""
        ...

    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every current subscriber of ``channel`` on every instance."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """``async with store.subscribe(ch) as messages: async for m in messages: ...``

        The subscription is active when ``__aenter__`` returns. When the connection
        is lost the iterator raises ``StoreUnavailableError``; the caller resubscribes
        and resynchronises.
        """
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store answers."""
        ...

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...


def raise_if_cancelling() -> None:
    """Re-raise a cancellation a client library absorbed. redis-py can swallow one thrown
    into a read and return as if nothing happened; one that lands in a library's timeout can
    come out as a timeout (then a store error). A task asked to stop must stop: a follower
    that went on held each instance's shutdown for its 5 s bound."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
