"""POST /auth/refresh on DirectRoute and the lane answers as the route FastAPI ran did.

The oracle is the route as it was declared before (``reference`` below, FastAPI's dependency
solving, optional body and response model, on the ``JsonRoute`` class), mounted beside it on the
same app: each request goes to both and the answers are compared, status, body and headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import Request, Response

from auth_service.api.browser import BrowserDep
from auth_service.api.deps import SessionsDep
from auth_service.api.fast_lane import FastLane
from auth_service.api.routing import JsonRoute
from auth_service.api.schemas.auth import BrowserTokenPairOut, RefreshRequest, TokenPairOut
from auth_service.container import Container
from auth_service.errors import InvalidRefreshTokenError, InvalidRequestError, UnauthorizedError
from auth_service.settings import Settings
from tests.support.http import PASSWORD, register_and_login
from tests.support.service import Service, started

REFERENCE = "/auth/refresh-reference"
JSON = {"Content-Type": "application/json"}


async def reference(
    request: Request, sessions: SessionsDep, browser: BrowserDep, body: RefreshRequest | None = None
) -> Response | TokenPairOut:
    """The route as FastAPI ran it (the code before DirectRoute)."""
    if body is not None and body.refresh_token is not None:
        pair = await sessions.refresh(body.refresh_token)
        return TokenPairOut(
            access_token=pair.access_token,
            token_type=pair.token_type,
            expires_in=pair.expires_in,
            refresh_token=pair.refresh_token,
            refresh_expires_in=pair.refresh_expires_in,
        )
    candidates = browser.cookie_tokens(request)
    if candidates is None:
        if browser.enabled:
            raise InvalidRefreshTokenError("No refresh token: neither in the body nor a cookie.")
        raise InvalidRequestError("refresh_token: Field required")
    if not candidates:
        return browser.refused(InvalidRefreshTokenError("The refresh cookie is malformed."))
    from_cookie = browser.authenticated(request, candidates)
    try:
        return browser.token_answer(await sessions.refresh(from_cookie))
    except UnauthorizedError as exc:
        return browser.refused(exc)


def with_reference(service: Service) -> Service:
    service.app.router.add_api_route(
        REFERENCE,
        reference,
        methods=["POST"],
        route_class_override=JsonRoute,
        response_model=TokenPairOut | BrowserTokenPairOut,
    )
    return service


def shape(response: httpx.Response, *, exact: bool = True) -> tuple[Any, ...]:
    ids = response.headers.get_list("x-request-id")
    assert len(ids) == 1, ids
    names = sorted(name for name in response.headers if name != "x-request-id")
    if not exact:  # a fresh pair each time: the same fields, the same headers
        cookies = sorted(c.split("=", 1)[0] for c in response.headers.get_list("set-cookie"))
        return response.status_code, list(response.json()), names, cookies
    headers = sorted((n, v) for n, v in response.headers.items() if n != "x-request-id")
    return response.status_code, response.content, headers


async def both(
    service: Service, content: bytes | None, headers: dict[str, str], *, exact: bool = True
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    direct = await service.client.post("/auth/refresh", content=content, headers=headers)
    routed = await service.client.post(REFERENCE, content=content, headers=headers)
    return shape(direct, exact=exact), shape(routed, exact=exact)


BAD_BODIES: list[tuple[bytes | None, dict[str, str], int]] = [
    (None, {}, 422),  # no body, not in browser mode: refresh_token required
    (b"", JSON, 422),
    (b"null", JSON, 422),
    (b"{}", JSON, 422),
    (b'{"refresh_token": null}', JSON, 422),
    (b"[]", JSON, 422),
    (b'"a token"', JSON, 422),
    (b'{"refresh_token": 5}', JSON, 422),
    (b'{"refresh_token": "' + b"a" * 1025 + b'"}', JSON, 422),
    (b'{"refresh_token": NaN}', JSON, 422),
    (b"not json", JSON, 422),
    (b"\xff\xfe\x00{", JSON, 422),  # not text
    (b"[" * 50_000, JSON, 422),  # nested beyond the parser's depth
    (b'{"refresh_token": "nope"}', {"Content-Type": "text/plain"}, 415),
    (b'{"refresh_token": "nope"}', {}, 415),
    (b'{"refresh_token": "nope"}', {"Content-Type": "application/foo/+json"}, 415),
    (b'{"refresh_token": "nope"}', {"Content-Type": "application/problem+json"}, 401),
    (b'{"refresh_token": ""}', JSON, 401),
    (b'{"refresh_token": "nope", "extra": 1}', JSON, 401),
    (b'{"refresh_token": "' + b"a" * 200 + b'"}', JSON, 401),
]


@pytest.mark.parametrize(("content", "headers", "status"), BAD_BODIES)
async def test_a_bad_request_gets_the_routes_answer(
    service: Service, content: bytes | None, headers: dict[str, str], status: int
) -> None:
    direct, routed = await both(with_reference(service), content, headers)
    assert direct[0] == status, direct
    assert direct == routed


async def test_a_good_token_and_its_replays_get_the_routes_answers(service: Service) -> None:
    with_reference(service)
    first = (await register_and_login(service)).pair["refresh_token"]
    second = (await register_and_login(service, "bob@example.com")).pair["refresh_token"]
    direct = await service.client.post("/auth/refresh", json={"refresh_token": first})
    routed = await service.client.post(REFERENCE, json={"refresh_token": second})
    assert direct.status_code == routed.status_code == 200, (direct.text, routed.text)
    assert shape(direct, exact=False) == shape(routed, exact=False)
    assert direct.content.startswith(b'{"access_token":"')
    # Within the grace period each path gives the very pair it gave; beyond it, reuse.
    again = await service.client.post("/auth/refresh", json={"refresh_token": first})
    assert again.json() == direct.json()
    old = (await register_and_login(service, "carol@example.com")).pair["refresh_token"]
    used = await service.client.post(REFERENCE, json={"refresh_token": old})
    assert used.status_code == 200
    newer = used.json()["refresh_token"]
    assert (await service.client.post("/auth/refresh", json={"refresh_token": newer})).is_success
    # ``old``'s successor is used now: a replay of ``old`` is reuse, whichever path answers
    reused = await service.client.post("/auth/refresh", json={"refresh_token": old})
    assert reused.status_code == 401
    assert reused.json()["error"] == "refresh_token_reused"


@pytest.fixture
async def browser(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> AsyncIterator[Service]:
    settings = make_settings(refresh_cookie=True)  # no CORS: the lane takes Origin requests
    async with started(make_container(settings), base_url="https://auth.example.com") as running:
        yield with_reference(running)


async def browser_pair(service: Service, email: str) -> tuple[str, str]:
    created = await service.client.post(
        "/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert created.status_code == 201, created.text
    login = await service.client.post(
        "/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"Origin": "https://app.example.com"},
    )
    assert login.status_code == 200, login.text
    refresh = login.cookies["__Secure-refresh_token"]
    return refresh, login.json()["csrf_token"]


def cookie_headers(refresh: str, csrf: str, header: str | None) -> dict[str, str]:
    cookie = f"__Secure-refresh_token={refresh}; __Secure-csrf_token={csrf}"
    return {"Cookie": cookie, **({"X-CSRF-Token": header} if header is not None else {})}


async def test_browser_mode_gets_the_routes_answers(browser: Service) -> None:
    browser.client.cookies.clear()
    direct, routed = await both(browser, None, {})
    assert direct[0] == 401 and direct == routed
    direct, routed = await both(browser, None, {"Cookie": "__Secure-refresh_token=a b!"})
    assert direct[0] == 401 and direct == routed  # malformed: refused, both cookies cleared
    refresh, csrf = await browser_pair(browser, "alice@example.com")
    browser.client.cookies.clear()
    direct, routed = await both(browser, None, cookie_headers(refresh, csrf, None))
    assert direct[0] == 403 and direct == routed
    direct, routed = await both(browser, None, cookie_headers(refresh, csrf, "forged"))
    assert direct[0] == 403 and direct == routed
    answers = []
    for path, email in (("/auth/refresh", "bob@example.com"), (REFERENCE, "carol@example.com")):
        refresh, csrf = await browser_pair(browser, email)
        browser.client.cookies.clear()
        answer = await browser.client.post(path, headers=cookie_headers(refresh, csrf, csrf))
        assert answer.status_code == 200, answer.text
        answers.append(shape(answer, exact=False))
    assert answers[0] == answers[1]


async def test_the_lane_answers_refresh(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[str] = []
    serve = FastLane.serve

    async def spy(self: FastLane, app: Any, route: Any, scope: Any, *rest: Any) -> bool:
        taken = await serve(self, app, route, scope, *rest)
        if taken:
            answered.append(scope["path"])
        return taken

    monkeypatch.setattr(FastLane, "serve", spy)
    await service.client.post("/auth/refresh", json={"refresh_token": "nope"})
    await service.client.post("/auth/logout", json={})
    assert answered == ["/auth/refresh"]


async def test_a_client_that_leaves_mid_body_gets_the_routes_422_not_a_500(
    service: Service,
) -> None:
    """Attack review: part of a body, then the client is gone. FastAPI answered 422 (a body it
    could not read); the direct endpoint must not let the disconnect become a 500."""
    with_reference(service)
    answers = {}
    for path in ("/auth/refresh", REFERENCE):
        messages = [
            {"type": "http.request", "body": b'{"refresh_token":', "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict[str, Any]] = []

        async def receive(pending: list[dict[str, Any]] = messages) -> dict[str, Any]:
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def send(message: dict[str, Any], out: list[dict[str, Any]] = sent) -> None:
            out.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        }  # fmt: skip
        await service.app(scope, receive, send)
        answers[path] = (sent[0]["status"], sent[1]["body"])
    assert answers["/auth/refresh"][0] == 422, answers
    assert answers["/auth/refresh"] == answers[REFERENCE]
