"""FastAPI's OpenAPI document agrees with the contract and with docs/api.md."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.service import Service

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


async def test_every_operation_declares_the_error_body(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error", "error_description"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status in ("404", "405", "413", "500"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"]["$ref"].endswith("/ErrorBody"), (method, path, status)


async def test_docs_api_md_lists_exactly_the_built_endpoints(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    built = {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops}
    documented = set(re.findall(r"^### (GET|POST|DELETE|PUT|PATCH) (\S+)", DOCS.read_text(), re.M))
    assert {f"{m} {p}" for m, p in documented} == built


async def test_ready_declares_its_503(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    ready = spec["paths"]["/health/ready"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ReadinessFailure"
    )


HASHING_ROUTES = [
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("post", "/auth/mfa/totp/setup"),
    ("post", "/auth/mfa/totp/disable"),
    ("post", "/auth/password/change"),
    ("post", "/auth/password/reset"),
    ("post", "/validate"),
    ("post", "/validate/batch"),
    ("post", "/oauth/token"),
    ("post", "/oauth/introspect"),
    ("post", "/oauth/revoke"),
    ("post", "/admin/clients"),
    ("post", "/admin/clients/{client_id}/rotate-secret"),
]


async def test_routes_that_hash_declare_server_busy(service: Service) -> None:
    """A full hashing queue answers 503 server_busy: every route that hashes a password or a
    client secret says so in its OpenAPI, and only the 503 of such a route does."""
    document = (await service.client.get("/openapi.json")).json()
    for method, path in HASHING_ROUTES:
        declared = document["paths"][path][method]["responses"]["503"]["description"]
        assert "`server_busy`" in declared, path
    ready = document["paths"]["/health/ready"]["get"]["responses"]["503"]["description"]
    assert "server_busy" not in ready
