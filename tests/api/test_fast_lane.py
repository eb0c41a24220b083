"""The hot path's lane (api/fast_lane.py) answers exactly as the app's full stack would: the
same status, body and headers for every kind of request, good or bad, and the same 500."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from auth_service.api.fast_lane import FastLane
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import client_headers, register_and_login
from tests.support.service import Service, started

Case = tuple[str, str, dict[str, str], bytes]


async def full_stack(*_args: object) -> bool:
    return False  # the lane declines: the request takes every middleware and the router


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
        ("POST", "/validate", {**good, **json_type, "X-Request-ID": "bad id!"}, body),
        ("POST", "/validate", {**good, **json_type, "Origin": "https://a.example"}, body),
        ("POST", "/validate", {**good, "Content-Type": "application/problem+json"}, body),
        ("POST", "/validate", {**good, **json_type}, b"x" * 65536),  # at the cap: read, 422
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
        patch.setattr(FastLane, "serve", full_stack)
        routed = await answers(service, requests)
    assert [status for status, _, _ in hot] == [
        401, 401, 415, 422, 422, 422, 200, 200, 413, 200, 422, 422, 200, 200, 200, 422, 405,
        routed[-1][0],
    ]  # fmt: skip
    assert hot == routed


async def test_the_lane_answers_the_hot_routes_only(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parity above would hold trivially if the lane never answered: it does, for POST
    /validate and /validate/batch, and for nothing else."""
    answered: list[str] = []
    serve = FastLane.serve

    async def spy(self: FastLane, app: Any, route: Any, scope: Any, *rest: Any) -> bool:
        taken = await serve(self, app, route, scope, *rest)
        if taken:
            answered.append(scope["path"])
        return taken

    monkeypatch.setattr(FastLane, "serve", spy)
    headers = await client_headers(service)
    await service.client.post("/validate", json={"token": "a"}, headers=headers)
    await service.client.post("/validate/batch", json={"tokens": ["a"]}, headers=headers)
    await service.client.get("/validate", headers=headers)
    await service.client.post("/validate/", json={"token": "a"}, headers=headers)
    await service.client.post("/auth/login", json={"email": "a@b.example", "password": "x"})
    assert answered == ["/validate", "/validate/batch"]


async def test_a_request_id_is_echoed_and_seen_by_the_access_line(service: Service) -> None:
    headers = {**await client_headers(service), "X-Request-ID": "trace-42"}
    answer = await service.client.post("/validate", json={"token": "a"}, headers=headers)
    assert answer.headers.get_list("x-request-id") == ["trace-42"]
    fresh = await service.client.post("/validate", json={"token": "a"}, headers={})
    (made,) = fresh.headers.get_list("x-request-id")
    assert len(made) == 16 and made != "trace-42"


async def test_a_streamed_body_over_the_cap_is_the_same_413(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunked body (no Content-Length) is counted as it arrives and refused once it passes
    the cap, before the endpoint sees it."""
    headers = {**await client_headers(service), "Content-Type": "application/json"}

    async def ask() -> tuple[int, bytes, list[tuple[str, str]]]:
        async def chunks() -> Any:
            for _ in range(9):
                yield b"x" * 8192  # 73,728 bytes in all: over the 65,536 cap

        return shape(await service.client.post("/validate", content=chunks(), headers=headers))

    lane = await ask()
    with monkeypatch.context() as patch:
        patch.setattr(FastLane, "serve", full_stack)
        routed = await ask()
    assert lane[0] == 413 and b"request_too_large" in lane[1]
    assert ("connection", "close") in lane[2]
    assert lane == routed


async def test_with_cors_a_request_from_an_origin_takes_the_full_stack(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lane does not do CORS: with an allow-list configured, a request that carries an
    ``Origin`` goes through the CORS middleware (its answer names the origin); one without
    takes the lane, and both answer as the full stack does."""
    listed = "https://app.example.com"
    settings = make_settings(cors_origins=[listed], max_request_bytes=65536)
    async with started(make_container(settings)) as svc:
        headers = await client_headers(svc)
        requests: list[Case] = [
            ("POST", "/validate", {**headers, "Origin": listed}, b'{"token":"a"}'),
            ("POST", "/validate", {**headers, "Origin": "https://evil.example"}, b"{}"),
            ("POST", "/validate", headers, b'{"token":"a"}'),
        ]
        for case in requests:
            case[2]["Content-Type"] = "application/json"
        lane = await answers(svc, requests)
        with monkeypatch.context() as patch:
            patch.setattr(FastLane, "serve", full_stack)
            routed = await answers(svc, requests)
    assert ("access-control-allow-origin", listed) in lane[0][2]
    assert lane == routed


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
        patch.setattr(FastLane, "serve", full_stack)
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

    from auth_service.api.direct import json_response as _json

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


async def test_the_client_is_authenticated_before_the_body_is_read(service: Service) -> None:
    """No client, a body that never comes: 401 at once (as the stack answers it), not a wait
    for a body an unauthenticated caller may stream up to the cap."""
    import asyncio

    from auth_service.api.fast_lane import FastLane as Lane

    assert service.app.fast_lane is not None and isinstance(service.app.fast_lane, Lane)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/validate",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "query_string": b"",
    }
    sent: list[dict[str, Any]] = []

    async def never() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(service.app(scope, never, send), 5)
    assert sent[0]["status"] == 401
