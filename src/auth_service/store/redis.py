"""``RedisStore``: the ``Store`` shared by every instance, on ``redis.asyncio``.

This module is the boundary for Redis failures: every redis-py exception (and the
``OSError`` family: ``ConnectionError``, ``TimeoutError``) is translated into
``StoreUnavailableError``; no redis exception type escapes.

Every key and channel gets ``prefix``; lock names additionally live under ``lock:`` so a
lock can never collide with a plain key. Multi-step operations (rate-limit hit, lock
release and extend) are Lua scripts, so they are atomic across instances.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelManagedSSLConnection
from redis.connection import parse_url
from redis.exceptions import RedisError, ResponseError

from auth_service.store.base import RateLimitResult, StoreUnavailableError
from auth_service.store.redis_calls import text as _text
from auth_service.store.redis_calls import unavailable as _unavailable
from auth_service.store.redis_pubsub import RedisSubscription

_LOCK_NAMESPACE = "lock:"

_DEFAULT_CONFIRM_SECONDS = 5.0
"""How long to wait for the subscribe confirmation when the client has no socket_timeout."""

# KEYS[1] counter; ARGV[1] window in ms. Returns {count, pttl}. A counter found without
# a TTL (never expected) gets the window again: nothing may be stored forever.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

# KEYS[1] lock; ARGV[1] token. Returns 1 if released.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] lock; ARGV[1] token; ARGV[2] ttl in ms. Returns 1 if extended.
_EXTEND_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _ttl_ms(ttl: timedelta, what: str = "ttl") -> int:
    """Whole milliseconds (rounded up, so a positive TTL never becomes 0)."""
    seconds = ttl.total_seconds()
    if seconds <= 0:
        raise ValueError(f"{what} must be positive, got {ttl!r}")
    return max(1, math.ceil(seconds * 1000))


class RedisStore:
    """The ``Store`` protocol on Redis; see the module docstring.

    The store owns ``client``: ``close()`` closes it.
    """

    def __init__(self, client: Redis, prefix: str = "auth:") -> None:
        self._client = client
        self._prefix = prefix
        self._closed = False
        self._sentinels: list[Redis] = []  # the clients asking the sentinels, if any
        self._hit_script = client.register_script(_HIT_SCRIPT)
        self._release_script = client.register_script(_RELEASE_SCRIPT)
        self._extend_script = client.register_script(_EXTEND_SCRIPT)
        kwargs = client.connection_pool.connection_kwargs
        socket_timeout = kwargs.get("socket_timeout")
        self._confirm_seconds = (
            float(socket_timeout) if socket_timeout else _DEFAULT_CONFIRM_SECONDS
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "auth:",
        *,
        socket_timeout: float = 2.0,
        health_check_interval: int = 15,
        max_connections: int = 256,
    ) -> RedisStore:
        """A store with its own client for ``url`` (``redis://``, ``rediss://``, ``unix://``).

        No connection is made here; the first operation connects.
        """
        client = Redis.from_url(
            url,
            # redis-py's pool fails at once past its size (100 by default): a burst of
            # requests would turn into 503s. Connections to Redis are cheap; bound them high.
            max_connections=max_connections,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=health_check_interval,
        )
        return cls(client, prefix)

    @classmethod
    def from_sentinels(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service: str,
        url: str,
        prefix: str = "auth:",
        *,
        socket_timeout: float = 2.0,
        max_connections: int = 256,
    ) -> RedisStore:
        """A store on whichever server the sentinels name master of ``service`` now: after a
        failover the pool asks them again and reconnects (redis-py's ``Sentinel``). ``url``
        supplies the database number, credentials and TLS; its host is not used."""
        options: dict[str, Any] = {
            key: value
            for key, value in parse_url(url).items()  # type: ignore[no-untyped-call]
            if key in ("db", "username", "password")
        }
        if url.startswith("rediss://"):
            options["connection_class"] = SentinelManagedSSLConnection
        sentinel = Sentinel(
            list(sentinels),
            socket_timeout=socket_timeout,
            sentinel_kwargs={"socket_timeout": socket_timeout},
        )
        client = sentinel.master_for(
            service,
            redis_class=Redis,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            max_connections=max_connections,
            **options,
        )
        store = cls(client, prefix)
        store._sentinels = list(sentinel.sentinels)
        return store

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the redis store is closed")

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _lock_key(self, name: str) -> str:
        return self._prefix + _LOCK_NAMESPACE + name

    # -- key/value ---------------------------------------------------------------------

    async def put(self, key: str, value: str, ttl: timedelta) -> None:
        """Set ``key`` to ``value``, expiring after ``ttl`` (> 0), replacing any value."""
        self._check_open()
        ms = _ttl_ms(ttl)
        with _unavailable("put"):
            await self._client.set(self._key(key), value, px=ms)

    async def put_if_absent(self, key: str, value: str, ttl: timedelta) -> bool:
        """Set ``key`` only if it does not exist (SET NX PX). True if this call set it."""
        self._check_open()
        ms = _ttl_ms(ttl)
        with _unavailable("put_if_absent"):
            result = await self._client.set(self._key(key), value, nx=True, px=ms)
        return bool(result)

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """Values of ``keys`` in order (None where missing or expired), one MGET."""
        self._check_open()
        if not keys:
            return []
        with _unavailable("get_many"):
            values = await self._client.mget([self._key(k) for k in keys])
        return [None if v is None else _text(v) for v in values]

    async def scan(self, prefix: str) -> list[tuple[str, str, timedelta]]:
        """Every live entry under ``prefix``: (key, value, remaining TTL); SCAN + one pipeline."""
        self._check_open()
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._key(prefix)) + "*"
        with _unavailable("scan"):
            keys = [key async for key in self._client.scan_iter(match=pattern, count=1000)]
            if not keys:
                return []
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            replies = await pipe.execute()
        found: list[tuple[str, str, timedelta]] = []
        for index, key in enumerate(keys):
            value, ttl_ms = replies[2 * index], replies[2 * index + 1]
            if value is not None and int(ttl_ms) > 0:
                name = _text(key)[len(self._prefix) :]
                found.append((name, _text(value), timedelta(milliseconds=int(ttl_ms))))
        return found

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        self._check_open()
        with _unavailable("delete"):
            removed = await self._client.delete(self._key(key))
        return int(removed) > 0

    # -- rate limiting -----------------------------------------------------------------

    async def hit(self, key: str, limit: int, window: timedelta) -> RateLimitResult:
        """Count one event in the fixed window that starts at the key's first hit.

        One Lua script (INCR, PEXPIRE on the first hit, PTTL): atomic across instances.
        """
        self._check_open()
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        window_ms = _ttl_ms(window, "window")
        with _unavailable("hit"):
            reply = await self._hit_script(keys=[self._key(key)], args=[window_ms])
        count, pttl = int(reply[0]), int(reply[1])
        if count <= limit:
            return RateLimitResult(allowed=True, count=count, retry_after_seconds=0)
        retry_after = max(1, math.ceil(max(pttl, 0) / 1000))
        return RateLimitResult(allowed=False, count=count, retry_after_seconds=retry_after)

    async def reset_counter(self, key: str) -> None:
        """Forget a rate-limit counter (e.g. after a successful login)."""
        self._check_open()
        with _unavailable("reset_counter"):
            await self._client.delete(self._key(key))

    # -- locks -------------------------------------------------------------------------

    async def acquire_lock(self, name: str, ttl: timedelta) -> str | None:
        """Take the lock ``name`` for ``ttl`` (SET NX PX with a random token)."""
        self._check_open()
        ms = _ttl_ms(ttl)
        token = secrets.token_urlsafe(16)
        with _unavailable("acquire_lock"):
            acquired = await self._client.set(self._lock_key(name), token, nx=True, px=ms)
        return token if acquired else None

    async def release_lock(self, name: str, token: str) -> bool:
        """Release only if ``token`` still holds the lock (compare-and-delete script)."""
        self._check_open()
        with _unavailable("release_lock"):
            released = await self._release_script(keys=[self._lock_key(name)], args=[token])
        return int(released) == 1

    async def extend_lock(self, name: str, token: str, ttl: timedelta) -> bool:
        """Reset the TTL only if ``token`` still holds the lock (compare-and-PEXPIRE)."""
        self._check_open()
        ms = _ttl_ms(ttl)
        with _unavailable("extend_lock"):
            extended = await self._extend_script(keys=[self._lock_key(name)], args=[token, ms])
        return int(extended) == 1

    # -- pub/sub -----------------------------------------------------------------------

    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every current subscriber of ``channel`` on every instance."""
        self._check_open()
        with _unavailable("publish"):
            await self._client.publish(self._prefix + channel, message)

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """``async with store.subscribe(ch) as messages: async for m in messages: ...``

        Uses a dedicated pub/sub connection. ``__aenter__`` returns once Redis has
        confirmed the subscription. If the connection drops, the iterator raises
        ``StoreUnavailableError`` (also when redis-py reconnected on its own, since
        messages published in between were lost).
        """
        self._check_open()
        return RedisSubscription(
            self._client,
            self._prefix + channel,
            confirm_seconds=self._confirm_seconds,
            closed=lambda: self._closed,
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless Redis answers."""
        self._check_open()
        with _unavailable("ping"):
            await self._client.ping()

    async def maxmemory_policy(self) -> str | None:
        """Redis's ``maxmemory-policy`` (``CONFIG GET``), or None when CONFIG is refused.

        Managed Redis services often rename or forbid CONFIG (an error reply, or no value):
        then only the operator can say whether keys may be evicted.
        """
        self._check_open()
        try:
            reply = await self._client.config_get("maxmemory-policy")
        except ResponseError:  # refused (unknown command, NOPERM), not unreachable
            return None
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis config get failed: {exc}") from exc
        values = {_text(name): _text(value) for name, value in dict(reply).items()}
        policy = values.get("maxmemory-policy")
        return policy.strip().lower() if policy else None

    async def close(self) -> None:
        """Close the client and its connection pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with _unavailable("close"):
            await self._client.aclose()
            # A pool handed to the client (Sentinel's master_for) is not closed with it.
            await self._client.connection_pool.disconnect()
            for sentinel in self._sentinels:
                await sentinel.aclose()
