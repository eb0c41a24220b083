"""Security headers on every response of every route the OpenAPI lists; the docs switch; 415
for a body of the wrong media type on every route that takes one; an OpenAPI that tells how
each route authenticates and what each error is."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from auth_service.api.middleware import STRICT_POLICY
from auth_service.app import create_app
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import client_headers
from tests.support.service import Service, started

CACHEABLE = {"/.well-known/jwks.json"}
SKIP = {"/events/revocations"}  # an open stream: its headers are tested in tests/served


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if path not in SKIP
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-000000000000", path)


async def call(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    return await client.request(method.upper(), concrete(path), **kw)


def assert_strict_headers(response: httpx.Response, where: str) -> None:
    assert response.headers["x-content-type-options"] == "nosniff", where
    assert response.headers["referrer-policy"] == "no-referrer", where
    assert response.headers["content-security-policy"] == STRICT_POLICY, where
    assert "server" not in response.headers, where


async def test_every_route_answers_with_the_security_headers(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    for method, path, _ in operations(spec):
        response = await call(service.client, method, path)
        where = f"{method} {path} -> {response.status_code}"
        assert_strict_headers(response, where)
        assert "strict-transport-security" not in response.headers, where  # development
        if path in CACHEABLE:
            assert response.headers["cache-control"].startswith("public"), where
        else:
            assert response.headers["cache-control"] == "no-store", where
            assert response.headers["pragma"] == "no-cache", where


async def test_answers_that_carry_tokens_are_no_store(service: Service) -> None:
    """The login answer, the 404 of an unknown path and a 413 alike."""
    await service.client.post(
        "/auth/register", json={"email": "h@example.com", "password": "correct horse battery"}
    )
    login = await service.client.post(
        "/auth/login", json={"email": "h@example.com", "password": "correct horse battery"}
    )
    assert login.status_code == 200
    for response in (
        login,
        await service.client.get("/nowhere"),
        await service.client.post("/auth/login", content=b"x" * 600_000),
    ):
        assert response.headers["cache-control"] == "no-store", response.status_code
        assert_strict_headers(response, str(response.status_code))


def unstarted(settings: Settings) -> httpx.AsyncClient:
    """The app's middleware and routing without its lifespan: a production configuration the
    suite's SQLite and in-process store could not start, for answers that need no container."""
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="https://auth.example.com")


async def test_production_adds_hsts_and_hides_the_docs(
    make_settings: Callable[..., Settings],
) -> None:
    async with unstarted(make_settings(environment="production")) as client:
        missing = await client.get("/docs")
        assert missing.status_code == 404
        assert missing.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        assert_strict_headers(missing, "production 404")
        assert (await client.get("/openapi.json")).status_code == 404
        assert (await client.get("/redoc")).status_code == 404


async def test_production_serves_the_docs_when_told_to(
    make_settings: Callable[..., Settings],
) -> None:
    async with unstarted(make_settings(environment="production", docs_enabled=True)) as client:
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200


async def test_development_can_turn_the_docs_off(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    async with started(make_container(make_settings(docs_enabled=False))) as service:
        assert (await service.client.get("/docs")).status_code == 404
        assert (await service.client.get("/openapi.json")).status_code == 404


async def test_the_docs_page_policy_admits_its_own_script_and_nothing_inline_else(
    service: Service,
) -> None:
    page = await service.client.get("/docs")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    scripts = re.findall(rb"<script>(.*?)</script>", page.content, re.DOTALL)
    assert scripts
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "'self'" not in policy.split("connect-src")[0]  # no script or style from here


async def test_every_json_body_route_answers_415_for_another_media_type(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    basic = await client_headers(service)
    checked = 0
    for method, path, operation in operations(spec):
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            sent = {"content-type": "text/plain", **basic}
            body = b'{"a": 1}'
        elif "application/x-www-form-urlencoded" in content:
            sent, body = {"content-type": "application/json"}, b'{"token": "x"}'
        else:
            continue
        response = await call(service.client, method, path, content=body, headers=sent)
        where = f"{method} {path}: {response.text}"
        assert response.status_code == 415, where
        assert response.json()["error"] == "unsupported_media_type", where
        assert set(response.json()) == {"error", "error_description"}, where
        assert "415" in operation["responses"], where
        checked += 1
    assert checked >= 15


async def test_json_with_a_charset_or_a_json_suffix_is_json(service: Service) -> None:
    for media in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await service.client.post(
            "/auth/login", content=b'{"email": "x@example.com"}', headers={"content-type": media}
        )
        assert response.status_code == 422, media  # parsed, then refused for the field


async def test_the_openapi_says_how_each_route_authenticates(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["clientBasic"]["scheme"] == "basic"
    paths = spec["paths"]

    def security(method: str, path: str) -> list[dict[str, list[str]]] | None:
        found: list[dict[str, list[str]]] | None = paths[path][method].get("security")
        return found

    assert security("get", "/auth/me") == [{"bearerAuth": []}]
    assert security("post", "/auth/logout") == [{"bearerAuth": []}]
    assert security("get", "/admin/keys") == [{"bearerAuth": []}]
    assert security("post", "/validate") == [{"clientBasic": []}]
    assert security("post", "/oauth/token") == [{"clientBasic": []}]
    assert security("get", "/events/revocations") == [{"clientBasic": []}]
    assert security("post", "/auth/login") is None
    assert security("get", "/.well-known/jwks.json") is None


async def test_the_openapi_declares_the_contracts_error_shape_with_its_codes(
    service: Service,
) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in str(spec)
    assert "ValidationError" not in spec["components"]["schemas"]
    for method, path, operation in operations(spec):
        for status, declared in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema = declared["content"]["application/json"]["schema"]["$ref"]
                if not schema.endswith("/ReadinessFailure"):
                    assert schema.endswith("/ErrorBody"), (method, path, status)
                    assert re.search(r"`[a-z_]+`", declared["description"]), (method, path, status)
    deleted = spec["paths"]["/auth/sessions/{session_id}"]["delete"]["responses"]["422"]
    assert deleted["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


@pytest.mark.parametrize("path", ["/auth/sessions/not-a-uuid", "/auth/sessions/1"])
async def test_a_bad_path_parameter_is_the_contracts_422(service: Service, path: str) -> None:
    await service.client.post(
        "/auth/register", json={"email": "p@example.com", "password": "correct horse battery"}
    )
    login = await service.client.post(
        "/auth/login", json={"email": "p@example.com", "password": "correct horse battery"}
    )
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    response = await service.client.delete(path, headers=bearer)
    assert response.status_code == 422
    assert set(response.json()) == {"error", "error_description"}
