"""Attacks: authorisation from a token's stale claims. A demoted admin keeps /admin/* for the
token's lifetime; a disabled user's tokens keep validating. Authorisation reads current state,
on every instance within a second (two containers on one store here: two instances)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.db.models import User
from auth_service.settings import Settings
from tests.support.http import PASSWORD, client_headers, register_and_login, validate
from tests.support.mfa import assert_error, code_at, enable_totp
from tests.support.service import Service, started


async def _set_roles(container: Container, user_id: str, roles: list[str]) -> None:
    async with container.db.transaction() as db:
        user = await db.get(User, uuid.UUID(user_id))
        assert user is not None
        user.roles = roles


async def test_a_demoted_admin_loses_admin_at_once(service: Service) -> None:
    user = await register_and_login(service, "root@example.com")
    await _set_roles(service.container, user.user_id, ["admin"])
    login = await service.client.post(
        "/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert (await service.client.get("/admin/keys", headers=admin)).status_code == 200
    await _set_roles(service.container, user.user_id, [])
    # The token still says "admin"; the database does not.
    assert_error(await service.client.get("/admin/keys", headers=admin), 403, "forbidden")


async def test_a_disabled_admin_is_refused(service: Service) -> None:
    user = await register_and_login(service, "root@example.com")
    await _set_roles(service.container, user.user_id, ["admin"])
    await service.container.accounts.set_disabled(uuid.UUID(user.user_id), True)
    assert (await service.client.get("/admin/keys", headers=user.bearer)).status_code == 401


async def test_admins_need_a_second_factor_when_required(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
) -> None:
    async with started(make_container(make_settings(admin_require_mfa=True))) as service:
        mfa = await enable_totp(service, clock, "root@example.com")
        await _set_roles(service.container, mfa.user.user_id, ["admin"])
        # The token that enrolled was issued after a password only.
        refused = await service.client.get("/admin/keys", headers=mfa.user.bearer)
        assert_error(refused, 403, "forbidden")
        step = await service.client.post(
            "/auth/login", json={"email": "root@example.com", "password": PASSWORD}
        )
        pair = await service.client.post(
            "/auth/login/mfa",
            json={"mfa_token": step.json()["mfa_token"], "code": code_at(mfa.secret, clock)},
        )
        bearer = {"Authorization": f"Bearer {pair.json()['access_token']}"}
        assert (await service.client.get("/admin/keys", headers=bearer)).status_code == 200


def test_admin_mfa_is_required_by_default_in_production_only(
    make_settings: Callable[..., Settings],
) -> None:
    assert make_settings().admin_mfa_required is False
    assert make_settings(environment="production").admin_mfa_required is True
    assert (
        make_settings(environment="production", admin_require_mfa=False).admin_mfa_required is False
    )


async def _eventually(check: Callable[[], object], seconds: float = 1.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if await check():  # type: ignore[misc]
            return
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def test_disabling_a_user_stops_every_token_on_every_instance(
    make_container: Callable[..., Container], clock: FrozenClock
) -> None:
    async with started(make_container()) as a, started(make_container()) as b:
        user = await register_and_login(a)
        headers_a, headers_b = await client_headers(a), await client_headers(b, "other")
        assert (await validate(b, user.pair["access_token"], headers_b))["valid"] is True
        await a.container.accounts.set_disabled(uuid.UUID(user.user_id), True)

        async def refused_on(service: Service, headers: dict[str, str]) -> bool:
            verdict = await validate(service, user.pair["access_token"], headers)
            return verdict == {"valid": False, "error": "user_disabled"}

        await _eventually(lambda: refused_on(a, headers_a))
        await _eventually(lambda: refused_on(b, headers_b))
        assert (await b.client.get("/auth/me", headers=user.bearer)).status_code == 401
        refresh = await b.client.post(
            "/auth/refresh", json={"refresh_token": user.pair["refresh_token"]}
        )
        assert refresh.status_code == 401
        login = await b.client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
        assert_error(login, 403, "account_disabled")

        clock.advance(1)  # revoke-after is in whole seconds, like iat
        await a.container.accounts.set_disabled(uuid.UUID(user.user_id), False)
        again = await b.client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
        assert again.status_code == 200
        # The tokens from before the disable stay revoked.
        old = await validate(b, user.pair["access_token"], headers_b)
        assert old["valid"] is False
        fresh = await validate(b, again.json()["access_token"], headers_b)
        assert fresh["valid"] is True
