"""Fixtures and helpers of the three-process rotation tests."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Cluster,
    Instance,
    base_environment,
    finish_bootstrap,
    login,
    row_with,
    start_bootstrap,
)
from tests.conftest import REDIS_URL, TEST_SECRET, is_postgres

MARGIN = 0.2
PROPAGATION = 1.0  # a key change reaches every instance within this many seconds
# With the 1 s key-cache refresh timer, a lost "keys changed" event would still meet that
# deadline. The revocation test needs no old next key, so it sets the timer far beyond the
# test's length: only the event can reach the other instances in time.
EVENT_ONLY = {"AUTH_KEY_CACHE_REFRESH_SECONDS": "60"}
POLL = 0.05
ROTATE_EVERY = 1.5
RUN_SECONDS = 8.0
LAST_KEY_SECONDS = 2.0
MIN_VALIDATIONS = 500
MAX_RUN_SECONDS = 20.0
VALIDATORS = 3  # concurrent validation loops (more only contend for the two test CPUs)
PASSWORD = "Cluster test pass 0001 xq"
ONE_ROTATION = Counter(active=1, next=1, retired=1)

SCHEDULED_ROTATION = {
    "AUTH_SCHEDULER_ENABLED": "true",
    "AUTH_KEY_CHECK_INTERVAL_SECONDS": "0.5",
    "AUTH_KEY_ROTATION_INTERVAL_HOURS": "0.002",
}
ROTATION_INTERVAL = timedelta(hours=0.002)  # 7.2 s


@pytest.fixture
def environment(database_url: str, redis_prefix: str) -> dict[str, str]:
    return base_environment(database_url, REDIS_URL, redis_prefix, TEST_SECRET)


@pytest.fixture
def cluster(environment: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(environment, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@dataclass(frozen=True)
class Booted:
    instances: list[Instance]
    admin: str  # an admin's access token
    client_auth: tuple[str, str]  # HTTP Basic credentials of a service client
    ready_at: float  # time.monotonic() once every instance was ready


async def boot(
    cluster: Cluster,
    http: httpx.AsyncClient,
    count: int = 3,
    overrides: dict[str, str] | None = None,
) -> Booted:
    """Start ``count`` instances (the admin and a client are created meanwhile); log in."""
    bootstrap = start_bootstrap(cluster.env, cluster.workdir)
    try:
        instances = cluster.start(count, **(overrides or {}))
    finally:
        client_auth = finish_bootstrap(bootstrap)
    ready_at = time.monotonic()
    admin = await login(http, instances[0].base, ADMIN_EMAIL, ADMIN_PASSWORD)
    return Booted(instances, admin, client_auth, ready_at)


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def until_next_key_may_sign(rows: list[dict[str, Any]], refresh_seconds: float) -> None:
    """Sleep until the ``next`` key is older than JWKS max-age (0) + the key-cache refresh."""
    ready = parse_time(row_with(rows, "next")["created_at"]) + timedelta(seconds=refresh_seconds)
    await asyncio.sleep(max(0.0, (ready - utc_now()).total_seconds() + MARGIN))


# -- 1 ------------------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here starts real processes on PostgreSQL + Redis (one process is the
    embedded default's whole design, covered by the in-process lifecycle tests)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.slow)
            item.add_marker(
                pytest.mark.skipif(
                    not is_postgres(), reason="three processes need PostgreSQL and Redis"
                )
            )
