"""The shared fast state: the ``Store`` protocol and its two implementations."""

from __future__ import annotations

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


def create_store(redis_url: str | None, prefix: str, *, socket_timeout: float = 2.0) -> Store:
    """``RedisStore`` for ``redis_url`` (many instances), ``MemoryStore`` when it is None.

    No connection is made here; call ``ping()`` to check that Redis is reachable.
    """
    if redis_url is None:
        return MemoryStore(prefix)
    return RedisStore.from_url(redis_url, prefix, socket_timeout=socket_timeout)
