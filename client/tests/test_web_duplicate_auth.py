"""Two ``Authorization`` headers: refused by both the middleware and the dependency (no
confused deputy between ``request.state.principal`` and ``Depends(auth)``); the dependency
reuses the middleware's verdict only for the very same token."""

from collections.abc import Mapping
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request

from auth_service_client.types import Verdict
from auth_service_client.web import (
    _VERDICT_KEY,
    Authenticator,
    AuthError,
    PrincipalMiddleware,
    install_error_handler,
    request_bearer,
)
from helpers import TestClient

CHECKED: list[str] = []


async def check(token: str) -> Verdict:
    CHECKED.append(token)
    return Verdict(True, {"sub": token})


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handler(app)
    app.add_middleware(PrincipalMiddleware, check=check)
    auth = Authenticator(check, realm="api")

    @app.get("/both")
    async def both(
        request: Request, claims: Annotated[Mapping[str, Any], Depends(auth)]
    ) -> dict[str, Any]:
        principal = request.state.principal
        return {"dep": claims["sub"], "principal": principal and principal["sub"]}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        principal = request.state.principal
        return {"sub": principal and principal["sub"], "error": request.state.principal_error}

    return app


TWO = [("Authorization", "Bearer tokA"), ("Authorization", "Bearer tokB")]


def test_two_authorization_headers_are_refused_by_the_dependency() -> None:
    with TestClient(make_app()) as client:
        response = client.get("/both", headers=TWO)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_two_authorization_headers_give_no_principal() -> None:
    with TestClient(make_app()) as client:
        response = client.get("/whoami", headers=TWO)
    assert response.json() == {"sub": None, "error": "invalid_request"}


def test_one_header_is_the_same_user_for_both_and_checked_once() -> None:
    CHECKED.clear()
    with TestClient(make_app()) as client:
        response = client.get("/both", headers={"Authorization": "Bearer tokA"})
    assert response.json() == {"dep": "tokA", "principal": "tokA"}
    assert CHECKED == ["tokA"]  # the dependency reused the middleware's verdict


def test_request_bearer_reads_the_single_header() -> None:
    assert request_bearer({"headers": [(b"authorization", b"Bearer t")]}) == ("t", False)
    assert request_bearer({"headers": []}) == (None, False)
    assert request_bearer({"headers": [(b"authorization", b"Basic x")]}) == (None, False)
    assert request_bearer({"headers": TWO_RAW}) == (None, True)


TWO_RAW = [(b"authorization", b"Bearer tokA"), (b"authorization", b"Bearer tokB")]


async def test_a_verdict_for_another_token_is_not_reused() -> None:
    auth = Authenticator(check)
    scope: Any = {_VERDICT_KEY: (check, "tokB", Verdict(True, {"sub": "tokB"}))}
    assert (await auth.verify("tokA", scope))["sub"] == "tokA"
    other: Any = {_VERDICT_KEY: (check, "tokA", Verdict(False, None, "expired"))}
    with pytest.raises(AuthError):
        await auth.verify("tokA", other)  # the same token and check: reused
