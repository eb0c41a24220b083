"""Browser mode: the refresh token in HttpOnly cookies, the CSRF double submit bound by HMAC.

Each attack is written as the request an attacker's page (or a sibling subdomain) would make.
The client speaks https (``Secure`` cookies are only sent over it, as a browser does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.crypto.csrf import CsrfBinding
from auth_service.settings import Settings
from tests.support.http import PASSWORD
from tests.support.mfa import code_at, enable_totp, password_step
from tests.support.service import Service, started

APP = "https://app.example.com"
ORIGIN = {"Origin": APP}
REFRESH = "__Secure-refresh_token"
CSRF = "__Secure-csrf_token"
Browser = Callable[..., Any]


def browser_service(container: Container) -> AbstractAsyncContextManager[Service]:
    return started(container, base_url="https://auth.example.com")


@pytest.fixture
async def svc(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> AsyncIterator[Service]:
    settings = make_settings(refresh_cookie=True, cors_origins=[APP])
    async with browser_service(make_container(settings)) as running:
        yield running


def set_cookies(response: httpx.Response) -> dict[str, Any]:
    """Each Set-Cookie of the response, parsed: name -> Morsel."""
    jar: dict[str, Any] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        jar.update(parsed)
    return jar


async def browser_login(service: Service, email: str = "alice@example.com") -> dict[str, Any]:
    created = await service.client.post(
        "/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert created.status_code == 201, created.text
    login = await service.client.post(
        "/auth/login", json={"email": email, "password": PASSWORD}, headers=ORIGIN
    )
    assert login.status_code == 200, login.text
    body: dict[str, Any] = login.json()
    return body


async def cookie_refresh(service: Service, csrf: str | bytes | None) -> httpx.Response:
    headers: dict[str, str | bytes] = {**ORIGIN}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return await service.client.post("/auth/refresh", headers=headers)


async def test_a_browser_login_sets_both_cookies_and_keeps_the_token_out_of_the_body(
    svc: Service,
) -> None:
    created = await svc.client.post(
        "/auth/register", json={"email": "a@example.com", "password": PASSWORD}
    )
    assert created.status_code == 201
    login = await svc.client.post(
        "/auth/login", json={"email": "a@example.com", "password": PASSWORD}, headers=ORIGIN
    )
    assert login.status_code == 200
    body = login.json()
    assert "refresh_token" not in body
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_expires_in",
        "csrf_token",
    }
    cookies = set_cookies(login)
    assert set(cookies) == {REFRESH, CSRF}
    for morsel in cookies.values():
        assert morsel["httponly"] is True
        assert morsel["secure"] is True
        assert morsel["samesite"] == "strict"
        assert morsel["path"] == "/auth"
        assert morsel["domain"] == ""  # host-only: no sibling subdomain receives it
        assert int(morsel["max-age"]) == body["refresh_expires_in"]
    assert cookies[CSRF].value == body["csrf_token"]
    assert login.headers["cache-control"] == "no-store"


async def test_a_client_without_an_origin_keeps_its_json_pair(svc: Service) -> None:
    await svc.client.post("/auth/register", json={"email": "b@example.com", "password": PASSWORD})
    login = await svc.client.post(
        "/auth/login", json={"email": "b@example.com", "password": PASSWORD}
    )
    assert "refresh_token" in login.json()
    assert login.headers.get_list("set-cookie") == []
    again = await svc.client.post(
        "/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
    )
    assert again.status_code == 200
    assert "refresh_token" in again.json()


async def test_the_cookie_refreshes_with_the_csrf_header_and_rotates_both(svc: Service) -> None:
    first = await browser_login(svc)
    refreshed = await cookie_refresh(svc, first["csrf_token"])
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert "refresh_token" not in body
    assert body["csrf_token"] != first["csrf_token"]
    assert set(set_cookies(refreshed)) == {REFRESH, CSRF}
    stale = await cookie_refresh(svc, first["csrf_token"])
    assert stale.status_code == 403
    assert stale.json()["error"] == "csrf_failed"
    assert (await cookie_refresh(svc, body["csrf_token"])).status_code == 200


@pytest.mark.parametrize("header", [None, "", "x" * 43, b"\xe9" * 43, "a" * 5000])
async def test_a_cookie_refresh_without_the_right_header_is_403_and_changes_nothing(
    svc: Service, header: str | bytes | None
) -> None:
    first = await browser_login(svc)
    refused = await cookie_refresh(svc, header)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "csrf_failed"
    assert refused.headers.get_list("set-cookie") == []
    assert (await cookie_refresh(svc, first["csrf_token"])).status_code == 200


async def test_a_planted_matching_pair_does_not_pass(svc: Service) -> None:
    """A sibling subdomain sets csrf_token=X and sends X in the header: equal, but not the
    HMAC of the victim's refresh token."""
    await browser_login(svc)
    planted = "A" * 43
    svc.client.cookies.set(CSRF, planted, domain="auth.example.com", path="/auth")
    refused = await cookie_refresh(svc, planted)
    assert refused.status_code == 403


