"""The shared fast state: the ``Store`` protocol and its two implementations."""

from __future__ import annotations

from collections.abc import Sequence

from auth_service.store.base import RateLimitResult, Store, StoreUnavailableError
from auth_service.store.memory import MemoryStore
from auth_service.store.redis import RedisStore

__all__ = [
    "MemoryStore",
    "RateLimitResult",
    "RedisStore",
    "Store",
    "StoreUnavailableError",
    "create_store",
]


def create_store(
    redis_url: str | None,
    prefix: str,
    *,
    socket_timeout: float = 2.0,
    sentinels: Sequence[str] = (),
    sentinel_service: str = "mymaster",
) -> Store:
    """``RedisStore`` for ``redis_url`` (many instances), through ``sentinels`` (``host:port``
    each) when given; ``MemoryStore`` when ``redis_url`` is None.

    No connection is made here; call ``ping()`` to check that Redis is reachable.
    """
    if redis_url is None:
        return MemoryStore(prefix)
    if sentinels:
        addresses = [_host_port(entry) for entry in sentinels]
        return RedisStore.from_sentinels(
            addresses, sentinel_service, redis_url, prefix, socket_timeout=socket_timeout
        )
    return RedisStore.from_url(redis_url, prefix, socket_timeout=socket_timeout)


def _host_port(entry: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``); Settings has checked the form."""
    host, _, port = entry.rpartition(":")
    return host.strip("[]"), int(port)
