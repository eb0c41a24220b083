"""Browser mode in a real browser: Debian's chromium, driven by Playwright, runs the page's own
``fetch`` calls against a served ``auth-service`` with ``AUTH_REFRESH_COOKIE=true``.

The app page is on ``http://localhost:<page port>``: the same site as the service at
``http://localhost:<port>``, another origin, listed in ``AUTH_CORS_ORIGINS``. The foreign page
is on ``http://127.0.0.1:<port>``: another site, not listed.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page

from tests.browser.conftest import BrowserSetup

REFRESH_COOKIE = "__Secure-refresh_token"
CSRF_COOKIE = "__Secure-csrf_token"
PAIR_FIELDS = {"access_token", "token_type", "expires_in", "refresh_expires_in", "csrf_token"}

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


async def call(page: Page, base: str, path: str, **options: Any) -> dict[str, Any]:
    """Run the page's ``authCall``: ``{status, body}``, or ``{error}`` if the fetch rejected."""
    result: dict[str, Any] = await page.evaluate(
        "([base, path, options]) => authCall(base, path, options)", [base, path, options]
    )
    return result


async def service_cookies(context: BrowserContext, host: str = "localhost") -> dict[str, Any]:
    """The cookies the browser holds for ``host`` (Playwright sees HttpOnly ones too)."""
    return {c["name"]: c for c in await context.cookies() if c["domain"].lstrip(".") == host}


async def open_page(context: BrowserContext, url: str) -> Page:
    page = await context.new_page()
    await page.goto(url)
    return page


def assert_browser_pair(answer: dict[str, Any], what: str) -> dict[str, Any]:
    assert answer.get("status") == 200, f"{what}: {answer}"
    body: dict[str, Any] = answer["body"]
    assert "refresh_token" not in body, f"{what}: the refresh token is in the body: {body}"
    assert body.keys() >= PAIR_FIELDS, f"{what}: {body}"
    assert body["token_type"] == "Bearer"
    assert body["access_token"] and body["csrf_token"]
    return body


async def assert_cookie_pair(
    context: BrowserContext, body: dict[str, Any], what: str
) -> dict[str, dict[str, Any]]:
    """Both cookies: HttpOnly, Secure, SameSite=Strict, Path=/auth, host-only, the refresh
    token's lifetime; the CSRF cookie's value is the body's csrf_token."""
    cookies = await service_cookies(context)
    assert {REFRESH_COOKIE, CSRF_COOKIE} <= cookies.keys(), f"{what}: {list(cookies.values())}"
    for name in (REFRESH_COOKIE, CSRF_COOKIE):
        cookie = cookies[name]
        assert cookie["httpOnly"] is True, f"{what}: {cookie}"
        assert cookie["secure"] is True, f"{what}: {cookie}"
        assert cookie["sameSite"] == "Strict", f"{what}: {cookie}"
        assert cookie["path"] == "/auth", f"{what}: {cookie}"
        assert cookie["domain"] == "localhost", f"{what}: not host-only: {cookie}"
        lifetime = cookie["expires"] - time.time()
        assert abs(lifetime - body["refresh_expires_in"]) < 120, f"{what}: {cookie}"
    assert cookies[CSRF_COOKIE]["value"] == body["csrf_token"], what
    return cookies


