"""/validate and /validate/batch parse their own bodies (the lean hot path): bad bodies still
get the contract's 422, and only after the client is authenticated."""

from __future__ import annotations

import pytest

from tests.api.helpers import client_headers
from tests.conftest import Service


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
