from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import create_async_engine

from auth_service.services.health import Health
from auth_service.services.keyring import KeySnapshot
from tests.support.service import Service


async def test_live(service: Service) -> None:
    response = await service.client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_everything_works(service: Service) -> None:
    response = await service.client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "store": "ok", "signing_key": "ok"},
    }


async def test_ready_names_a_failing_store(service: Service) -> None:
    await service.container.store.close()
    response = await service.client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "store": "failing", "signing_key": "ok"}
    assert body["error"] == "service_unavailable"
    assert body["error_description"] == "failing: store"


async def test_ready_names_a_failing_database(service: Service) -> None:
    container = service.container
    working = container.health
    unreachable = (
        "sqlite+aiosqlite:////nonexistent/dir/auth.db"
        if container.settings.is_sqlite
        else "postgresql+asyncpg://postgres@127.0.0.1:1/auth"
    )
    engine = create_async_engine(unreachable)
    container.health = Health(
        engine, container.store, container.keyring, container.clock, stale_after=timedelta(hours=1)
    )
    try:
        response = await service.client.get("/health/ready")
    finally:
        await engine.dispose()
        container.health = working
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "failing", "store": "ok", "signing_key": "ok"}
    assert response.json()["error_description"] == "failing: database"


async def test_ready_names_a_missing_signing_key(service: Service) -> None:
    service.container.keyring.replace(KeySnapshot())
    response = await service.client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["signing_key"] == "failing"
