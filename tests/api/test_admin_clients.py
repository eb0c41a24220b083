"""Admin client management: create, list, delete, rotate-secret; and that a deleted client
or a retired secret stops authenticating at once on every instance."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.store import MemoryStore
from tests.support.backends import is_postgres
from tests.support.oauth import ServiceClient, form
from tests.support.rotation import admin_headers
from tests.support.service import Service, started

GRANT = {"grant_type": "client_credentials"}


async def _within_a_second(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(50):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within a second")


async def _create(service: Service, admin: dict[str, str], **body: object) -> ServiceClient:
    response = await service.client.post(
        "/admin/clients", json={"name": "billing", **body}, headers=admin
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return ServiceClient(created["client_id"], created["client_secret"])


async def _authenticates(service: Service, client: ServiceClient) -> bool:
    return (await form(service, "/oauth/token", GRANT, client)).status_code == 200


async def test_create_list_delete(service: Service) -> None:
    admin = await admin_headers(service)
    response = await service.client.post(
        "/admin/clients", json={"name": "billing", "scopes": ["a", "revoke"]}, headers=admin
    )
    assert response.status_code == 201
    created = response.json()
    assert created["client_id"].startswith("svc_") and len(created["client_secret"]) == 43
    assert created["scopes"] == ["a", "revoke"]
    listed = (await service.client.get("/admin/clients", headers=admin)).json()["clients"]
    assert [row["client_id"] for row in listed] == [created["client_id"]]
    assert "client_secret" not in listed[0] and "secret_hash" not in listed[0]
    path = f"/admin/clients/{created['client_id']}"
    assert (await service.client.delete(path, headers=admin)).status_code == 204
    assert (await service.client.delete(path, headers=admin)).status_code == 404
    assert (await service.client.get("/admin/clients", headers=admin)).json()["clients"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"name": "x", "scopes": ["has space"]},
        {"name": "x", "scopes": "a"},
        {"name": "x", "scopes": ["a"] * 33},
        {"name": "x", "scopes": ["ü"]},
    ],
)
async def test_bad_client_bodies_are_422(service: Service, body: dict[str, object]) -> None:
    admin = await admin_headers(service)
    response = await service.client.post("/admin/clients", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"


async def test_only_an_admin_manages_clients(service: Service) -> None:
    from tests.support.http import register_and_login

    user = await register_and_login(service)
    for method, path in (
        ("POST", "/admin/clients"),
        ("GET", "/admin/clients"),
        ("DELETE", "/admin/clients/svc_x"),
        ("POST", "/admin/clients/svc_x/rotate-secret"),
    ):
        response = await service.client.request(method, path, json={}, headers=user.bearer)
        assert response.status_code == 403, (method, path)
        assert (await service.client.request(method, path, json={})).status_code == 401


async def test_a_rotated_secret_overlaps_then_stops(service: Service, clock: FrozenClock) -> None:
    admin = await admin_headers(service)
    old = await _create(service, admin)
    assert await _authenticates(service, old)  # remembered by the authenticator
    rotated = await service.client.post(
        f"/admin/clients/{old.client_id}/rotate-secret",
        json={"overlap_seconds": 600},
        headers=admin,
    )
    assert rotated.status_code == 200, rotated.text
    new = ServiceClient(old.client_id, rotated.json()["client_secret"])
    assert rotated.json()["previous_secret_expires_at"] is not None
    assert await _authenticates(service, new)
    assert await _authenticates(service, old)  # within the overlap, both work
    clock.advance(timedelta(seconds=601))
    assert not await _authenticates(service, old)  # the overlap is over: not cached past it
    assert await _authenticates(service, new)


async def test_a_rotation_without_overlap_stops_the_old_secret_at_once(service: Service) -> None:
    admin = await admin_headers(service)
    old = await _create(service, admin)
    assert await _authenticates(service, old)
    rotated = await service.client.post(
        f"/admin/clients/{old.client_id}/rotate-secret",
        json={"overlap_seconds": 0},
        headers=admin,
    )
    assert rotated.json()["previous_secret_expires_at"] is None
    assert not await _authenticates(service, old)
    second = await service.client.post(
        f"/admin/clients/{old.client_id}/rotate-secret", headers=admin
    )
    assert second.status_code == 200  # no body: the default overlap
    bad = await service.client.post(
        f"/admin/clients/{old.client_id}/rotate-secret",
        json={"overlap_seconds": -1},
        headers=admin,
    )
    assert bad.status_code == 422


async def test_a_delete_on_one_instance_stops_the_client_on_another(
    make_container: Callable[..., Container],
) -> None:
    """Two instances on one database and store: B has the client's secret cached; A deletes
    the client; B refuses it within a second (the event), not when its cache lapses."""
    async with started(make_container()) as a, started(make_container()) as b:
        admin = await admin_headers(a)
        client = await _create(a, admin)
        assert await _authenticates(b, client)  # cached on B
        assert (
            await a.client.delete(f"/admin/clients/{client.client_id}", headers=admin)
        ).status_code == 204

        async def refused_on_b() -> bool:
            return not await _authenticates(b, client)

        await _within_a_second(refused_on_b)


async def test_a_rotation_on_one_instance_retires_the_secret_on_another(
    make_container: Callable[..., Container],
) -> None:
    async with started(make_container()) as a, started(make_container()) as b:
        admin = await admin_headers(a)
        client = await _create(a, admin)
        assert await _authenticates(b, client)
        await a.client.post(
            f"/admin/clients/{client.client_id}/rotate-secret",
            json={"overlap_seconds": 0},
            headers=admin,
        )

        async def refused_on_b() -> bool:
            return not await _authenticates(b, client)

        await _within_a_second(refused_on_b)


@pytest.mark.skipif(is_postgres(), reason="the in-process store of the embedded backend")
async def test_a_cli_delete_from_another_process_reaches_the_server(
    make_container: Callable[..., Container], clock: FrozenClock, redis_prefix: str
) -> None:
    async with started(make_container()) as service:
        admin = await admin_headers(service)
        client = await _create(service, admin)
        assert await _authenticates(service, client)
        cli = make_container(store=MemoryStore(prefix=redis_prefix))  # another process's store
        clock.advance(1)  # the CLI's change is later than the server's last look
        await cli.clients.delete(client.client_id)

        async def refused() -> bool:
            return not await _authenticates(service, client)

        await _within_a_second(refused)
        await cli.engine.dispose()
        cli.hasher.close()