async def _attackers_own_pair(svc: Service) -> tuple[str, str]:
    """A valid refresh/CSRF pair of the attacker's own session (from its own login)."""
    attacker = httpx.AsyncClient(transport=svc.client._transport, base_url=svc.client.base_url)
    async with attacker:
        await attacker.post(
            "/auth/register", json={"email": "mallory@example.com", "password": PASSWORD}
        )
        mine = await attacker.post(
            "/auth/login",
            json={"email": "mallory@example.com", "password": PASSWORD},
            headers=ORIGIN,
        )
        refresh = attacker.cookies.get(REFRESH)
    assert refresh is not None
    return refresh, str(mine.json()["csrf_token"])


async def test_a_csrf_pair_of_another_session_does_not_pass(svc: Service) -> None:
    """The attacker's own valid CSRF token (from its own login) against the victim's cookie."""
    victim = await browser_login(svc, "victim@example.com")
    _, theirs = await _attackers_own_pair(svc)
    svc.client.cookies.set(CSRF, theirs, domain="auth.example.com", path="/auth")
    assert (await cookie_refresh(svc, theirs)).status_code == 403
    assert theirs != victim["csrf_token"]


async def test_a_token_of_another_secret_does_not_pass(svc: Service) -> None:
    await browser_login(svc)
    refresh = svc.client.cookies.get(REFRESH)
    assert refresh is not None
    forged = CsrfBinding("another secret entirely, of some length").token_for(refresh)
    svc.client.cookies.set(CSRF, forged, domain="auth.example.com", path="/auth")
    assert (await cookie_refresh(svc, forged)).status_code == 403


async def test_a_reused_cookie_revokes_the_session_and_clears_the_cookies(
    svc: Service, clock: FrozenClock
) -> None:
    first = await browser_login(svc)
    old_refresh, old_csrf = svc.client.cookies.get(REFRESH), first["csrf_token"]
    assert (await cookie_refresh(svc, old_csrf)).status_code == 200
    clock.advance(60)  # past the reuse grace
    svc.client.cookies.clear()
    svc.client.cookies.set(REFRESH, str(old_refresh), domain="auth.example.com", path="/auth")
    svc.client.cookies.set(CSRF, old_csrf, domain="auth.example.com", path="/auth")
    reused = await cookie_refresh(svc, old_csrf)
    assert reused.status_code == 401
    assert reused.json()["error"] == "refresh_token_reused"
    cleared = set_cookies(reused)
    assert set(cleared) == {REFRESH, CSRF}
    assert all(int(morsel["max-age"]) == 0 for morsel in cleared.values())


async def test_logout_by_cookie_needs_the_header_and_revokes_the_session(svc: Service) -> None:
    first = await browser_login(svc)
    refused = await svc.client.post("/auth/logout", headers=ORIGIN)
    assert refused.status_code == 403
    done = await svc.client.post(
        "/auth/logout", headers={**ORIGIN, "X-CSRF-Token": first["csrf_token"]}
    )
    assert done.status_code == 204
    assert all(int(morsel["max-age"]) == 0 for morsel in set_cookies(done).values())
    me = await svc.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert me.status_code == 401  # the session is revoked, so its access token too


async def test_logout_by_bearer_clears_the_cookies(svc: Service) -> None:
    first = await browser_login(svc)
    done = await svc.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert done.status_code == 204
    assert set(set_cookies(done)) == {REFRESH, CSRF}
    after = await cookie_refresh(svc, first["csrf_token"])
    assert after.status_code == 401  # no cookie left: nothing to refresh with


async def test_logout_without_bearer_or_cookie_is_401(svc: Service) -> None:
    assert (await svc.client.post("/auth/logout", headers=ORIGIN)).status_code == 401


