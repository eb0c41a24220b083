"""The hot path's dispatch (api/hot_routes.py) answers exactly as the router would: the same
status, body and headers for every kind of request, good or bad, and the same 500."""

from __future__ import annotations

import base64
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest

from auth_service.api.hot_routes import HotRoutes
from auth_service.settings import Settings
from tests.support.http import client_headers, register_and_login
from tests.support.service import Service

Case = tuple[str, str, dict[str, str], bytes]


async def passthrough(self: HotRoutes, scope: Any, receive: Any, send: Any) -> None:
    await self.app(scope, receive, send)


def shape(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    ids = response.headers.get_list("x-request-id")
    assert len(ids) == 1, ids  # exactly one request id, whichever way it was answered
    headers = sorted(
        (name, value) for name, value in response.headers.items() if name != "x-request-id"
    )
    return response.status_code, response.content, headers


async def cases(service: Service) -> list[Case]:
    alice = await register_and_login(service)
    good = await client_headers(service)
    wrong = {"Authorization": "Basic " + base64.b64encode(b"svc_nobody:nope").decode()}
    token = alice.pair["access_token"]
    json_type = {"Content-Type": "application/json"}
    body = b'{"token":"' + token.encode() + b'"}'
    many = b'{"tokens":[' + b",".join(b'"' + token.encode() + b'"' for _ in range(3)) + b"]}"
    too_many = b'{"tokens":[' + b",".join(b'"x"' for _ in range(101)) + b"]}"
    return [
        ("POST", "/validate", json_type, body),  # no client
        ("POST", "/validate", {**wrong, **json_type}, body),
        ("POST", "/validate", {**good, "Content-Type": "text/plain"}, body),
        ("POST", "/validate", {**good, **json_type}, b"not json"),
        ("POST", "/validate", {**good, **json_type}, b'{"token": 5}'),
        ("POST", "/validate", {**good, **json_type}, b"{}"),
        ("POST", "/validate", {**good, **json_type}, body),
        ("POST", "/validate", {**good, **json_type}, b'{"token":"x.y.z"}'),
        ("POST", "/validate", {**good, **json_type}, b"x" * 70_000),  # over the size cap
        ("POST", "/validate/batch", {**good, **json_type}, many),
        ("POST", "/validate/batch", {**good, **json_type}, too_many),
        ("POST", "/validate/batch", {**good, **json_type}, b'{"tokens":[]}'),
        ("GET", "/validate", good, b""),
        ("POST", "/validate/", {**good, **json_type}, body),
    ]


async def answers(service: Service, requests: list[Case]) -> list[Any]:
    found = []
    for method, path, headers, content in requests:
        response = await service.client.request(method, path, headers=headers, content=content)
        found.append(shape(response))
    return found


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_request_bytes": 65536})


async def test_every_answer_is_the_routers(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = await cases(service)
    hot = await answers(service, requests)
    with monkeypatch.context() as patch:
        patch.setattr(HotRoutes, "__call__", passthrough)
        routed = await answers(service, requests)
    assert [status for status, _, _ in hot] == [
        401, 401, 415, 422, 422, 422, 200, 200, 413, 200, 422, 422, 405, routed[-1][0],
    ]  # fmt: skip
    assert hot == routed


async def test_an_unexpected_error_is_the_same_500(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await client_headers(service)

    async def broken(*_args: object, **_kwargs: object) -> Awaitable[None]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service.container.validator, "validate", broken)

    async def ask() -> tuple[int, bytes, list[tuple[str, str]]]:
        fixed = {**headers, "X-Request-ID": "the-same-id"}  # the 500's body names it
        return shape(await service.client.post("/validate", json={"token": "a"}, headers=fixed))

    hot = await ask()
    with monkeypatch.context() as patch:
        patch.setattr(HotRoutes, "__call__", passthrough)
        routed = await ask()
    assert hot[0] == 500 and b"a bug" not in hot[1]
    assert hot == routed


async def test_the_route_template_is_counted(service: Service) -> None:
    from auth_service.metrics import REGISTRY

    def count() -> float:
        labels = {"route": "/validate/batch", "method": "POST", "status": "422"}
        return REGISTRY.get_sample_value("auth_http_requests_total", labels) or 0.0

    headers = await client_headers(service)
    before = count()
    answer = await service.client.post("/validate/batch", json={"tokens": []}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert count() == before + 1


def test_an_answer_orjson_refuses_is_still_written() -> None:
    """orjson refuses an integer beyond 64 bits (a claim someone else's token could hold):
    the standard library writes that answer instead."""
    import json

    from auth_service.api.routes.validate import _json

    response = _json({"valid": True, "claims": {"big": 2**70, "name": "Zoë"}})
    assert json.loads(response.body) == {"valid": True, "claims": {"big": 2**70, "name": "Zoë"}}
    assert response.media_type == "application/json"


async def test_a_database_error_that_is_not_transient_is_the_contracts_500(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only PostgreSQL's transient failures are 503; any other driver error stays a 500 in
    the contract's shape, with one request id and no SQL in the body."""
    from sqlalchemy.exc import DBAPIError

    headers = await client_headers(service)

    class Orig(Exception):
        sqlstate = "42P01"  # undefined table: a bug, not a busy database

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise DBAPIError("SELECT secret FROM nowhere", {}, Orig("no such table"))

    monkeypatch.setattr(service.container.validator, "validate", broken)
    answer = await service.client.post("/validate", json={"token": "a"}, headers=headers)
    status, body, _ = shape(answer)
    assert status == 500 and b"server_error" in body and b"SELECT" not in body

    class Busy(Exception):
        sqlstate = "55P03"

    async def locked(*_args: object, **_kwargs: object) -> None:
        raise DBAPIError("SELECT 1", {}, Busy("lock timeout"))

    monkeypatch.setattr(service.container.validator, "validate", locked)
    answer = await service.client.post("/validate", json={"token": "a"}, headers=headers)
    assert answer.status_code == 503 and answer.json()["error"] == "service_unavailable"
