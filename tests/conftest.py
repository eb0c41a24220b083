"""Fixtures for both backends.

``AUTH_TEST_BACKEND=embedded`` (default): a SQLite file per test (copied from one migrated
template) and the in-process store. ``AUTH_TEST_BACKEND=postgres``: one fresh PostgreSQL
database per run (migrated once, truncated after each test) and Redis with a unique key
prefix per test. Outside CI an absent server skips those tests with a clear message; with
``CI=true`` they fail instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auth_service.app import create_app
from auth_service.clock import FrozenClock
from auth_service.container import Container, build_container
from auth_service.crypto.jwk import generate_rsa_key
from auth_service.db.base import Base
from auth_service.db.migrate import upgrade_to_head
from auth_service.settings import Settings
from auth_service.store import MemoryStore, RedisStore, Store

BACKEND = os.environ.get("AUTH_TEST_BACKEND", "embedded")
IN_CI = os.environ.get("CI") == "true"
PG_ADMIN_URL = os.environ.get(
    "AUTH_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("AUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_SECRET = (
    "CrGxGwGp0OprGiSvLLphjIdBjqNs44ZegJKbuNw21URTQCMmRBJm9t03Kqx7RHfnVnaXjhSY42mWDG2HR3-mMg"
)
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def unavailable(message: str) -> None:
    """Skip outside CI; in CI a test that needs a server fails."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: tests that need it fail instead of skipping)")
    pytest.skip(message)


def is_postgres() -> bool:
    return BACKEND == "postgres"


async def _pg_execute(url: str, *statements: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def key_pool() -> list[rsa.RSAPrivateKey]:
    """RSA keys made once per run; tests draw from them instead of generating new ones."""
    return [generate_rsa_key(2048) for _ in range(6)]


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a database at the newest revision (a template file for SQLite)."""
    if not is_postgres():
        template = tmp_path_factory.mktemp("db") / "template.db"
        url = f"sqlite+aiosqlite:///{template}"
        upgrade_to_head(url)
        yield url
        return
    try:
        asyncio.run(_pg_execute(PG_ADMIN_URL, "SELECT 1"))
    except Exception as exc:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    name = f"auth_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_execute(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    url = _with_database(PG_ADMIN_URL, name)
    try:
        upgrade_to_head(url)
        yield url
    finally:
        asyncio.run(_pg_execute(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(migrated_database: str, tmp_path: Path) -> AsyncIterator[str]:
    """A clean database for one test."""
    if not is_postgres():
        path = tmp_path / "auth.db"
        shutil.copyfile(migrated_database.split(":///", 1)[1], path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    yield migrated_database
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    await _pg_execute(migrated_database, f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"authtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    if is_postgres():
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
async def store(redis_prefix: str) -> AsyncIterator[Store]:
    """The store of the backend under test (closed after the test)."""
    if not is_postgres():
        memory = MemoryStore(prefix=redis_prefix)
        yield memory
        await memory.close()
        return
    candidate = RedisStore.from_url(REDIS_URL, prefix=redis_prefix)
    try:
        await candidate.ping()
    except Exception as exc:
        await candidate.close()
        unavailable(f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    yield candidate
    await candidate.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def make_settings(database_url: str, redis_prefix: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "development",
            "database_url": database_url,
            "redis_url": REDIS_URL if is_postgres() else None,
            "redis_key_prefix": redis_prefix,
            "issuer": "https://auth.example.test",
            "audience": ["api.example.test"],
            "key_encryption_secret": TEST_SECRET,
            "scheduler_enabled": False,
            "password_hash_memory_kib": 8,  # cheap argon2id: tests, not production
            "password_hash_time_cost": 1,
            # Every client of the suite shares one IP: per-IP limits are lifted unless a test
            # sets them (each attack test of a limit sets its own).
            "login_ip_limit": 10_000,
            "register_ip_limit": 10_000,
            "client_auth_failure_limit": 10_000,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_container(
    settings: Settings, store: Store, clock: FrozenClock, key_pool: list[rsa.RSAPrivateKey]
) -> Callable[..., Container]:
    """Containers on the test database and store; keys come from the pool, in order."""

    def make(container_settings: Settings | None = None, **overrides: Any) -> Container:
        keys = itertools.cycle(key_pool)
        options: dict[str, Any] = {
            "clock": clock,
            "store": store,
            "key_generator": lambda _bits: next(keys),
            **overrides,
        }
        return build_container(container_settings or settings, **options)

    return make


@dataclass
class Service:
    app: FastAPI
    container: Container
    client: httpx.AsyncClient


@asynccontextmanager
async def started(container: Container) -> AsyncIterator[Service]:
    """``container`` as a started app (lifespan run) with an in-process HTTP client."""
    app = create_app(container=container)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield Service(app=app, container=container, client=client)


@pytest.fixture
async def service(make_container: Callable[..., Container]) -> AsyncIterator[Service]:
    """A started app (lifespan run) and an HTTP client speaking to it in-process."""
    async with started(make_container()) as running:
        yield running


@pytest.fixture(scope="module")
def fresh_keys() -> list[rsa.RSAPrivateKey]:
    """Keys for tests that rotate: drawn without repeats (a repeated key would collide on its
    kid), so each module gets its own."""
    return [generate_rsa_key(2048) for _ in range(9)]


@pytest.fixture
async def rot(
    make_container: Callable[..., Container], fresh_keys: list[rsa.RSAPrivateKey]
) -> AsyncIterator[Service]:
    """Like ``service``, with keys from ``fresh_keys`` in order and never twice."""
    keys = iter(fresh_keys)

    def generate(_bits: int) -> rsa.RSAPrivateKey:
        try:
            return next(keys)
        except StopIteration:
            raise AssertionError("the test made more keys than fresh_keys holds") from None

    async with started(make_container(key_generator=generate)) as running:
        yield running


class Ticks:
    """A hand-moved monotonic time source (for parts that take ``time_source``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def registered_client(
    make_container: Callable[..., Container],
) -> AsyncIterator[tuple[Container, str, str]]:
    """A container (not started) with one service client: (container, client_id, secret)."""
    container = make_container()
    created = await container.clients.create(name="billing")
    yield container, created.client.client_id, created.client_secret
    await container.engine.dispose()
    container.hasher.close()
