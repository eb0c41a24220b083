"""Revocation is durable (DESIGN.md): the store is an index of the database, rebuilt before
anything is valid again when it comes back empty (restart without persistence, flush,
eviction), on both backends. Each attack logs out (or revokes all, or disables), empties
the store the way a Redis restart does, and shows the token is still refused."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.db.models import User
from auth_service.db.session import create_sessionmaker
from auth_service.services.revocation import (
    INDEX_MARKER_KEY,
    disabled_key,
    mark_disabled,
    revoke_user_tokens,
    revoked_after_key,
    sid_key,
)
from auth_service.services.revocation_index import (
    LOCK_NAME,
    RevocationIndex,
)
from auth_service.settings import Settings
from auth_service.store import MemoryStore, RedisStore, Store
from tests.support.backends import REDIS_URL
from tests.support.http import (
    PASSWORD,
    LoggedIn,
    client_headers,
    register_and_login,
    sign_as_service,
    validate,
)
from tests.support.mfa import claims as claims_of
from tests.support.service import Service, started

REFUSED_LOGOUT = {"session_revoked", "token_revoked"}


async def flush_store(store: Store, prefix: str) -> None:
    """What FLUSHDB (or a Redis restart without persistence) does to this test's keys."""
    if isinstance(store, MemoryStore):
        store._entries.clear()  # a test helper: production never empties a store
        return
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def fresh_store(store: Store, prefix: str) -> Store:
    """The store a restarted process finds: the embedded one starts empty, Redis is shared."""
    return MemoryStore(prefix=prefix) if isinstance(store, MemoryStore) else store


async def refusal(service: Service, token: str, headers: dict[str, str]) -> str | None:
    """The reason ``/validate`` refuses ``token`` (None: valid); ``/auth/me`` must agree."""
    body = await validate(service, token, headers)
    me = await service.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    if body["valid"]:
        assert me.status_code == 200, me.text
        return None
    assert me.status_code == 401, me.text
    return str(body["error"])


