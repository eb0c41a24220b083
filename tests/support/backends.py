"""Which backend the suite runs on (``AUTH_TEST_BACKEND``), the servers' URLs, the test key
encryption secret, skipping (or failing in CI) when a server is absent, and the backend's
databases and stores."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auth_service.db.migrate import upgrade_to_head
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


def unavailable(message: str) -> None:
    """Skip outside CI; in CI a test that needs a server fails."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: tests that need it fail instead of skipping)")
    pytest.skip(message)


def is_postgres() -> bool:
    return BACKEND == "postgres"


async def pg_execute(url: str, *statements: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def new_prefix() -> str:
    """A store key prefix no other test uses."""
    return f"authtest:{uuid.uuid4().hex[:12]}:"


def drop_prefix(prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (nothing to do for the in-process store)."""
    if not is_postgres():
        return
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def open_store(prefix: str) -> Store:
    """The store of the backend under test (the caller closes it)."""
    if not is_postgres():
        return MemoryStore(prefix=prefix)
    candidate = RedisStore.from_url(REDIS_URL, prefix=prefix)
    try:
        await candidate.ping()
    except Exception as exc:
        await candidate.close()
        unavailable(f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    return candidate


@asynccontextmanager
async def own_database(migrated_database: str, directory: Path) -> AsyncIterator[str]:
    """A database of its own at the newest revision, dropped afterwards: a copy of the
    template file (SQLite), or a new PostgreSQL database copied from the migrated one (or
    migrated itself if that one is in use)."""
    if not is_postgres():
        path = directory / "auth.db"
        shutil.copyfile(migrated_database.split(":///", 1)[1], path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"auth_test_{uuid.uuid4().hex[:12]}"
    template = migrated_database.rsplit("/", 1)[1]
    url = with_database(PG_ADMIN_URL, name)
    try:
        await pg_execute(PG_ADMIN_URL, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    except Exception:  # the template has a connection: migrate a new one instead
        await pg_execute(PG_ADMIN_URL, f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(upgrade_to_head, url)
    try:
        yield url
    finally:
        await pg_execute(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
