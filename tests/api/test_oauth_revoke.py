"""POST /oauth/revoke (RFC 7009): who may revoke what, and that it lasts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from auth_service.container import Container
from auth_service.services.store_keys import INDEX_MARKER_KEY, jti_key
from tests.support.http import register_and_login, validate
from tests.support.oauth import form, new_client, service_token
from tests.support.service import Service, started


async def _revoke(service: Service, token: str, client: object) -> None:
    response = await form(service, "/oauth/revoke", {"token": token}, client)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"


async def test_a_client_revokes_its_own_service_token(service: Service) -> None:
    client = await new_client(service)
    token = await service_token(service, client)
    await _revoke(service, token, client)
    assert await validate(service, token, client.basic) == {
        "valid": False,
        "error": "token_revoked",
    }
    await _revoke(service, token, client)  # again: still 200


async def test_client_a_cannot_revoke_client_bs_token(service: Service) -> None:
    a = await new_client(service, name="a", scopes=["revoke"])  # even with the revoke scope
    b = await new_client(service, name="b")
    token = await service_token(service, b)
    await _revoke(service, token, a)
    assert (await validate(service, token, b.basic))["valid"] is True


async def test_without_the_revoke_scope_a_users_tokens_stay(service: Service) -> None:
    client = await new_client(service)
    user = await register_and_login(service)
    await _revoke(service, user.pair["access_token"], client)
    await _revoke(service, user.pair["refresh_token"], client)
    assert (await validate(service, user.pair["access_token"], client.basic))["valid"] is True
    refreshed = await service.client.post(
        "/auth/refresh", json={"refresh_token": user.pair["refresh_token"]}
    )
    assert refreshed.status_code == 200


async def test_with_the_revoke_scope_a_users_access_token_and_session_go(
    service: Service,
) -> None:
    backend = await new_client(service, name="fraud", scopes=["revoke"])
    user = await register_and_login(service)
    await _revoke(service, user.pair["access_token"], backend)
    assert (await validate(service, user.pair["access_token"], backend.basic))["valid"] is False
    refreshed = await service.client.post(
        "/auth/refresh", json={"refresh_token": user.pair["refresh_token"]}
    )
    assert refreshed.status_code == 401  # the session went with it


async def test_with_the_revoke_scope_a_refresh_token_ends_its_session(service: Service) -> None:
    backend = await new_client(service, name="fraud", scopes=["revoke"])
    user = await register_and_login(service)
    await _revoke(service, user.pair["refresh_token"], backend)
    verdict = await validate(service, user.pair["access_token"], backend.basic)
    assert verdict == {"valid": False, "error": "session_revoked"}
    refreshed = await service.client.post(
        "/auth/refresh", json={"refresh_token": user.pair["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_unknown_and_garbage_tokens_are_200(service: Service) -> None:
    client = await new_client(service)
    for token in ("x", "a.b.c", "A" * 4000, "eyJ.eyJ.sig"):
        await _revoke(service, token, client)


async def test_a_revoked_service_token_stays_revoked_when_the_store_loses_it(
    service: Service,
) -> None:
    """The database is the record: the store's entry and its index marker gone (a Redis
    restart without persistence), the rebuild brings the revocation back."""
    client = await new_client(service)
    token = await service_token(service, client)
    await _revoke(service, token, client)
    claims_jti = (await form(service, "/oauth/introspect", {"token": token}, client)).json()
    assert claims_jti == {"active": False}
    store = service.container.store
    keys = [key for key, _v, _t in await store.scan("revoked:jti:")]
    assert len(keys) == 1
    await store.delete(keys[0])
    await store.delete(INDEX_MARKER_KEY)
    assert await validate(service, token, client.basic) == {
        "valid": False,
        "error": "token_revoked",
    }
    assert keys[0].startswith(jti_key("")[: len("revoked:jti:")])


async def test_a_deleted_clients_tokens_stay_revoked_when_the_store_loses_them(
    service: Service,
) -> None:
    client, watcher = await new_client(service), await new_client(service, name="watcher")
    token = await service_token(service, client)
    await service.container.clients.delete(client.client_id)
    store = service.container.store
    for key, _value, _ttl in await store.scan("revoked:client:"):
        await store.delete(key)
    await store.delete(INDEX_MARKER_KEY)
    assert await validate(service, token, watcher.basic) == {
        "valid": False,
        "error": "token_revoked",
    }


async def test_a_revocation_on_one_instance_reaches_the_other_within_a_second(
    make_container: Callable[..., Container],
) -> None:
    async with started(make_container()) as a, started(make_container()) as b:
        client = await new_client(a)
        token = await service_token(a, client)
        assert (await validate(b, token, client.basic))["valid"] is True  # cached on B
        await _revoke(a, token, client)
        for _ in range(50):
            if (await validate(b, token, client.basic)) == {
                "valid": False,
                "error": "token_revoked",
            }:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("B still accepts the revoked token after a second")
