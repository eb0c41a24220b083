"""``MemoryStore``: the in-process ``Store`` for a single instance (the embedded default).

Everything lives in one dict owned by the event loop. Each operation runs without an
``await`` between reading and writing its key, so operations are atomic with respect to
the other coroutines of the loop (the single-instance equivalent of Redis atomicity).
The store is not thread-safe: use it from one event loop only.

Expiry is lazy (an expired entry is treated as absent when read) plus a sweep every
``_SWEEP_EVERY`` writes, so the dict holds at most the live entries plus the entries
that expired since the last sweep.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Self

from auth_service.store.base import RateLimitResult, StoreUnavailableError

_SWEEP_EVERY = 1024
"""Writes between two sweeps of expired entries."""

_SUBSCRIBER_BUFFER = 10_000
"""Undelivered messages a subscriber may accumulate before it is dropped (like Redis's
output-buffer limit for slow pub/sub clients); its iterator then raises
``StoreUnavailableError`` and the caller resubscribes and resynchronises."""

_LOCK_NAMESPACE = "lock:"

# ``None`` in a subscriber queue means "this subscription is over" (store closed or the
# subscriber fell too far behind).
_Queue = asyncio.Queue[str | None]


def _ttl_seconds(ttl: timedelta, what: str = "ttl") -> float:
    seconds = ttl.total_seconds()
    if seconds <= 0:
        raise ValueError(f"{what} must be positive, got {ttl!r}")
    return seconds


@dataclass(slots=True)
class _Entry:
    value: str
    expires_at: float  # in ``time_source`` units (seconds)


class MemoryStore:
    """The ``Store`` protocol for one process; see the module docstring."""

    def __init__(
        self,
        prefix: str = "auth:",
        *,
        time_source: Callable[[], float] = time.monotonic,
    ) -> None:
        """``time_source`` returns seconds on a monotonic scale (injectable for tests)."""
        self._prefix = prefix
        self._now = time_source
        self._entries: dict[str, _Entry] = {}
        self._channels: dict[str, set[_Queue]] = {}
        self._writes_since_sweep = 0
        self._closed = False

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the memory store is closed")

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _lock_key(self, name: str) -> str:
        return self._prefix + _LOCK_NAMESPACE + name

    def _live(self, full_key: str, now: float) -> _Entry | None:
        """The entry under ``full_key`` unless it is missing or expired (then dropped)."""
        entry = self._entries.get(full_key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._entries[full_key]
            return None
        return entry

    def _write(self, full_key: str, entry: _Entry) -> None:
        self._entries[full_key] = entry
        self._writes_since_sweep += 1
        if self._writes_since_sweep >= _SWEEP_EVERY:
            self._sweep()

    def _sweep(self) -> None:
        now = self._now()
        expired = [k for k, e in self._entries.items() if e.expires_at <= now]
        for k in expired:
            del self._entries[k]
        self._writes_since_sweep = 0

    # -- key/value ---------------------------------------------------------------------

    async def put(self, key: str, value: str, ttl: timedelta) -> None:
        """Set ``key`` to ``value``, expiring after ``ttl`` (> 0), replacing any value."""
        self._check_open()
        seconds = _ttl_seconds(ttl)
        self._write(self._key(key), _Entry(value, self._now() + seconds))

    async def put_if_absent(self, key: str, value: str, ttl: timedelta) -> bool:
        """Set ``key`` only if it does not exist. True if this call set it."""
        self._check_open()
        seconds = _ttl_seconds(ttl)
        full_key = self._key(key)
        now = self._now()
        if self._live(full_key, now) is not None:
            return False
        self._write(full_key, _Entry(value, now + seconds))
        return True

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """Values of ``keys`` in order (None where missing or expired)."""
        self._check_open()
        now = self._now()
        values: list[str | None] = []
        for key in keys:
            entry = self._live(self._key(key), now)
            values.append(None if entry is None else entry.value)
        return values

    async def scan(self, prefix: str) -> list[tuple[str, str, timedelta]]:
        """Every live entry under ``prefix``: (key, value, remaining TTL)."""
        self._check_open()
        now = self._now()
        wanted = self._key(prefix)
        found: list[tuple[str, str, timedelta]] = []
        for full_key in [k for k in self._entries if k.startswith(wanted)]:
            entry = self._live(full_key, now)
            if entry is not None:
                remaining = timedelta(seconds=entry.expires_at - now)
                found.append((full_key[len(self._prefix) :], entry.value, remaining))
        return found

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed (and had not expired)."""
        self._check_open()
        full_key = self._key(key)
        existed = self._live(full_key, self._now()) is not None
        self._entries.pop(full_key, None)
        return existed

    # -- rate limiting -----------------------------------------------------------------

    async def hit(self, key: str, limit: int, window: timedelta) -> RateLimitResult:
        """Count one event in the fixed window that starts at the key's first hit."""
        self._check_open()
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        seconds = _ttl_seconds(window, "window")
        full_key = self._key(key)
        now = self._now()
        entry = self._live(full_key, now)
        if entry is None:
            count = 1
            expires_at = now + seconds
        else:
            try:
                count = int(entry.value) + 1
            except ValueError as exc:
                # Redis answers INCR on a non-integer with an error; mirror it.
                raise StoreUnavailableError(f"{key!r} does not hold a counter") from exc
            expires_at = entry.expires_at
        self._write(full_key, _Entry(str(count), expires_at))
        if count <= limit:
            return RateLimitResult(allowed=True, count=count, retry_after_seconds=0)
        retry_after = max(1, math.ceil(expires_at - now))
        return RateLimitResult(allowed=False, count=count, retry_after_seconds=retry_after)

    async def reset_counter(self, key: str) -> None:
        """Forget a rate-limit counter."""
        self._check_open()
        self._entries.pop(self._key(key), None)

    # -- locks -------------------------------------------------------------------------

    async def acquire_lock(self, name: str, ttl: timedelta) -> str | None:
        """Take the lock ``name`` for ``ttl``; the token, or None if it is held."""
        self._check_open()
        seconds = _ttl_seconds(ttl)
        full_key = self._lock_key(name)
        now = self._now()
        if self._live(full_key, now) is not None:
            return None
        token = secrets.token_urlsafe(16)
        self._write(full_key, _Entry(token, now + seconds))
        return token

    async def release_lock(self, name: str, token: str) -> bool:
        """Release only if ``token`` still holds the lock."""
        self._check_open()
        full_key = self._lock_key(name)
        entry = self._live(full_key, self._now())
        if entry is None or not secrets.compare_digest(entry.value, token):
            return False
        del self._entries[full_key]
        return True

    async def extend_lock(self, name: str, token: str, ttl: timedelta) -> bool:
        """Reset the TTL only if ``token`` still holds the lock; False if it was lost."""
        self._check_open()
        seconds = _ttl_seconds(ttl)
        full_key = self._lock_key(name)
        now = self._now()
        entry = self._live(full_key, now)
        if entry is None or not secrets.compare_digest(entry.value, token):
            return False
        self._write(full_key, _Entry(entry.value, now + seconds))
        return True

    # -- pub/sub -----------------------------------------------------------------------

    async def publish(self, channel: str, message: str) -> None:
        """Deliver ``message`` to every current subscriber of ``channel``."""
        self._check_open()
        full_channel = self._prefix + channel
        subscribers = self._channels.get(full_channel)
        if not subscribers:
            return
        for queue in list(subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # Too slow: drop the subscriber and tell it (it must resynchronise).
                subscribers.discard(queue)
                _drain(queue)
                queue.put_nowait(None)
        if not subscribers:
            del self._channels[full_channel]

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """``async with store.subscribe(ch) as messages: async for m in messages: ...``"""
        return _MemorySubscription(self, self._prefix + channel)

    def _add_subscriber(self, full_channel: str, queue: _Queue) -> None:
        self._check_open()
        self._channels.setdefault(full_channel, set()).add(queue)

    def _remove_subscriber(self, full_channel: str, queue: _Queue) -> None:
        subscribers = self._channels.get(full_channel)
        if subscribers is None:
            return
        subscribers.discard(queue)
        if not subscribers:
            del self._channels[full_channel]

    # -- lifecycle ---------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` once the store is closed."""
        self._check_open()

    async def close(self) -> None:
        """Drop all state and end every subscription. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._entries.clear()
        for subscribers in self._channels.values():
            for queue in subscribers:
                _drain(queue)
                queue.put_nowait(None)
        self._channels.clear()


def _drain(queue: _Queue) -> None:
    while not queue.empty():
        queue.get_nowait()


class _MemorySubscription:
    """Registered on ``__aenter__``, unregistered on ``__aexit__``; iterates messages."""

    def __init__(self, store: MemoryStore, full_channel: str) -> None:
        self._store = store
        self._channel = full_channel
        self._queue: _Queue = asyncio.Queue(maxsize=_SUBSCRIBER_BUFFER)
        self._ended = False

    async def __aenter__(self) -> Self:
        self._store._add_subscriber(self._channel, self._queue)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._store._remove_subscriber(self._channel, self._queue)
        self._ended = True

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        if self._ended:
            raise StoreUnavailableError("the subscription has ended")
        message = await self._queue.get()
        if message is None:
            self._ended = True
            raise StoreUnavailableError(
                "subscription lost (store closed or subscriber too slow); resubscribe"
            )
        return message
