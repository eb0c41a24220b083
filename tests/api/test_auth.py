"""The frontend endpoints as a browser and an attacker use them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import update

from auth_service.app import create_app
from auth_service.container import Container
from auth_service.db.models import User
from auth_service.settings import Settings
from tests.support.http import PASSWORD, client_headers, register_and_login, validate
from tests.support.service import Service


async def test_register_normalises_the_email(service: Service) -> None:
    response = await service.client.post(
        "/auth/register", json={"email": "  Bob@Example.COM ", "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "bob@example.com"
    assert set(body) == {"id", "email", "created_at"}
    again = await service.client.post(
        "/auth/register", json={"email": "BOB@example.com", "password": PASSWORD}
    )
    assert again.status_code == 409
    assert again.json()["error"] == "email_taken"


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short", "weak_password"),
        ("1QAZ2wsx3edc", "weak_password"),
        ("alice@example.com", "weak_password"),
        ("x" * 1025, "weak_password"),
    ],
)
async def test_register_refuses_weak_passwords(service: Service, password: str, code: str) -> None:
    response = await service.client.post(
        "/auth/register", json={"email": "alice@example.com", "password": password}
    )
    assert response.status_code == 422
    assert response.json()["error"] == code


@pytest.mark.parametrize(
    "body", [{}, {"email": "a@example.com"}, {"email": 5, "password": PASSWORD}]
)
async def test_register_with_a_bad_body_is_invalid_request(
    service: Service, body: dict[str, object]
) -> None:
    response = await service.client.post("/auth/register", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


@pytest.fixture
async def closed(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container=make_container(make_settings(registration_open=False)))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield client


async def test_registration_can_be_closed(closed: httpx.AsyncClient) -> None:
    response = await closed.post(
        "/auth/register", json={"email": "d@example.com", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "registration_closed"


async def test_unknown_email_and_wrong_password_look_the_same(service: Service) -> None:
    await register_and_login(service)
    wrong = await service.client.post(
        "/auth/login", json={"email": "alice@example.com", "password": "wrong password!!"}
    )
    unknown = await service.client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.content == unknown.content
    assert wrong.json()["error"] == "invalid_credentials"


async def test_a_disabled_account_is_refused_only_with_the_right_password(service: Service) -> None:
    await register_and_login(service)
    async with service.container.db.writer() as db, db.begin():
        await db.execute(update(User).values(disabled=True))
    right = await service.client.post(
        "/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert right.status_code == 403
    assert right.json()["error"] == "account_disabled"
    wrong = await service.client.post(
        "/auth/login", json={"email": "alice@example.com", "password": "not the password"}
    )
    assert wrong.json()["error"] == "invalid_credentials"


async def test_login_failures_are_limited_per_account_and_ip(service: Service) -> None:
    await register_and_login(service)
    for _ in range(5):
        failed = await service.client.post(
            "/auth/login", json={"email": "alice@example.com", "password": "guess guess guess"}
        )
        assert failed.status_code == 401
    limited = await service.client.post(
        "/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 900
    # another email is unaffected by alice's counter
    other = await service.client.post(
        "/auth/login", json={"email": "other@example.com", "password": PASSWORD}
    )
    assert other.status_code == 401


async def test_a_successful_login_resets_the_failure_count(service: Service) -> None:
    await register_and_login(service)
    for _ in range(3):
        await service.client.post(
            "/auth/login", json={"email": "alice@example.com", "password": "guess guess guess"}
        )
    assert (
        await service.client.post(
            "/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
    ).status_code == 200
    for _ in range(5):
        failed = await service.client.post(
            "/auth/login", json={"email": "alice@example.com", "password": "guess guess guess"}
        )
        assert failed.status_code == 401


async def test_me_and_the_token_claims(service: Service) -> None:
    user = await register_and_login(service)
    me = await service.client.get("/auth/me", headers=user.bearer)
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    assert me.json()["roles"] == [] and me.json()["mfa_enabled"] is False
    no_token = await service.client.get("/auth/me")
    assert no_token.status_code == 401
    assert no_token.json()["error"] == "invalid_token"
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    garbage = await service.client.get("/auth/me", headers={"Authorization": "Bearer x.y.z"})
    assert garbage.status_code == 401


async def test_logout_revokes_the_session_and_the_access_token(service: Service) -> None:
    user = await register_and_login(service)
    headers = await client_headers(service)
    assert (await service.client.post("/auth/logout", headers=user.bearer)).status_code == 204
    assert await validate(service, user.pair["access_token"], headers) == {
        "valid": False,
        "error": "token_revoked",
    }
    assert (await service.client.get("/auth/me", headers=user.bearer)).status_code == 401


async def test_sessions_list_and_delete(service: Service) -> None:
    first = await register_and_login(service)
    second_login = await service.client.post(
        "/auth/login",
        json={"email": "alice@example.com", "password": PASSWORD},
        headers={"User-Agent": "phone/" + "x" * 1000},
    )
    second = second_login.json()
    listed = (await service.client.get("/auth/sessions", headers=first.bearer)).json()["sessions"]
    assert len(listed) == 2
    assert [s["current"] for s in listed].count(True) == 1
    phone = next(s for s in listed if not s["current"])
    assert phone["user_agent"].startswith("phone/") and len(phone["user_agent"]) == 512
    assert (
        await service.client.delete(f"/auth/sessions/{phone['id']}", headers=first.bearer)
    ).status_code == 204
    headers = await client_headers(service)
    assert (await validate(service, second["access_token"], headers))["error"] == "session_revoked"
    again = await service.client.delete(f"/auth/sessions/{phone['id']}", headers=first.bearer)
    assert again.status_code == 404


async def test_a_user_cannot_delete_another_users_session(service: Service) -> None:
    alice = await register_and_login(service)
    mallory = await register_and_login(service, email="mallory@example.com")
    sid = (await service.client.get("/auth/sessions", headers=alice.bearer)).json()["sessions"][0][
        "id"
    ]
    response = await service.client.delete(f"/auth/sessions/{sid}", headers=mallory.bearer)
    assert response.status_code == 404
    assert (await service.client.get("/auth/me", headers=alice.bearer)).status_code == 200


async def test_logout_all_revokes_every_session_and_token(service: Service) -> None:
    first = await register_and_login(service)
    second = (
        await service.client.post(
            "/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
    ).json()
    assert (await service.client.post("/auth/logout-all", headers=first.bearer)).status_code == 204
    headers = await client_headers(service)
    for token in (first.pair["access_token"], second["access_token"]):
        assert (await validate(service, token, headers))["valid"] is False
    refreshed = await service.client.post(
        "/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert refreshed.json()["error"] == "invalid_refresh_token"
    service.container.clock.advance(1)
    fresh = (
        await service.client.post(
            "/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
    ).json()
    assert (await validate(service, fresh["access_token"], headers))["valid"] is True
