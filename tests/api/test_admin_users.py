"""Admin users: search, detail, disable/enable, revoke-tokens, roles, MFA reset, and the
last-admin rule (also under a race)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from auth_service.clock import FrozenClock
from tests.support.http import PASSWORD, client_headers, mails, register_and_login, validate
from tests.support.mfa import assert_error, enable_totp
from tests.support.rotation import admin_headers
from tests.support.service import Service


@pytest.fixture
def service(mailing_service: Service) -> Service:
    return mailing_service


async def _admin_id(service: Service, admin: dict[str, str]) -> str:
    me = await service.client.get("/auth/me", headers=admin)
    return str(me.json()["id"])


async def test_search_by_normalised_prefix_pages_with_a_cursor(service: Service) -> None:
    admin = await admin_headers(service)
    for name in ("bob", "bea", "ben", "carol"):
        await service.container.accounts.register(
            email=f"{name}@example.com", password=PASSWORD, ip=None, limited=False
        )
    first = await service.client.get("/admin/users?email=B&limit=2", headers=admin)
    assert first.status_code == 200, first.text
    body = first.json()
    assert [row["email"] for row in body["users"]] == ["bea@example.com", "ben@example.com"]
    assert set(body["users"][0]) == {
        "id",
        "email",
        "roles",
        "disabled",
        "mfa_enabled",
        "created_at",
    }
    second = await service.client.get(
        "/admin/users",
        params={"email": "b", "limit": 2, "cursor": body["next_cursor"]},
        headers=admin,
    )
    assert [row["email"] for row in second.json()["users"]] == ["bob@example.com"]
    assert second.json()["next_cursor"] is None
    # The one normaliser: fullwidth letters and case find the stored address.
    whole = await service.client.get(
        "/admin/users", params={"email": "\uff22\uff2f\uff22@Example.COM"}, headers=admin
    )
    assert [row["email"] for row in whole.json()["users"]] == ["bob@example.com"]
    # LIKE's wildcards are literal in a prefix.
    wild = await service.client.get("/admin/users", params={"email": "%"}, headers=admin)
    assert wild.json()["users"] == []
    everyone = await service.client.get("/admin/users", headers=admin)
    assert len(everyone.json()["users"]) == 5


@pytest.mark.parametrize(
    "query",
    ["cursor=not-a-cursor", "limit=0", "limit=101", "cursor=W10", "email=%00", "email=a%00b"],
)
async def test_bad_search_queries_are_422(service: Service, query: str) -> None:
    admin = await admin_headers(service)
    response = await service.client.get(f"/admin/users?{query}", headers=admin)
    assert_error(response, 422, "invalid_request")


async def test_detail_shows_status_roles_mfa_sessions_and_last_login(
    service: Service, clock: FrozenClock
) -> None:
    admin = await admin_headers(service)
    mfa = await enable_totp(service, clock, "dora@example.com")
    response = await service.client.get(f"/admin/users/{mfa.user_id}", headers=admin)
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["email"] == "dora@example.com" and detail["mfa_enabled"] is True
    assert detail["disabled"] is False and detail["roles"] == []
    assert detail["active_sessions"] == 1 and detail["last_login_at"] is not None
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        assert_error(
            await service.client.get(f"/admin/users/{missing}", headers=admin), 404, "not_found"
        )


async def test_disable_refuses_tokens_at_once_and_enable_lets_the_user_log_in(
    service: Service,
) -> None:
    admin = await admin_headers(service)
    user = await register_and_login(service, "erin@example.com")
    client = await client_headers(service)
    path = f"/admin/users/{user.user_id}"
    assert (await service.client.post(f"{path}/disable", headers=admin)).status_code == 204
    verdict = await validate(service, user.pair["access_token"], client)
    assert verdict == {"valid": False, "error": "user_disabled"}
    login = await service.client.post(
        "/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert login.status_code == 403
    assert (await service.client.post(f"{path}/enable", headers=admin)).status_code == 204
    verdict = await validate(service, user.pair["access_token"], client)
    assert verdict["valid"] is False  # enabling does not bring the old tokens back
    login = await service.client.post(
        "/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert login.status_code == 200
    missing = f"/admin/users/{uuid.uuid4()}/disable"
    assert_error(await service.client.post(missing, headers=admin), 404, "not_found")


async def test_revoke_tokens_ends_every_session(service: Service) -> None:
    admin = await admin_headers(service)
    user = await register_and_login(service, "finn@example.com")
    client = await client_headers(service)
    path = f"/admin/users/{user.user_id}/revoke-tokens"
    assert (await service.client.post(path, headers=admin)).status_code == 204
    assert (await validate(service, user.pair["access_token"], client))["valid"] is False
    refresh = await service.client.post(
        "/auth/refresh", json={"refresh_token": user.pair["refresh_token"]}
    )
    assert refresh.status_code == 401
    detail = (await service.client.get(f"/admin/users/{user.user_id}", headers=admin)).json()
    assert detail["active_sessions"] == 0 and detail["disabled"] is False


async def test_removing_a_role_revokes_tokens_adding_one_does_not(service: Service) -> None:
    admin = await admin_headers(service)
    user = await register_and_login(service, "gail@example.com")
    client = await client_headers(service)
    path = f"/admin/users/{user.user_id}/roles"
    added = await service.client.put(
        path, json={"roles": ["billing", "audit", "billing"]}, headers=admin
    )
    assert added.status_code == 200, added.text
    assert added.json()["roles"] == ["audit", "billing"]
    assert (await validate(service, user.pair["access_token"], client))["valid"] is True
    refreshed = await service.client.post(
        "/auth/refresh", json={"refresh_token": user.pair["refresh_token"]}
    )
    assert refreshed.status_code == 200
    new_pair = refreshed.json()
    validated = await validate(service, new_pair["access_token"], client)
    assert validated["claims"]["roles"] == ["audit", "billing"]
    removed = await service.client.put(path, json={"roles": ["audit"]}, headers=admin)
    assert removed.status_code == 200 and removed.json()["active_sessions"] == 0
    assert (await validate(service, new_pair["access_token"], client))["valid"] is False


@pytest.mark.parametrize(
    "body", [{"roles": ["Admin"]}, {"roles": ["has space"]}, {"roles": "admin"}, {}]
)
async def test_bad_roles_are_422(service: Service, body: dict[str, object]) -> None:
    admin = await admin_headers(service)
    user = await register_and_login(service, "hank@example.com")
    response = await service.client.put(
        f"/admin/users/{user.user_id}/roles", json=body, headers=admin
    )
    assert_error(response, 422, "invalid_request")


async def test_the_last_admin_cannot_be_disabled_or_demoted(service: Service) -> None:
    admin = await admin_headers(service)
    me = await _admin_id(service, admin)
    assert_error(
        await service.client.post(f"/admin/users/{me}/disable", headers=admin), 409, "last_admin"
    )
    demote = await service.client.put(f"/admin/users/{me}/roles", json={"roles": []}, headers=admin)
    assert_error(demote, 409, "last_admin")
    other = await admin_headers(service, "second-admin@example.com")
    other_id = await _admin_id(service, other)
    assert (
        await service.client.post(f"/admin/users/{other_id}/disable", headers=admin)
    ).status_code == 204
    # A disabled admin does not count: the first is the last enabled one again.
    assert_error(
        await service.client.post(f"/admin/users/{me}/disable", headers=admin), 409, "last_admin"
    )


async def test_two_admins_demoting_each_other_at_once_leave_one(service: Service) -> None:
    first = await admin_headers(service, "a1@example.com")
    second = await admin_headers(service, "a2@example.com")
    first_id, second_id = await _admin_id(service, first), await _admin_id(service, second)
    answers = await asyncio.gather(
        service.client.put(f"/admin/users/{second_id}/roles", json={"roles": []}, headers=first),
        service.client.put(f"/admin/users/{first_id}/roles", json={"roles": []}, headers=second),
    )
    codes = sorted(answer.status_code for answer in answers)
    assert codes[0] == 200 and codes[1] in (401, 403, 409), codes
    rows = await service.container.admin_users.search(email=None, limit=10, cursor=None)
    assert sum("admin" in user.roles for user in rows.users) == 1


async def test_mfa_reset_turns_2fa_off_revokes_sessions_and_mails_the_user(
    service: Service, clock: FrozenClock, mail_file: Path
) -> None:
    admin = await admin_headers(service)
    mfa = await enable_totp(service, clock, "ivy@example.com")
    path = f"/admin/users/{mfa.user_id}/mfa/reset"
    assert (await service.client.post(path, headers=admin)).status_code == 204
    client = await client_headers(service)
    assert (await validate(service, mfa.user.pair["access_token"], client))["valid"] is False
    login = await service.client.post(
        "/auth/login", json={"email": mfa.email, "password": PASSWORD}
    )
    assert login.status_code == 200 and "access_token" in login.json()  # no second step now
    assert mails(mail_file)[-1]["to"] == mfa.email
    assert "reset" in mails(mail_file)[-1]["subject"]
    # The old recovery codes are gone with the secret.
    assert_error(await service.client.post(path, headers=admin), 409, "mfa_not_enabled")


async def test_only_a_current_admin_may_use_the_user_routes(
    service: Service, clock: FrozenClock
) -> None:
    user = await register_and_login(service, "jack@example.com")
    for method, path in [
        ("GET", "/admin/users"),
        ("GET", f"/admin/users/{user.user_id}"),
        ("POST", f"/admin/users/{user.user_id}/disable"),
        ("PUT", f"/admin/users/{user.user_id}/roles"),
        ("POST", f"/admin/users/{user.user_id}/mfa/reset"),
    ]:
        response = await service.client.request(
            method, path, headers=user.bearer, json={"roles": []}
        )
        assert_error(response, 403, "forbidden")
        assert (await service.client.request(method, path)).status_code == 401
    # A demoted admin's token stops working on the next request.
    admin = await admin_headers(service, "kim@example.com")
    other = await admin_headers(service, "lee@example.com")
    kim = await _admin_id(service, admin)
    assert (
        await service.client.put(f"/admin/users/{kim}/roles", json={"roles": []}, headers=other)
    ).status_code == 200
    assert (await service.client.get("/admin/users", headers=admin)).status_code in (401, 403)
