"""Every error, including the framework's own and unhandled ones, has the contract's shape."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import BaseModel, EmailStr, Field

from auth_service.errors import ErrorCode, RateLimitedError, UnauthorizedError
from tests.support.service import Service

SECRET_IN_EXCEPTION = "postgresql://admin:hunter2@db/prod SELECT * FROM users"


class _Echo(BaseModel):
    email: EmailStr
    count: int = Field(ge=1)


@pytest.fixture
async def client(service: Service) -> httpx.AsyncClient:
    """The app plus routes that fail on purpose (added for these tests only)."""
    app = service.app

    @app.post("/_test/echo")
    async def echo(body: _Echo) -> dict[str, str]:
        return {"email": body.email}

    @app.get("/_test/crash")
    async def crash() -> None:
        raise RuntimeError(SECRET_IN_EXCEPTION)

    @app.get("/_test/limited")
    async def limited() -> None:
        raise RateLimitedError(retry_after_seconds=7)

    @app.get("/_test/unauthorized")
    async def unauthorized() -> None:
        raise UnauthorizedError("No token.", code=ErrorCode.INVALID_TOKEN)

    return service.client


def _assert_error_shape(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == code
    assert body["error_description"]
    assert "Traceback" not in response.text
    return body


async def test_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    _assert_error_shape(await client.get("/no/such/path"), 404, "not_found")


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/health/live")
    _assert_error_shape(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_invalid_body_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/_test/echo", json={"email": "not-an-email", "count": 0})
    body = _assert_error_shape(response, 422, "invalid_request")
    assert "email" in body["error_description"] and "count" in body["error_description"]
    assert "not-an-email" not in body["error_description"]  # the submitted value is not echoed


@pytest.mark.parametrize(
    "content", [b"{not json", b"", b"[]", b'"text"', '{"email": "\u00e9"}'.encode()]
)
async def test_malformed_json_is_422(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(
        "/_test/echo", content=content, headers={"Content-Type": "application/json"}
    )
    _assert_error_shape(response, 422, "invalid_request")


async def test_unhandled_exception_is_500_without_detail(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="auth_service.api"):
        response = await client.get("/_test/crash", headers={"X-Request-ID": "req-42"})
    body = _assert_error_shape(response, 500, "server_error")
    assert "hunter2" not in response.text and "SELECT" not in response.text
    assert "RuntimeError" not in response.text
    assert "req-42" in body["error_description"]
    assert response.headers["x-request-id"] == "req-42"
    logged = [r for r in caplog.records if "req-42" in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the detail goes to the log only


async def test_a_500_carries_the_security_headers_of_every_answer(
    client: httpx.AsyncClient,
) -> None:
    """Attack review: a 500 was made outside the middleware that adds them."""
    response = await client.get("/_test/crash")
    _assert_error_shape(response, 500, "server_error")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


async def test_domain_errors_carry_their_headers(client: httpx.AsyncClient) -> None:
    limited = await client.get("/_test/limited")
    _assert_error_shape(limited, 429, "rate_limited")
    assert limited.headers["retry-after"] == "7"
    unauthorized = await client.get("/_test/unauthorized")
    _assert_error_shape(unauthorized, 401, "invalid_token")
    assert unauthorized.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_request_ids(client: httpx.AsyncClient) -> None:
    generated = await client.get("/health/live")
    assert len(generated.headers["x-request-id"]) == 16
    echoed = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    unsafe = await client.get("/health/live", headers={"X-Request-ID": "a\tb<script>"})
    assert unsafe.headers["x-request-id"] != "a\tb<script>"


async def test_oversized_body_is_413_before_reading(client: httpx.AsyncClient) -> None:
    big = b"{" + b" " * 2_000_000 + b"}"
    response = await client.post(
        "/_test/echo", content=big, headers={"Content-Type": "application/json"}
    )
    _assert_error_shape(response, 413, "request_too_large")


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield b" " * 4096

    response = await client.post(
        "/_test/echo", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _assert_error_shape(response, 413, "request_too_large")


async def test_a_body_that_is_not_utf8_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/echo",
        content=b'{"email": "\xff\xfe"}',
        headers={"Content-Type": "application/json"},
    )
    _assert_error_shape(response, 422, "invalid_request")


async def test_attacker_chosen_keys_are_not_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/echo", json={"email": {"<script>SECRET-TOKEN": 1}, "count": 1}
    )
    body = _assert_error_shape(response, 422, "invalid_request")
    assert "SECRET-TOKEN" not in response.text
    assert body["error_description"].startswith("email")


async def test_413_closes_the_connection(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/echo", content=b" " * 600_000, headers={"Content-Type": "application/json"}
    )
    _assert_error_shape(response, 413, "request_too_large")
    assert response.headers["connection"] == "close"


async def test_request_id_with_a_trailing_newline_is_replaced(client: httpx.AsyncClient) -> None:
    from auth_service.api.middleware import RequestContextMiddleware

    scope = {"headers": [(b"x-request-id", b"abc\n")]}
    assert RequestContextMiddleware._request_id(scope) != "abc\n"