async def until(predicate: Callable[[], Any], seconds: float = 3.0) -> bool:
    """Poll ``predicate`` (sync or async) until it holds; False after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await _result(predicate()):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@pytest.fixture
def mirror_off(make_settings: Callable[..., Settings]) -> Settings:
    """Every read goes to the store (no memory to hide an emptied store)."""
    return make_settings(revocation_mirror=False)


@pytest.fixture
async def plain(
    make_container: Callable[..., Container], mirror_off: Settings
) -> AsyncIterator[Service]:
    async with started(make_container(mirror_off)) as running:
        yield running


@pytest.fixture
def restart(
    make_container: Callable[..., Container], store: Store, redis_prefix: str
) -> Callable[..., Any]:
    """``async with restart() as service``: a new process on the same database, whose store
    is empty (a fresh MemoryStore, or Redis after a flush)."""

    @asynccontextmanager
    async def restarted(settings: Settings | None = None) -> AsyncIterator[Service]:
        await flush_store(store, redis_prefix)
        again = make_container(settings, store=fresh_store(store, redis_prefix))
        async with started(again) as running:
            yield running

    return restarted


async def _disable(service: Service, user: LoggedIn) -> None:
    """What "disable user" does: the row (the record), then the store entry (the index)."""
    container = service.container
    async with container.db.writer() as db, db.begin():
        await db.execute(
            update(User)
            .where(User.id == uuid.UUID(user.user_id))
            .values(disabled=True, updated_at=container.clock.now())
        )
    await mark_disabled(
        container.store, container.revocations.policy, user_id=user.user_id, disabled=True
    )


async def _revoke(service: Service, kind: str) -> tuple[str, set[str], dict[str, str]]:
    """Revoke a live token by ``kind``: (that token, the reasons it may be refused with,
    a client's headers)."""
    user = await register_and_login(service)
    headers = await client_headers(service)
    token = user.pair["access_token"]
    assert await refusal(service, token, headers) is None
    if kind == "logout":
        assert (await service.client.post("/auth/logout", headers=user.bearer)).status_code == 204
        return token, REFUSED_LOGOUT, headers
    if kind == "logout-all":
        # Same user, a session never revoked: only the revoke-after time can refuse it.
        outside = sign_as_service(service, {**claims_of(token), "jti": "j2", "sid": "s-other"})
        assert await refusal(service, outside, headers) is None
        bearer = user.bearer
        assert (await service.client.post("/auth/logout-all", headers=bearer)).status_code == 204
        return outside, {"token_revoked"}, headers
    await _disable(service, user)
    return token, {"user_disabled"}, headers


@pytest.mark.parametrize("kind", ["logout", "logout-all", "disabled"])
@pytest.mark.parametrize("empty", ["flush", "restart"])
async def test_a_revocation_survives_an_emptied_store(
    kind: str,
    empty: str,
    make_container: Callable[..., Container],
    mirror_off: Settings,
    restart: Callable[..., Any],
    store: Store,
    redis_prefix: str,
) -> None:
    """flush: Redis flushed under a running instance that reads the store (no mirror memory
    to hide it); restart: a new process on an emptied store (the embedded one always is)."""
    async with started(make_container(mirror_off if empty == "flush" else None)) as first:
        token, refused, headers = await _revoke(first, kind)
        assert await refusal(first, token, headers) in refused
        if empty == "flush":
            await flush_store(store, redis_prefix)
            assert await refusal(first, token, headers) in refused
            return
    async with restart() as again:
        assert await refusal(again, token, headers) in refused


async def _log_out(service: Service) -> tuple[LoggedIn, dict[str, str]]:
    user = await register_and_login(service)
    headers = await client_headers(service)
    assert await refusal(service, user.pair["access_token"], headers) is None
    response = await service.client.post("/auth/logout", headers=user.bearer)
    assert response.status_code == 204
    return user, headers


async def test_start_rebuilds_the_index_before_serving(
    service: Service, restart: Callable[..., Any], mirror_off: Settings
) -> None:
    user, _headers = await _log_out(service)
    sid = claims_of(user.pair["access_token"])["sid"]
    async with restart(mirror_off) as again:  # no follower: only start() can have rebuilt
        stored = await again.container.store.get_many([sid_key(sid), INDEX_MARKER_KEY])
        assert stored[0] == "1" and stored[1] is not None


async def test_a_flush_under_a_current_mirror_is_rebuilt(
    service: Service, store: Store, redis_prefix: str
) -> None:
    """FLUSHDB while subscribed: no event tells the mirror, its memory still refuses the
    token, but the store must not stay an incomplete index (other instances, restarts)."""
    mirror = service.container.mirror
    assert mirror is not None and await until(lambda: mirror.current)
    user, headers = await _log_out(service)
    sid = claims_of(user.pair["access_token"])["sid"]
    await flush_store(store, redis_prefix)
    assert await refusal(service, user.pair["access_token"], headers) in REFUSED_LOGOUT

    async def rebuilt() -> bool:
        values = await store.get_many([sid_key(sid), INDEX_MARKER_KEY])
        return values[0] == "1" and values[1] is not None

    assert await until(rebuilt, 3.0)
    assert await refusal(service, user.pair["access_token"], headers) in REFUSED_LOGOUT


# -- single flight, the lock, and failures ------------------------------------------------


async def test_concurrent_validations_after_a_flush_share_one_rebuild(
    plain: Service, store: Store, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, headers = await _log_out(plain)
    index = plain.container.revocations
    before, attempts = index.rebuilds, []
    take = plain.container.store.acquire_lock

    async def counted(name: str, ttl: timedelta) -> str | None:
        attempts.append(name)
        return await take(name, ttl)

    monkeypatch.setattr(plain.container.store, "acquire_lock", counted)
    await flush_store(store, redis_prefix)
    bodies = await asyncio.gather(
        *(validate(plain, user.pair["access_token"], headers) for _ in range(20))
    )
    assert {body["error"] for body in bodies} <= REFUSED_LOGOUT
    assert index.rebuilds - before == 1
    assert attempts.count(LOCK_NAME) == 1  # one in-process flight, not one per request


async def test_two_instances_after_a_flush_rebuild_once(
    plain: Service,
    make_container: Callable[..., Container],
    mirror_off: Settings,
    store: Store,
    redis_prefix: str,
) -> None:
    user, headers = await _log_out(plain)
    other_store = (
        store
        if isinstance(store, MemoryStore)
        else RedisStore.from_url(REDIS_URL, prefix=redis_prefix)
    )
    try:
        async with started(make_container(mirror_off, store=other_store)) as other:
            indexes = [plain.container.revocations, other.container.revocations]
            before = sum(index.rebuilds for index in indexes)
            await flush_store(store, redis_prefix)
            token = user.pair["access_token"]
            bodies = await asyncio.gather(
                *(validate(s, token, headers) for s in [plain, other] * 10)
            )
            assert {body["error"] for body in bodies} <= REFUSED_LOGOUT
            assert sum(index.rebuilds for index in indexes) - before == 1  # the store lock
    finally:
        if other_store is not store:
            await other_store.close()


async def test_a_database_failure_during_the_rebuild_answers_503_never_valid(
    plain: Service, store: Store, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, headers = await _log_out(plain)
    index = plain.container.revocations
    broken = create_async_engine(
        "sqlite+aiosqlite:////nonexistent-dir/x.db"
        if "sqlite" in str(plain.container.engine.url)
        else "postgresql+asyncpg://postgres@127.0.0.1:1/none",
        poolclass=NullPool,
    )
    monkeypatch.setattr(index, "_sessionmaker", create_sessionmaker(broken))
    await flush_store(store, redis_prefix)
    token = user.pair["access_token"]
    response = await plain.client.post("/validate", json={"token": token}, headers=headers)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "service_unavailable"
    me = await plain.client.get("/auth/me", headers=user.bearer)
    assert me.status_code == 503, me.text
    monkeypatch.undo()  # the database is back: the next call rebuilds
    await broken.dispose()
    assert await refusal(plain, token, headers) in REFUSED_LOGOUT


# -- races with writes made during the rebuild --------------------------------------------


def _before_writing(
    index: RevocationIndex, monkeypatch: pytest.MonkeyPatch, key: str, action: Any
) -> None:
    """Run ``action`` once, after the rebuild read the database, before it writes ``key``."""
    write = index._write

    async def interleaved(entries: Any) -> None:
        if any(entry[0] == key for entry in entries) and not done:
            done.append(True)
            await action()
        await write(entries)

    done: list[bool] = []
    monkeypatch.setattr(index, "_write", interleaved)


async def test_a_revoke_all_during_the_rebuild_is_not_rolled_back(
    plain: Service,
    clock: FrozenClock,
    store: Store,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await register_and_login(plain)
    headers = await client_headers(plain)
    assert (await plain.client.post("/auth/logout-all", headers=user.bearer)).status_code == 204
    clock.advance(5)
    login = {"email": user.email, "password": PASSWORD}
    later = (await plain.client.post("/auth/login", json=login)).json()["access_token"]
    outside = sign_as_service(plain, {**claims_of(later), "jti": "j3", "sid": str(uuid.uuid4())})

    async def revoke_all_again() -> None:  # what logout-all does, on another instance
        clock.advance(5)
        async with plain.container.db.writer() as db, db.begin():
            await db.execute(
                update(User)
                .where(User.id == uuid.UUID(user.user_id))
                .values(tokens_revoked_after=clock.now())
            )
        policy = plain.container.revocations.policy
        await revoke_user_tokens(
            plain.container.store, policy, user_id=user.user_id, now=clock.now()
        )

    index = plain.container.revocations
    _before_writing(index, monkeypatch, revoked_after_key(user.user_id), revoke_all_again)
    await flush_store(store, redis_prefix)
    assert await refusal(plain, outside, headers) == "token_revoked"  # not the older time


async def test_a_flush_during_the_rebuild_starts_it_over(
    plain: Service, store: Store, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker must not crown an index that lost what was copied before the flush."""
    user, headers = await _log_out(plain)  # a revoked session: copied first
    other = await register_and_login(plain, email="bob@example.com")
    assert (await plain.client.post("/auth/logout-all", headers=other.bearer)).status_code == 204

    async def flush() -> None:  # after the sessions were copied, before the users
        await flush_store(store, redis_prefix)

    index = plain.container.revocations
    _before_writing(index, monkeypatch, revoked_after_key(other.user_id), flush)
    await flush_store(store, redis_prefix)
    assert await refusal(plain, user.pair["access_token"], headers) in REFUSED_LOGOUT


async def test_a_user_enabled_during_the_rebuild_is_not_left_disabled(
    plain: Service, store: Store, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register_and_login(plain)
    headers = await client_headers(plain)
    await _disable(plain, user)
    container = plain.container

    async def enable() -> None:  # commit, then drop the store entry (the un-revocation order)
        async with container.db.writer() as db, db.begin():
            await db.execute(
                update(User).where(User.id == uuid.UUID(user.user_id)).values(disabled=False)
            )
        await mark_disabled(
            container.store, container.revocations.policy, user_id=user.user_id, disabled=False
        )

    _before_writing(container.revocations, monkeypatch, disabled_key(user.user_id), enable)
    await flush_store(store, redis_prefix)
    assert await refusal(plain, user.pair["access_token"], headers) is None