async def test_a_body_token_wins_over_the_cookie_and_needs_no_header(svc: Service) -> None:
    await svc.client.post("/auth/register", json={"email": "c@example.com", "password": PASSWORD})
    body_login = await svc.client.post(
        "/auth/login", json={"email": "c@example.com", "password": PASSWORD}
    )
    token = body_login.json()["refresh_token"]
    answer = await svc.client.post("/auth/refresh", json={"refresh_token": token}, headers=ORIGIN)
    assert answer.status_code == 200
    assert "refresh_token" in answer.json()


async def test_the_mfa_step_sets_the_cookies_too(svc: Service, clock: FrozenClock) -> None:
    user = await enable_totp(svc, clock)
    mfa_token = await password_step(svc, user.email)
    second = await svc.client.post(
        "/auth/login/mfa",
        json={"mfa_token": mfa_token, "code": code_at(user.secret, clock)},
        headers=ORIGIN,
    )
    assert second.status_code == 200, second.text
    assert "refresh_token" not in second.json()
    assert set(set_cookies(second)) == {REFRESH, CSRF}
    assert (await cookie_refresh(svc, second.json()["csrf_token"])).status_code == 200


async def test_path_slash_gives_host_prefixed_cookies(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(refresh_cookie=True, refresh_cookie_path="/")
    async with browser_service(make_container(settings)) as service:
        await browser_login(service)
        assert service.client.cookies.get("__Host-refresh_token") is not None
        assert service.client.cookies.get("__Host-csrf_token") is not None


async def test_with_browser_mode_off_a_cookie_is_ignored(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    async with browser_service(make_container(make_settings())) as service:
        login = await browser_login(service)
        assert "refresh_token" in login  # no browser mode: the JSON pair, Origin or not
        service.client.cookies.set(REFRESH, login["refresh_token"], domain="auth.example.com")
        refused = await service.client.post("/auth/refresh", json={}, headers=ORIGIN)
        assert refused.status_code == 422
        assert refused.json()["error"] == "invalid_request"


async def test_a_cookie_without_an_origin_still_needs_the_csrf_header(svc: Service) -> None:
    """The check guards the cookie, not the Origin: a request that omits Origin (a non-browser
    replaying stolen-by-proxy cookies, or a browser that strips it) is refused the same."""
    first = await browser_login(svc)
    bare = await svc.client.post("/auth/refresh")
    assert bare.status_code == 403
    assert bare.json()["error"] == "csrf_failed"
    good = await svc.client.post("/auth/refresh", headers={"X-CSRF-Token": first["csrf_token"]})
    assert good.status_code == 200
    assert "refresh_token" not in good.json()  # the cookie flow answers with cookies


@pytest.mark.parametrize("path", ["/auth/refresh", "/auth/logout"])
async def test_a_planted_duplicate_pair_does_not_lock_the_victim_out(
    svc: Service, path: str
) -> None:
    """Attack review: a sibling subdomain plants its own valid pair with Domain=example.com;
    the browser sends both pairs, the planted one last, and the server read only the last."""
    victim = await browser_login(svc, "victim@example.com")
    victim_refresh = svc.client.cookies.get(REFRESH)
    planted_refresh, planted_csrf = await _attackers_own_pair(svc)
    svc.client.cookies.clear()
    cookie = (
        f"{REFRESH}={victim_refresh}; {CSRF}={victim['csrf_token']}; "
        f"{REFRESH}={planted_refresh}; {CSRF}={planted_csrf}"
    )
    answer = await svc.client.post(
        path, headers={**ORIGIN, "X-CSRF-Token": victim["csrf_token"], "Cookie": cookie}
    )
    assert answer.status_code in (200, 204), answer.text
    me = await svc.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {victim['access_token']}"}
    )
    if path == "/auth/logout":
        assert me.status_code == 401  # the victim's session, not the planted one, ended
    else:
        assert me.json()["email"] == "victim@example.com"
        refreshed = answer.json()["access_token"]
        mine = await svc.client.get("/auth/me", headers={"Authorization": f"Bearer {refreshed}"})
        assert mine.json()["email"] == "victim@example.com"


@pytest.mark.parametrize("value", ["x" * 5000, "not a token!", "a" * 129])
async def test_a_malformed_refresh_cookie_is_401_and_cleared(svc: Service, value: str) -> None:
    """Attack review: a malformed cookie answered 401 "no cookie" or 403 and was never
    cleared, so the browser kept sending it."""
    svc.client.cookies.set(REFRESH, value, domain="auth.example.com", path="/auth")
    refused = await cookie_refresh(svc, None)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_refresh_token"
    cleared = set_cookies(refused)
    assert set(cleared) == {REFRESH, CSRF}
    assert all(int(morsel["max-age"]) == 0 for morsel in cleared.values())
