"""Fixtures for both backends.

``AUTH_TEST_BACKEND=embedded`` (default): a SQLite file per test (copied from one migrated
template) and the in-process store. ``AUTH_TEST_BACKEND=postgres``: one fresh PostgreSQL
database per run (migrated once, truncated after each test) and Redis with a unique key
prefix per test. Outside CI an absent server skips those tests with a clear message; with
``CI=true`` they fail instead.

``shared_service`` is one started app per module, on a database and a store prefix of its
own, for tests that only read.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.clock import FrozenClock
from auth_service.container import Container, build_container
from auth_service.crypto.jwk import generate_rsa_key
from auth_service.db.base import Base
from auth_service.db.migrate import upgrade_to_head
from auth_service.settings import Settings
from auth_service.store import Store
from tests.support.backends import (
    PG_ADMIN_URL,
    drop_prefix,
    is_postgres,
    new_prefix,
    open_store,
    own_database,
    pg_execute,
    unavailable,
    with_database,
)
from tests.support.clocks import START
from tests.support.service import Service, started
from tests.support.settings import suite_settings


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
        asyncio.run(pg_execute(PG_ADMIN_URL, "SELECT 1"))
    except Exception as exc:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    name = f"auth_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_execute(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    url = with_database(PG_ADMIN_URL, name)
    try:
        upgrade_to_head(url)
        yield url
    finally:
        asyncio.run(pg_execute(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
    await pg_execute(migrated_database, f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    # The one row the migration seeds: the audit chain's head (an empty chain).
    seed = "INSERT INTO audit_head VALUES (1, 0, '" + "0" * 64 + "')"
    await pg_execute(migrated_database, seed)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = new_prefix()
    yield prefix
    drop_prefix(prefix)


@pytest.fixture
async def store(redis_prefix: str) -> AsyncIterator[Store]:
    """The store of the backend under test (closed after the test)."""
    opened = await open_store(redis_prefix)
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def make_settings(database_url: str, redis_prefix: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return suite_settings(database_url, redis_prefix, **overrides)

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


@pytest.fixture
async def service(make_container: Callable[..., Container]) -> AsyncIterator[Service]:
    """A started app (lifespan run) and an HTTP client speaking to it in-process."""
    async with started(make_container()) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_service(
    migrated_database: str,
    tmp_path_factory: pytest.TempPathFactory,
    key_pool: list[rsa.RSAPrivateKey],
) -> AsyncIterator[Service]:
    """Like ``service``, but one per module, on its own database and store prefix (nothing
    leaks into other modules), with its own frozen clock. Only for tests that neither write
    to the database or the store nor move the clock. They run in the module's event loop:
    ``pytestmark = pytest.mark.asyncio(loop_scope="module")``."""
    prefix = new_prefix()
    keys = itertools.cycle(key_pool)
    async with own_database(migrated_database, tmp_path_factory.mktemp("shared")) as url:
        store = await open_store(prefix)
        try:
            container = build_container(
                suite_settings(url, prefix),
                clock=FrozenClock(START),
                store=store,
                key_generator=lambda _bits: next(keys),
            )
            async with started(container) as running:
                yield running
        finally:
            await store.close()
            drop_prefix(prefix)


@pytest.fixture(scope="session")
def fresh_keys() -> list[rsa.RSAPrivateKey]:
    """Keys for tests that rotate: each test draws them in order and without repeats (a
    repeated key would collide on its kid); each test has its own database, so the keys are
    made once per run."""
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
