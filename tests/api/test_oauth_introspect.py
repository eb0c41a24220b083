"""POST /oauth/introspect (RFC 7662): what a gateway learns about a token, and what not."""

from __future__ import annotations

from datetime import timedelta

import pytest

from auth_service.clock import FrozenClock
from tests.support.http import register_and_login, sign_as_service
from tests.support.oauth import form, introspect, new_client, service_token
from tests.support.service import Service

INACTIVE = {"active": False}


async def test_a_live_user_token_shows_its_claims_and_username(service: Service) -> None:
    gateway = await new_client(service, name="gateway")
    user = await register_and_login(service, email="Alice@Example.com")
    body = await introspect(service, user.pair["access_token"], gateway)
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    assert body["sub"] == user.user_id
    assert body["username"] == "alice@example.com"
    assert body["iss"] == "https://auth.example.test"
    assert body["aud"] == "api.example.test"
    assert {"exp", "iat", "nbf", "jti"} <= set(body)
    assert "client_id" not in body and "scope" not in body


async def test_a_live_service_token_shows_its_client_and_scope(service: Service) -> None:
    gateway = await new_client(service, name="gateway")
    caller = await new_client(service, scopes=["orders:read"])
    body = await introspect(service, await service_token(service, caller), gateway)
    assert body["active"] is True
    assert body["client_id"] == body["sub"] == caller.client_id
    assert body["scope"] == "orders:read"
    assert "username" not in body


async def test_every_dead_token_is_active_false_and_nothing_else(
    service: Service, clock: FrozenClock
) -> None:
    gateway = await new_client(service, name="gateway")
    user = await register_and_login(service)
    foreign = sign_as_service(service, {"iss": "https://evil.example", "sub": "x", "sid": "s"})
    for token in ("", "x", "a.b.c", foreign, "not-a-refresh-token", "A" * 5000):
        response = await form(service, "/oauth/introspect", {"token": token}, gateway)
        if token == "":
            assert response.status_code == 400  # token is required
            continue
        assert response.json() == INACTIVE, token[:20]
    logout = await service.client.post("/auth/logout", headers=user.bearer)
    assert logout.status_code == 204
    assert await introspect(service, user.pair["access_token"], gateway) == INACTIVE
    other = await register_and_login(service, email="bob@example.com")
    clock.advance(timedelta(hours=2))
    assert await introspect(service, other.pair["access_token"], gateway) == INACTIVE


async def test_a_refresh_token_is_introspected_by_its_hash(service: Service) -> None:
    gateway = await new_client(service, name="gateway")
    user = await register_and_login(service)
    refresh = user.pair["refresh_token"]
    for hint in (None, "refresh_token", "access_token"):  # a wrong hint still finds it
        data = {"token": refresh, **({"token_type_hint": hint} if hint else {})}
        body = (await form(service, "/oauth/introspect", data, gateway)).json()
        assert body["active"] is True, hint
        assert body["token_type"] == "refresh_token"
        assert body["sub"] == user.user_id and body["username"] == user.email
        assert body["exp"] > body["iat"]
    used = await service.client.post("/auth/refresh", json={"refresh_token": refresh})
    assert used.status_code == 200
    assert await introspect(service, refresh, gateway) == INACTIVE  # used up
    assert (await introspect(service, used.json()["refresh_token"], gateway))["active"] is True


async def test_a_disabled_users_tokens_are_inactive(service: Service) -> None:
    import uuid

    gateway = await new_client(service, name="gateway")
    user = await register_and_login(service)
    await service.container.accounts.set_disabled(uuid.UUID(user.user_id), True)
    assert await introspect(service, user.pair["access_token"], gateway) == INACTIVE
    assert await introspect(service, user.pair["refresh_token"], gateway) == INACTIVE


async def test_a_deleted_client_cannot_introspect(service: Service) -> None:
    gateway = await new_client(service, name="gateway")
    user = await register_and_login(service)
    assert (await introspect(service, user.pair["access_token"], gateway))["active"] is True
    await service.container.clients.delete(gateway.client_id)
    response = await form(service, "/oauth/introspect", {"token": "x"}, gateway)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("path", ["/oauth/introspect", "/oauth/revoke"])
async def test_the_endpoints_need_a_client_and_a_form(service: Service, path: str) -> None:
    gateway = await new_client(service, name="gateway")
    assert (await service.client.post(path, data={"token": "x"})).status_code == 401
    as_json = await service.client.post(path, json={"token": "x"}, headers=gateway.basic)
    assert as_json.status_code == 415
    assert as_json.json()["error"] == "unsupported_media_type"
    assert as_json.headers["cache-control"] == "no-store"
    twice = await form(service, path, [("token", "a"), ("token", "b")], gateway)
    assert twice.status_code == 400
