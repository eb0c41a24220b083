"""/validate and /validate/batch parse their own bodies (the lean hot path): bad bodies still
get the contract's 422, and only after the client is authenticated; hostile bodies (deep,
not UTF-8, not declared as JSON, chunked over the cap) and a store outage keep the contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from auth_service.store.base import StoreUnavailableError
from tests.support.http import (
    VALIDATE_PATHS,
    body_with_token,
    client_headers,
    register_and_login,
)
from tests.support.service import Service


@pytest.mark.parametrize(
    ("path", "body", "description"),
    [
        ("/validate", b"{bad", "body: the body is not valid JSON"),
        ("/validate", b"\xff\xfe", "body: the body is not valid JSON"),
        ("/validate", b"[]", "body: Input should be an object"),
        ("/validate", b'{"token": 5}', "token: Input should be a valid string"),
        ("/validate", b"{}", "token: Field required"),
        (
            "/validate",
            b'{"token": "x", "token_type": "refresh"}',
            "token_type: Input should be 'access'",
        ),
        ("/validate/batch", b"{bad", "body: the body is not valid JSON"),
        ("/validate/batch", b'{"tokens": "x"}', "tokens: Input should be a valid array"),
        ("/validate/batch", b'{"tokens": [1]}', "tokens.0: Input should be a valid string"),
        ("/validate/batch", b'{"token": "x"}', "tokens: Field required"),
    ],
)
async def test_bad_bodies_are_422_naming_the_field(
    service: Service, path: str, body: bytes, description: str
) -> None:
    headers = {**await client_headers(service), "content-type": "application/json"}
    response = await service.client.post(path, content=body, headers=headers)
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_request", "error_description": description}


@pytest.mark.parametrize("path", ["/validate", "/validate/batch"])
async def test_the_client_is_authenticated_before_the_body_is_read(
    service: Service, path: str
) -> None:
    response = await service.client.post(path, content=b"{bad")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("path", "members", "required"),
    [
        ("/validate", {"token", "token_type"}, ["token"]),
        ("/validate/batch", {"tokens"}, ["tokens"]),
    ],
)
async def test_openapi_still_documents_the_body(
    service: Service, path: str, members: set[str], required: list[str]
) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["schema"]["properties"]) == members
    assert body["schema"]["required"] == required


def _verdict(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path == "/validate":
        return body
    (only,) = body["results"]
    result: dict[str, Any] = only
    return result


# -- hostile bodies on the direct route ------------------------------------------------------


@pytest.mark.parametrize("path", VALIDATE_PATHS)
@pytest.mark.parametrize(
    "body",
    [
        b'{"tokens":["x"],"token":"x","a":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"token":"\xc3\x28","tokens":["\xc3\x28"]}',  # invalid UTF-8 inside a string
        b'{"token":"\\ud800","tokens":["\\ud800"]}',  # a lone surrogate
        b'\xef\xbb\xbf{"token":"x","tokens":["x"]}',  # a BOM
        b"",
        b"null",
    ],
    ids=["deep", "bad-utf8", "surrogate", "bom", "empty", "null"],
)
async def test_hostile_bodies_are_a_clean_422_after_client_auth(
    service: Service, path: str, body: bytes
) -> None:
    headers = {**await client_headers(service), "content-type": "application/json"}
    response = await service.client.post(path, content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert "Traceback" not in response.text
    unauthenticated = await service.client.post(path, content=body)
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize("path", VALIDATE_PATHS)
async def test_a_huge_number_or_nul_token_is_never_a_server_error(
    service: Service, path: str
) -> None:
    headers = {**await client_headers(service), "content-type": "application/json"}
    big = await service.client.post(
        path, content=body_with_token(path, b"1e99999"), headers=headers
    )
    assert big.status_code == 422
    nul = await service.client.post(
        path, content=body_with_token(path, b'"\\u0000"'), headers=headers
    )
    assert nul.status_code == 200
    assert _verdict(path, nul.json()) == {"valid": False, "error": "malformed"}


@pytest.mark.parametrize("path", VALIDATE_PATHS)
@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_a_body_not_declared_as_json_is_refused(
    service: Service, path: str, content_type: str | None
) -> None:
    """API.md is JSON in and out, as every other JSON route: a text/plain or untyped body (a
    browser sends one cross-site without a preflight) is refused with 415, after client auth."""
    user = await register_and_login(service)
    headers = await client_headers(service)
    if content_type is not None:
        headers["content-type"] = content_type
    body = body_with_token(path, f'"{user.pair["access_token"]}"'.encode())
    response = await service.client.post(path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert response.json() == {
        "error": "unsupported_media_type",
        "error_description": "The body must be application/json.",
    }


async def test_an_authenticated_chunked_body_over_the_cap_is_413(service: Service) -> None:
    headers = {**await client_headers(service), "content-type": "application/json"}

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"tokens":["'
        for _ in range(200):
            yield b"A" * 4096

    response = await service.client.post("/validate/batch", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


@pytest.mark.parametrize("path", VALIDATE_PATHS)
async def test_a_store_outage_is_503_in_the_contract_shape(
    service: Service, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register_and_login(service)
    headers = {**await client_headers(service), "content-type": "application/json"}

    async def down(keys: Any) -> list[str | None]:
        raise StoreUnavailableError("down")

    monkeypatch.setattr(service.container.validator._store, "get_many", down)
    body = body_with_token(path, f'"{user.pair["access_token"]}"'.encode())
    response = await service.client.post(path, content=body, headers=headers)
    assert response.status_code == 503
    assert response.json()["error"] == "service_unavailable"
    assert user.pair["access_token"] not in response.text
