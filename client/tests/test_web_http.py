"""The HTTP helpers of ``auth_service_client.web`` against real tokens of the real service:
the dependency's 401/503, ``require_roles``/``require_scopes``' 403, and the middleware."""

import subprocess
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request

from auth_service_client.types import Check, Verdict
from auth_service_client.web import (
    Authenticator,
    PrincipalMiddleware,
    install_error_handler,
    require_roles,
)
from conftest import Service, free_port
from helpers import TestClient, remote_check


def make_app(check: Check, *, realm: str | None = "api") -> FastAPI:
    app = FastAPI()
    install_error_handler(app)
    app.add_middleware(PrincipalMiddleware, check=check)
    auth = Authenticator(check, realm=realm)

    @app.get("/me")
    async def me(claims: Annotated[Mapping[str, Any], Depends(auth)]) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    @app.get("/admin")
    async def admin(
        claims: Annotated[Mapping[str, Any], Depends(require_roles("admin", auth=auth))],
    ) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    @app.get("/read")
    async def read(
        claims: Annotated[Mapping[str, Any], Depends(auth.require_scopes("read"))],
    ) -> dict[str, Any]:
        return {"client_id": claims["client_id"]}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        principal = request.state.principal
        return {
            "sub": principal["sub"] if principal else None,
            "error": request.state.principal_error,
        }

    return app


@pytest.fixture(scope="module")
def client(service: Service) -> TestClient:
    check = remote_check(service.base_url, service.client_id, service.client_secret)
    return TestClient(make_app(check))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_valid_token_gives_the_claims(service: Service, client: TestClient) -> None:
    pair = service.login()
    answer = client.get("/me", headers=bearer(pair["access_token"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["sub"] == service.validate(pair["access_token"])["claims"]["sub"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Basic dTpw"}, {"Authorization": "Bearer "}]
)
def test_a_missing_token_is_401_with_a_bare_challenge(
    client: TestClient, headers: dict[str, str]
) -> None:
    answer = client.get("/me", headers=headers)
    assert answer.status_code == 401
    assert answer.json() == {
        "error": "invalid_token",
        "error_description": answer.json()["error_description"],
    }
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_without_a_realm_the_challenge_is_just_bearer(service: Service) -> None:
    check = remote_check(service.base_url, service.client_id, service.client_secret)
    answer = TestClient(make_app(check, realm=None)).get("/me")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_a_bad_token_is_401_invalid_token_with_the_reason(client: TestClient) -> None:
    answer = client.get("/me", headers=bearer("not-a-jwt"))
    assert answer.status_code == 401
    body = answer.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "invalid_token"
    assert answer.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="invalid_token", error_description="malformed"'
    )


def test_a_revoked_token_is_401_session_revoked(service: Service, client: TestClient) -> None:
    pair = service.login()
    service.logout(pair)
    answer = client.get("/me", headers=bearer(pair["access_token"]))
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_token"
    challenge = answer.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge
    assert 'error_description="token_revoked"' in challenge or "session_revoked" in challenge


def test_an_unreachable_service_is_503_with_retry_after_never_valid_or_500(
    service: Service,
) -> None:
    dead = remote_check(f"http://127.0.0.1:{free_port()}", "x", "y")
    client = TestClient(make_app(dead), raise_server_exceptions=False)
    token = service.login()["access_token"]
    for path in ("/me", "/admin", "/read"):
        answer = client.get(path, headers=bearer(token))
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "service_unavailable"
        assert set(answer.json()) == {"error", "error_description"}
        assert answer.headers["Retry-After"] == "5"
    whoami = client.get("/whoami", headers=bearer(token)).json()
    assert whoami == {"sub": None, "error": "service_unavailable"}


def test_require_roles_is_403_forbidden_for_a_user_and_200_for_an_admin(
    service: Service, client: TestClient
) -> None:
    user = client.get("/admin", headers=bearer(service.login()["access_token"]))
    assert user.status_code == 403
    assert user.json()["error"] == "forbidden"
    assert set(user.json()) == {"error", "error_description"}
    admin = client.get("/admin", headers=service.admin_headers())
    assert admin.status_code == 200, admin.text
    assert client.get("/admin").status_code == 401


def _service_token(service: Service, scopes: list[str]) -> str:
    created = service.post("/admin/clients", json={"name": "scoped", "scopes": scopes},
                           headers=service.admin_headers())  # fmt: skip
    assert created.status_code == 201, created.text
    body = created.json()
    issued = service.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(body["client_id"], body["client_secret"]),
    )
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


def test_require_scopes_checks_the_space_separated_scope_claim(
    service: Service, client: TestClient
) -> None:
    granted = client.get("/read", headers=bearer(_service_token(service, ["write", "read"])))
    assert granted.status_code == 200, granted.text
    refused = client.get("/read", headers=bearer(_service_token(service, ["write"])))
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    challenge = refused.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api", error="insufficient_scope"')
    assert challenge.endswith('scope="read"')
    user = client.get("/read", headers=bearer(service.login()["access_token"]))
    assert user.status_code == 403


def test_the_middleware_sets_the_principal_and_never_rejects(
    service: Service, client: TestClient
) -> None:
    pair = service.login()
    sub = service.validate(pair["access_token"])["claims"]["sub"]
    assert client.get("/whoami", headers=bearer(pair["access_token"])).json() == {
        "sub": sub,
        "error": None,
    }
    assert client.get("/whoami").json() == {"sub": None, "error": None}
    bad = client.get("/whoami", headers=bearer("nope"))
    assert bad.status_code == 200
    assert bad.json() == {"sub": None, "error": "malformed"}


def test_the_dependency_reuses_the_middlewares_verdict(service: Service) -> None:
    calls: list[str] = []
    inner = remote_check(service.base_url, service.client_id, service.client_secret)

    async def counting(token: str) -> Verdict:
        calls.append(token)
        return await inner(token)

    client = TestClient(make_app(counting))
    assert client.get("/admin", headers=service.admin_headers()).status_code == 200
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("blocked", "module"),
    [("fastapi", "auth_service_client.web"), ("starlette", "auth_service_client.web_ws")],
)
def test_without_the_extra_the_import_error_says_what_to_install(blocked: str, module: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    import {module}\nexcept ImportError as exc:\n    print(exc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'auth-service-client[fastapi]'" in done.stdout


def test_the_openapi_schema_declares_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert schema["paths"]["/admin"]["get"]["security"] == [{"HTTPBearer": []}]
