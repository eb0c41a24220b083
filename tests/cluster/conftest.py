"""Fixtures and the marking hook of the three-process rotation tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import REDIS_URL, TEST_SECRET, is_postgres
from tests.support.cluster import Cluster, base_environment


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
