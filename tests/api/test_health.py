from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

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
    working = service.container.engine
    unreachable = (
        "sqlite+aiosqlite:////nonexistent/dir/auth.db"
        if service.container.settings.is_sqlite
        else "postgresql+asyncpg://postgres@127.0.0.1:1/auth"
    )
    service.container.engine = create_async_engine(unreachable)
    try:
        response = await service.client.get("/health/ready")
    finally:
        await service.container.engine.dispose()
        service.container.engine = working
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "failing", "store": "ok", "signing_key": "ok"}
    assert response.json()["error_description"] == "failing: database"


async def test_ready_names_a_missing_signing_key(service: Service) -> None:
    service.container.keyring.replace(KeySnapshot())
    response = await service.client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["signing_key"] == "failing"