async def test_cookie_flow_from_a_same_site_origin(
    setup: BrowserSetup, context: BrowserContext
) -> None:
    page = await open_page(context, setup.app_page)
    base = setup.service
    credentials = {"email": setup.email, "password": setup.password}

    # 1. login: the pair without refresh_token, both cookies set, none readable by script.
    login = assert_browser_pair(await call(page, base, "/auth/login", body=credentials), "login")
    first = await assert_cookie_pair(context, login, "after login")
    visible = await page.evaluate("pageCookies()")
    assert "refresh_token" not in visible and "csrf_token" not in visible, visible

    # 2. refresh by the cookie and X-CSRF-Token, no body: everything rotates.
    refreshed = assert_browser_pair(
        await call(page, base, "/auth/refresh", csrf=login["csrf_token"]), "refresh"
    )
    assert refreshed["access_token"] != login["access_token"]
    assert refreshed["csrf_token"] != login["csrf_token"]
    second = await assert_cookie_pair(context, refreshed, "after refresh")
    assert second[REFRESH_COOKIE]["value"] != first[REFRESH_COOKIE]["value"]
    assert "refresh_token" not in await page.evaluate("pageCookies()")

    # 3. the same refresh without the header: 403 csrf_failed, readable; nothing rotated.
    refused = await call(page, base, "/auth/refresh")
    assert refused.get("status") == 403, refused
    assert refused["body"]["error"] == "csrf_failed", refused
    assert "error_description" in refused["body"], refused
    unchanged = await service_cookies(context)
    for name in (REFRESH_COOKIE, CSRF_COOKIE):
        assert unchanged[name]["value"] == second[name]["value"], f"{name} changed on a 403"

    # 3b. a page of a foreign site, with the cookies in the jar: it reads nothing, and
    # SameSite=Strict keeps the cookies off its requests (nor can it clear them). The simple
    # POST reaches the service without cookies: 401/422 (a cookie would have made it 403).
    foreign = await open_page(context, setup.foreign_page)
    mark = setup.log_mark()
    for options in ({"simple": True}, {"csrf": refreshed["csrf_token"]}):
        attempt = await call(foreign, base, "/auth/refresh", **options)
        assert attempt.get("error", "").startswith("TypeError"), (options, attempt)
    await foreign.close()
    served = setup.served_since(mark, expected=2)
    assert [(method, path) for method, path, _ in served] == [
        ("POST", "/auth/refresh"),
        ("OPTIONS", "/auth/refresh"),
    ], served
    assert served[0][2] in (401, 422) and served[1][2] == 400, served
    kept = await service_cookies(context)
    for name in (REFRESH_COOKIE, CSRF_COOKIE):
        assert kept[name]["value"] == second[name]["value"], f"{name} changed cross-site"

    # 4. logout with Bearer and X-CSRF-Token: 204, both cookies cleared, the session gone.
    logout = await call(
        page, base, "/auth/logout", bearer=refreshed["access_token"], csrf=refreshed["csrf_token"]
    )
    assert logout.get("status") == 204, logout
    left = await service_cookies(context)
    assert REFRESH_COOKIE not in left and CSRF_COOKIE not in left, list(left.values())
    after = await call(page, base, "/auth/refresh", csrf=refreshed["csrf_token"])
    assert after.get("status") in (401, 403), after
    # Revoked on the server, not only forgotten by the browser: the access token, and the
    # last refresh token (Playwright can read the HttpOnly cookie) in the body flow.
    async with httpx.AsyncClient(base_url=setup.direct, timeout=5) as client:
        me = await client.get(
            "/auth/me", headers={"Authorization": f"Bearer {refreshed['access_token']}"}
        )
        replay = await client.post(
            "/auth/refresh", json={"refresh_token": second[REFRESH_COOKIE]["value"]}
        )
    assert me.status_code == 401, me.text
    assert replay.status_code == 401, replay.text


async def test_a_foreign_site_reads_nothing(setup: BrowserSetup, context: BrowserContext) -> None:
    base = setup.service
    credentials = {"email": setup.email, "password": "not-the-password-at-all-4417"}

    # The control: the listed origin may read the service's answers (here without
    # credentials, which does not need browser mode).
    app = await open_page(context, setup.app_page)
    control = await call(app, base, "/auth/login", body=credentials, credentials="omit")
    assert control.get("status") == 401, control
    assert control["body"]["error"] == "invalid_credentials", control

    foreign = await open_page(context, setup.foreign_page)
    mark = setup.log_mark()
    logins: list[dict[str, Any]] = [
        {"body": {"email": setup.email, "password": setup.password}},  # preflighted
        {"body": credentials, "credentials": "omit"},  # preflighted too (JSON)
        {"simple": True, "body": credentials},  # text/plain, no preflight: sent
    ]
    for options in logins:
        attempt = await call(foreign, base, "/auth/login", **options)
        assert attempt.get("error", "").startswith("TypeError"), (options, attempt)
    refreshes: list[dict[str, Any]] = [{"simple": True}, {"csrf": "anything"}, {}]
    for options in refreshes:
        attempt = await call(foreign, base, "/auth/refresh", **options)
        assert attempt.get("error", "").startswith("TypeError"), (options, attempt)

    # What reached the service: the four preflights, refused; the two simple requests,
    # answered with an error the page never saw. The preflighted POSTs were never sent.
    served = setup.served_since(mark, expected=6)
    preflights = [line for line in served if line[0] == "OPTIONS"]
    posts = [line for line in served if line[0] == "POST"]
    assert len(preflights) == 4 and all(status == 400 for *_, status in preflights), served
    assert [path for _, path, _ in posts] == ["/auth/login", "/auth/refresh"], served
    assert all(status >= 400 for *_, status in posts), served
    assert await service_cookies(context) == {}, await context.cookies()
