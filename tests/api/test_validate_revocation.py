"""POST /validate after revocations: jti, session, user disabled, revoke-all, key revoked, and a
revocation made through one instance seen by another at once (API.md "Tokens")."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import jwt
import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container, start, stop
from auth_service.services.keyring import KeySnapshot
from auth_service.services.revocation import mark_disabled
from auth_service.store import RedisStore, Store
from tests.support.backends import REDIS_URL, is_postgres
from tests.support.http import (
    PASSWORD,
    LoggedIn,
    client_headers,
    register_and_login,
    sign_as_service,
    validate,
)
from tests.support.mfa import claims as claims_of
from tests.support.service import Service


async def _login(service: Service, user: LoggedIn) -> dict[str, Any]:
    response = await service.client.post(
        "/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def user(service: Service) -> LoggedIn:
    return await register_and_login(service)


@pytest.fixture
async def headers(service: Service) -> dict[str, str]:
    return await client_headers(service)


async def _reason(service: Service, token: str, headers: dict[str, str]) -> str | None:
    body = await validate(service, token, headers)
    if body["valid"]:
        return None
    assert "claims" not in body, body
    return str(body["error"])


async def test_logout_revokes_the_presented_token(
    service: Service, user: LoggedIn, headers: dict[str, str]
) -> None:
    token = user.pair["access_token"]
    assert await _reason(service, token, headers) is None
    response = await service.client.post("/auth/logout", headers=user.bearer)
    assert response.status_code == 204
    assert await _reason(service, token, headers) == "token_revoked"


async def test_deleting_a_session_from_another_revokes_its_tokens(
    service: Service, user: LoggedIn, headers: dict[str, str]
) -> None:
    victim = user.pair["access_token"]
    other = (await _login(service, user))["access_token"]
    sid = claims_of(victim)["sid"]
    assert sid != claims_of(other)["sid"]
    response = await service.client.delete(f"/auth/sessions/{sid}", headers=_bearer(other))
    assert response.status_code == 204
    assert await _reason(service, victim, headers) == "session_revoked"
    assert await _reason(service, other, headers) is None


async def test_refresh_token_reuse_revokes_the_session(
    service: Service, user: LoggedIn, headers: dict[str, str], clock: FrozenClock
) -> None:
    original = user.pair["refresh_token"]
    rotated = await service.client.post("/auth/refresh", json={"refresh_token": original})
    assert rotated.status_code == 200, rotated.text
    newest = rotated.json()["access_token"]
    assert await _reason(service, newest, headers) is None
    clock.advance(11)  # past the reuse grace window
    reused = await service.client.post("/auth/refresh", json={"refresh_token": original})
    assert reused.status_code == 401 and reused.json()["error"] == "refresh_token_reused"
    for token in (user.pair["access_token"], newest):
        assert await _reason(service, token, headers) == "session_revoked"


async def test_a_disabled_user_is_refused_until_enabled(
    service: Service, user: LoggedIn, headers: dict[str, str]
) -> None:
    token = user.pair["access_token"]
    container = service.container
    policy = container.revocations.policy
    await mark_disabled(container.store, policy, user_id=user.user_id, disabled=True)
    assert await _reason(service, token, headers) == "user_disabled"
    await mark_disabled(container.store, policy, user_id=user.user_id, disabled=False)
    assert await _reason(service, token, headers) is None


async def test_logout_all_revokes_every_token_issued_up_to_then(
    service: Service, user: LoggedIn, headers: dict[str, str], clock: FrozenClock
) -> None:
    before = user.pair["access_token"]
    # Same user and key, a session that is NOT revoked: only the revoke-after rule can refuse it.
    claims = claims_of(before)
    unrevoked_session = sign_as_service(
        service, {**claims, "jti": "outside-any-session", "sid": "not-a-revoked-session"}
    )
    assert await _reason(service, unrevoked_session, headers) is None
    response = await service.client.post("/auth/logout-all", headers=user.bearer)
    assert response.status_code == 204
    # The real token's session is revoked as well; the contract does not rank the two reasons.
    assert await _reason(service, before, headers) in {"session_revoked", "token_revoked"}
    assert await _reason(service, unrevoked_session, headers) == "token_revoked"
    clock.advance(1)
    after = (await _login(service, user))["access_token"]
    assert claims_of(after)["iat"] > claims["iat"]
    assert await _reason(service, after, headers) is None


def _with_status(service: Service, kid: str, **changes: Any) -> None:
    keyring = service.container.keyring
    snapshot = keyring.snapshot
    keys = {**snapshot.keys, kid: dataclasses.replace(snapshot.keys[kid], **changes)}
    keyring.replace(dataclasses.replace(snapshot, keys=keys))
    assert isinstance(keyring.snapshot, KeySnapshot)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"status": "revoked"}, "key_revoked"),
        ({"status": "expired"}, "unknown_key"),
        ({"expires_at": "now"}, "unknown_key"),
    ],
)
async def test_a_key_status_change_is_enforced_even_for_a_cached_signature(
    service: Service,
    user: LoggedIn,
    headers: dict[str, str],
    changes: dict[str, Any],
    reason: str,
) -> None:
    token = user.pair["access_token"]
    assert await _reason(service, token, headers) is None  # verified once: signature cached
    kid = jwt.get_unverified_header(token)["kid"]
    if changes.get("expires_at") == "now":
        changes = {"expires_at": service.container.clock.now()}
    _with_status(service, kid, **changes)
    assert await _reason(service, token, headers) == reason


@pytest.fixture
async def second(
    service: Service, make_container: Callable[..., Container], store: Store, redis_prefix: str
) -> AsyncIterator[Container]:
    """Another running instance on the same database and store (own connection on Redis)."""
    async with AsyncExitStack() as stack:
        second_store = store
        if is_postgres():
            second_store = RedisStore.from_url(REDIS_URL, prefix=redis_prefix)
            stack.push_async_callback(second_store.close)
        container = make_container(store=second_store)
        await start(container)
        stack.push_async_callback(stop, container)
        yield container


async def test_a_revocation_through_one_instance_is_seen_by_another_at_once(
    service: Service, user: LoggedIn, second: Container
) -> None:
    token = user.pair["access_token"]
    assert (await second.validator.validate(token)).valid  # its signature is now cached there
    response = await service.client.post("/auth/logout", headers=user.bearer)
    assert response.status_code == 204
    verdict = await second.validator.validate(token)
    assert (verdict.valid, verdict.error) == (False, "token_revoked")
