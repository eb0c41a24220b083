"""Attack review of session 3's changes: /validate and /validate/batch on ``DirectRoute``, the
verification cache keeping the static claim checks' outcome, and client-secret refresh-ahead.

Each test is an attack the code withstands; four of them failed on the reviewed code and were
fixed with them (a non-JSON body was validated, a deleted client could be re-admitted by a late
background check, a database outage and a NUL in the client id were 500s).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from sqlalchemy.exc import OperationalError

from auth_service.container import Container
from auth_service.crypto.jwt import verify_parsed
from auth_service.crypto.passwords import PasswordHasher
from auth_service.errors import InvalidClientError
from auth_service.services import validation
from auth_service.services.client_auth import ClientAuthenticator
from auth_service.store.base import StoreUnavailableError
from tests.api.helpers import client_headers, register_and_login, validate
from tests.conftest import Service, Ticks

PATHS = ["/validate", "/validate/batch"]
NOT_JSON = "body: the body is not valid JSON"


def _body(path: str, raw_token: bytes) -> bytes:
    """A body for ``path`` whose token is the raw JSON value ``raw_token``."""
    if path == "/validate":
        return b'{"token":' + raw_token + b"}"
    return b'{"tokens":[' + raw_token + b"]}"


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _verdict(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path == "/validate":
        return body
    (only,) = body["results"]
    result: dict[str, Any] = only
    return result


# -- body parsing on the direct route ------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
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


@pytest.mark.parametrize("path", PATHS)
async def test_a_huge_number_or_nul_token_is_never_a_server_error(
    service: Service, path: str
) -> None:
    headers = {**await client_headers(service), "content-type": "application/json"}
    big = await service.client.post(path, content=_body(path, b"1e99999"), headers=headers)
    assert big.status_code == 422
    nul = await service.client.post(path, content=_body(path, b'"\\u0000"'), headers=headers)
    assert nul.status_code == 200
    assert _verdict(path, nul.json()) == {"valid": False, "error": "malformed"}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_a_body_not_declared_as_json_is_refused(
    service: Service, path: str, content_type: str | None
) -> None:
    """API.md is JSON in and out, as every other JSON route: a text/plain or untyped body (a
    browser sends one cross-site without a preflight) is refused, after client auth."""
    user = await register_and_login(service)
    headers = await client_headers(service)
    if content_type is not None:
        headers["content-type"] = content_type
    body = _body(path, f'"{user.pair["access_token"]}"'.encode())
    response = await service.client.post(path, content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "body: the body must be JSON (Content-Type: application/json)",
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


@pytest.mark.parametrize("path", PATHS)
async def test_a_store_outage_is_503_in_the_contract_shape(
    service: Service, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register_and_login(service)
    headers = {**await client_headers(service), "content-type": "application/json"}

    async def down(keys: Any) -> list[str | None]:
        raise StoreUnavailableError("down")

    monkeypatch.setattr(service.container.validator._store, "get_many", down)
    body = _body(path, f'"{user.pair["access_token"]}"'.encode())
    response = await service.client.post(path, content=body, headers=headers)
    assert response.status_code == 503
    assert response.json()["error"] == "service_unavailable"
    assert user.pair["access_token"] not in response.text


# -- the verification cache ----------------------------------------------------------------


async def test_a_variant_of_a_cached_token_is_verified_afresh_and_refused(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def counting(parsed: Any, key: Any) -> dict[str, Any]:
        calls.append(parsed.header.kid)
        return verify_parsed(parsed, key)

    monkeypatch.setattr(validation, "verify_parsed", counting)
    user = await register_and_login(service)
    headers = await client_headers(service)
    token = user.pair["access_token"]
    assert (await validate(service, token, headers))["valid"] is True
    head, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "roles": ["admin"]}, "k" * 32, algorithm="HS256")
    variants = {
        f"{head}.{payload}.{signature[:10]}{'B' if signature[10] == 'A' else 'A'}{signature[11:]}": (
            "invalid_signature"
        ),
        f"{head}.{forged.split('.')[1]}.{signature}": "invalid_signature",
        f" {token}": "malformed",
        f"{token}.": "malformed",
        f"{head}.{payload}.{signature}=": "malformed",
    }
    for variant, reason in variants.items():
        for _ in range(2):
            assert await validate(service, variant, headers) == {"valid": False, "error": reason}
    assert (await validate(service, token, headers))["valid"] is True
    assert len(calls) == 1 + 2 * 2  # the cached genuine token once; each bad signature twice


# -- client authentication: refresh-ahead ---------------------------------------------------


def _authenticator(
    container: Container, hasher: PasswordHasher, ticks: Ticks
) -> ClientAuthenticator:
    return ClientAuthenticator(
        container.db.reader,
        hasher,
        store=container.store,
        failure_limit=20,
        cache_seconds=30,
        time_source=ticks,
    )


class GatedHasher(PasswordHasher):
    """Cheap argon2id; while ``gate`` is set, the next ``verify`` waits for it to be released."""

    def __init__(self) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        gate, self.gate = self.gate, None
        if gate is not None:
            self.entered.set()
            await gate.wait()
        return await super().verify(hash, password, urgent=urgent)


async def test_a_late_background_check_cannot_readmit_a_client_refused_since(
    registered_client: tuple[Container, str, str],
) -> None:
    """A re-verification that read the client row before the deletion finishes after a
    foreground check already refused the deleted client: it must not re-arm a window."""
    container, client_id, secret = registered_client
    hasher, ticks = GatedHasher(), Ticks()
    auth = _authenticator(container, hasher, ticks)
    try:
        assert await auth.authenticate(client_id, secret, None) == client_id
        release = asyncio.Event()
        hasher.gate = release
        ticks.now += 26  # the last fifth: answered at once, one background re-verification
        assert await auth.authenticate(client_id, secret, None) == client_id
        await asyncio.wait_for(hasher.entered.wait(), 5)  # it has read the (live) row
        await container.clients.delete(client_id)  # the container's authenticator forgets
        ticks.now += 5  # the window is over: the next request checks the database itself
        with pytest.raises(InvalidClientError):
            await auth.authenticate(client_id, secret, None)
        release.set()
        await asyncio.wait(auth.refreshes, timeout=5)
        with pytest.raises(InvalidClientError):  # (was: accepted again for 30 s)
            await auth.authenticate(client_id, secret, None)
    finally:
        await auth.close()
        hasher.close()


class _Down:
    async def __aenter__(self) -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database down"))

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_a_database_outage_during_refresh_lets_the_entry_lapse_on_time(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    hasher, ticks = GatedHasher(), Ticks()
    auth = _authenticator(container, hasher, ticks)
    try:
        assert await auth.authenticate(client_id, secret, None) == client_id
        auth._sessionmaker = _Down  # type: ignore[assignment]
        ticks.now += 27
        assert await auth.authenticate(client_id, secret, None) == client_id
        await asyncio.wait(auth.refreshes, timeout=5)
        assert auth.refreshes == set()
        ticks.now += 2.9  # still inside the original window, not beyond it
        assert await auth.authenticate(client_id, secret, None) == client_id
        await asyncio.wait(auth.refreshes, timeout=5)
        ticks.now += 0.2
        with pytest.raises(OperationalError):  # fails closed, never accepted past the window
            await auth.authenticate(client_id, secret, None)
        with pytest.raises(OperationalError):  # nor a wrong secret
            await auth.authenticate(client_id, secret + "x", None)
    finally:
        await auth.close()
        hasher.close()
    assert auth.refreshes == set()


class _Refused:
    """What asyncpg raises when PostgreSQL is not listening: a bare OSError."""

    async def __aenter__(self) -> Any:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("down", [_Down, _Refused])
async def test_a_database_outage_in_client_auth_is_503_not_500(
    service: Service, monkeypatch: pytest.MonkeyPatch, down: type
) -> None:
    """The database failing during client authentication is 503, as a store outage is
    (it was an unhandled 500)."""
    headers = await client_headers(service)
    monkeypatch.setattr(service.container.clients._authenticator, "_sessionmaker", down)
    response = await service.client.post("/validate", json={"token": "x"}, headers=headers)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"
    assert "5432" not in response.text and "SELECT" not in response.text


@pytest.mark.parametrize("client_id", ["svc_x%00", "%00", "svc_" + "%00" * 8])
async def test_a_nul_in_the_client_id_is_401_not_500(service: Service, client_id: str) -> None:
    """A NUL in the Basic client id used to reach the primary-key lookup, which PostgreSQL
    refuses: an unauthenticated 500 with a logged trace. Ids outside the issued charset are
    refused before any lookup."""
    for path in PATHS:
        response = await service.client.post(
            path, content=_body(path, b'"x"'), headers=_basic(client_id, "secret")
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
