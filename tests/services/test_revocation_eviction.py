"""Production refuses a Redis whose maxmemory-policy may evict revocation entries (the store
is an index of the database; an evicting Redis would silently drop revocations)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from auth_service.container import Container, start, stop
from auth_service.errors import ConfigurationError
from auth_service.services.revocation_index import check_eviction_policy
from auth_service.services.store_keys import MIRRORED_PREFIXES
from auth_service.settings import Settings
from auth_service.store import MemoryStore, RedisStore
from auth_service.store.mirror import MirroredStore
from tests.support.backends import REDIS_URL, is_postgres

# -- production refuses a Redis that may evict revocations --------------------------------


def _redis_store(monkeypatch: pytest.MonkeyPatch, reply: Any) -> RedisStore:
    """A RedisStore whose CONFIG GET answers ``reply`` (an exception is raised)."""
    redis_store = RedisStore.from_url(REDIS_URL)

    async def config_get(*_args: Any) -> dict[str, str]:
        if isinstance(reply, Exception):
            raise reply
        return {"maxmemory-policy": reply}

    monkeypatch.setattr(redis_store._client, "config_get", config_get)
    return redis_store


@pytest.mark.parametrize(
    ("reply", "assume", "refused"),
    [
        ("noeviction", False, None),
        ("allkeys-lru", False, "maxmemory-policy is allkeys-lru"),
        ("volatile-ttl", True, "maxmemory-policy is volatile-ttl"),  # read beats assumed
        (ResponseError("unknown command 'CONFIG'"), False, "AUTH_REDIS_ASSUME_NOEVICTION"),
        (ResponseError("NOPERM this user has no permissions"), True, None),
    ],
)
async def test_production_refuses_a_redis_that_may_evict(
    monkeypatch: pytest.MonkeyPatch, reply: Any, assume: bool, refused: str | None
) -> None:
    redis_store = _redis_store(monkeypatch, reply)
    try:
        check = check_eviction_policy(
            MirroredStore(redis_store, prefixes=MIRRORED_PREFIXES),
            environment="production",
            assume_noeviction=assume,
        )
        if refused is None:
            await check
        else:
            with pytest.raises(ConfigurationError, match=refused):
                await check
        # Development, and the embedded store, are not checked.
        await check_eviction_policy(redis_store, environment="development", assume_noeviction=False)
        await check_eviction_policy(
            MemoryStore(), environment="production", assume_noeviction=False
        )
    finally:
        await redis_store.close()


@pytest.mark.skipif(not is_postgres(), reason="needs the real Redis")
async def test_production_does_not_start_on_a_real_allkeys_lru_redis(
    settings: Settings, make_container: Callable[..., Container]
) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    original = str((await client.config_get("maxmemory-policy"))["maxmemory-policy"])
    container = make_container()
    # Past the production guard of the settings (not the subject here): only start() checks.
    container.settings = settings.model_copy(update={"environment": "production"})
    try:
        await client.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(ConfigurationError, match="maxmemory-policy is allkeys-lru"):
            await start(container)
    finally:
        await client.config_set("maxmemory-policy", original)
        await client.aclose()
        await stop(container)
