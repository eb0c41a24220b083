"""Attacks on the login limits: forged X-Forwarded-For, spraying one account from many IPs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from auth_service.app import create_app
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import PASSWORD

WRONG = {"email": "alice@example.com", "password": "a wrong password guess"}
RIGHT = {"email": "alice@example.com", "password": PASSWORD}


@pytest.fixture
def client_for(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> Callable[..., Any]:
    """An app on its own settings; the in-process client's peer address is 127.0.0.1."""

    def build(**overrides: Any) -> Any:
        app = create_app(container=make_container(make_settings(**overrides)))

        async def clients() -> AsyncIterator[httpx.AsyncClient]:
            transport = httpx.ASGITransport(app=app)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://t") as client,
            ):
                created = await client.post("/auth/register", json=RIGHT)
                assert created.status_code == 201
                yield client

        return clients()

    return build


async def _login(client: httpx.AsyncClient, body: dict[str, str], forwarded: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return (await client.post("/auth/login", json=body, headers=headers)).status_code


async def test_a_forged_forwarded_for_does_not_reset_the_per_ip_limit(
    client_for: Callable[..., Any],
) -> None:
    async for client in client_for():  # no trusted proxy: the header is not believed
        for attempt in range(5):
            assert await _login(client, WRONG, f"203.0.113.{attempt}") == 401
        assert await _login(client, RIGHT, "203.0.113.99") == 429


async def test_behind_a_trusted_proxy_each_client_ip_has_its_own_limit(
    client_for: Callable[..., Any],
) -> None:
    async for client in client_for(trusted_proxies="127.0.0.1"):
        for _ in range(5):
            assert await _login(client, WRONG, "198.51.100.7") == 401
        assert await _login(client, WRONG, "198.51.100.7") == 429
        assert (
            await _login(client, RIGHT, "198.51.100.8") == 200
        )  # another client is not locked out
        # A hop the client prepends itself is not believed: the proxy's last hop counts.
        assert await _login(client, WRONG, "192.0.2.1, 198.51.100.7") == 429


async def test_spraying_one_account_from_many_ips_hits_the_account_limit(
    client_for: Callable[..., Any],
) -> None:
    async for client in client_for(trusted_proxies="127.0.0.1", login_account_failure_limit=3):
        for attempt in range(3):
            assert await _login(client, WRONG, f"198.51.100.{attempt}") == 401
        response = await client.post(
            "/auth/login", json=RIGHT, headers={"X-Forwarded-For": "198.51.100.50"}
        )
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
