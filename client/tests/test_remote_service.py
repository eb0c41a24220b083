"""``AuthClient`` against the real service: verdicts, batches, introspection, service tokens,
client authentication, connection pooling, the breaker across a stop/start, and the cache's
documented revocation delay."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from auth_service_client.errors import (
    CircuitOpenError,
    InvalidClientError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from auth_service_client.remote import AuthClient
from auth_service_client.types import Verdict
from conftest import Service


class Counting(httpx.AsyncBaseTransport):
    """The real network, with the paths asked for recorded."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(service: Service, **options: Any) -> AuthClient:
    return AuthClient(service.base_url, service.client_id, service.client_secret, **options)


def scoped_client(service: Service, scopes: list[str]) -> tuple[str, str]:
    answer = service.post(
        "/admin/clients",
        json={"name": "scoped", "scopes": scopes},
        headers=service.admin_headers(),
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return body["client_id"], body["client_secret"]


async def test_validate_gives_the_services_verdicts(service: Service) -> None:
    pair = service.login()
    async with client(service) as auth:
        verdict = await auth.validate(pair["access_token"])
        assert verdict.valid and verdict.error is None
        assert verdict.claims is not None and verdict.claims["sid"]
        assert (
            json.loads(json.dumps(verdict.claims))
            == service.validate(pair["access_token"])["claims"]
        )
        assert await auth.validate("not-a-token") == Verdict(False, None, "malformed")
        service.logout(pair)
        assert await auth.validate(pair["access_token"]) == Verdict(False, None, "token_revoked")


async def test_an_overlong_token_is_malformed_without_asking(service: Service) -> None:
    transport = Counting()
    async with client(service, transport=transport) as auth:
        huge = "x" * 20_000  # the service would refuse the whole request (422)
        assert await auth.validate(huge) == Verdict(False, None, "malformed")
        good = service.login()["access_token"]
        verdicts = await auth.validate_many([huge, good])
        assert [v.valid for v in verdicts] == [False, True]
        assert transport.paths == ["/validate/batch"]


async def test_validate_many_answers_in_order_across_chunks_of_100(service: Service) -> None:
    pairs = [service.login() for _ in range(3)]
    service.logout(pairs[2])
    kinds = [
        pairs[0]["access_token"],
        "garbage",
        pairs[1]["access_token"],
        pairs[2]["access_token"],
    ]
    tokens = [kinds[i % 4] for i in range(250)]
    transport = Counting()
    async with client(service, transport=transport) as auth:
        verdicts = await auth.validate_many(tokens)
        assert transport.paths == ["/validate/batch"] * 3  # 100 + 100 + 50
        singles = [await auth.validate(token) for token in kinds]
        assert verdicts == [singles[i % 4] for i in range(250)]
        assert [v.error for v in singles] == [None, "malformed", None, "token_revoked"]
        assert await auth.validate_many([]) == []
        assert len(transport.paths) == 3 + 4


async def test_introspect_is_rfc_7662(service: Service) -> None:
    pair = service.login()
    async with client(service) as auth:
        active = await auth.introspect(pair["access_token"])
        assert active["active"] is True
        assert active["sub"] == service.validate(pair["access_token"])["claims"]["sub"]
        assert await auth.introspect("garbage") == {"active": False}


async def test_a_service_token_validates_and_is_cached(service: Service) -> None:
    transport = Counting()
    async with client(service, transport=transport) as auth:
        token = await auth.client_credentials_token()
        assert await auth.client_credentials_token() == token
        assert transport.paths == ["/oauth/token"]
        verdict = await auth.validate(token)
        assert verdict.valid and verdict.claims is not None
        assert verdict.claims["client_id"] == service.client_id


async def test_fifty_concurrent_callers_cause_one_token_request(service: Service) -> None:
    transport = Counting()
    async with client(service, transport=transport) as auth:
        tokens = await asyncio.gather(*(auth.client_credentials_token() for _ in range(50)))
        assert len(set(tokens)) == 1
        assert transport.paths == ["/oauth/token"]


async def test_service_tokens_are_cached_per_scope(service: Service) -> None:
    client_id, secret = scoped_client(service, ["read", "write"])
    transport = Counting()
    async with AuthClient(service.base_url, client_id, secret, transport=transport) as auth:
        read, write = (
            await auth.client_credentials_token("read"),
            await auth.client_credentials_token("write"),
        )
        assert read != write
        assert await auth.client_credentials_token("read") == read
        assert transport.paths == ["/oauth/token"] * 2
        claims = (await auth.validate(read)).claims
        assert claims is not None and claims["scope"] == "read"
        with pytest.raises(RequestRejectedError) as refused:
            await auth.client_credentials_token("admin")
        assert (refused.value.status, refused.value.code) == (400, "invalid_scope")


async def test_a_wrong_secret_is_invalid_client_and_not_a_breaker_failure(service: Service) -> None:
    transport = Counting()
    async with AuthClient(
        service.base_url, service.client_id, "wrong", breaker_failures=2, transport=transport
    ) as auth:
        for _ in range(3):
            with pytest.raises(InvalidClientError) as refused:
                await auth.validate("x")
        assert (refused.value.status, refused.value.code) == (401, "invalid_client")
        assert len(transport.paths) == 3  # never retried
        assert auth.breaker.state == "closed"  # a 4xx: the service is up


async def test_one_pooled_connection_serves_sequential_calls(service: Service) -> None:
    token = service.login()["access_token"]
    transport = Counting()
    async with client(service, transport=transport) as auth:
        for _ in range(10):
            assert (await auth.validate(token)).valid
        assert len(transport.inner._pool.connections) == 1  # kept alive and reused


async def test_the_breaker_across_a_stopped_and_restarted_service(own_service: Service) -> None:
    clock = Clock()
    token = own_service.login()["access_token"]
    transport = Counting()
    async with client(
        own_service,
        retries=1,
        backoff=0.01,
        breaker_failures=2,
        breaker_reset_seconds=30.0,
        time_source=clock,
        transport=transport,
    ) as auth:
        assert (await auth.validate(token)).valid
        own_service.stop()
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError) as down:
                await auth.validate(token)
            assert not isinstance(down.value, CircuitOpenError)
        assert auth.breaker.state == "open"
        asked = len(transport.paths)
        started = time.perf_counter()
        for _ in range(100):
            with pytest.raises(CircuitOpenError):
                await auth.validate(token)
        assert time.perf_counter() - started < 0.1  # fail fast: no connect, no back-off
        assert len(transport.paths) == asked  # the network was not touched

        own_service.start()
        with pytest.raises(CircuitOpenError):
            await auth.validate(token)  # still cooling down, though the service is back
        clock.now += 30.0
        assert auth.breaker.state == "half_open"
        assert (await auth.validate(token)).valid  # the probe
        assert auth.breaker.state == "closed"


async def test_the_cache_delays_a_revocation_by_at_most_its_seconds(service: Service) -> None:
    clock = Clock()
    pair = service.login()
    token = pair["access_token"]
    async with (
        client(service, cache_seconds=5.0, time_source=clock) as cached,
        client(service) as live,
    ):
        assert (await cached.validate(token)).valid
        service.logout(pair)
        assert (await live.validate(token)).error == "token_revoked"
        clock.now += 4.9
        assert (await cached.validate(token)).valid  # the documented price of the cache
        clock.now += 0.1
        assert (await cached.validate(token)).error == "token_revoked"
        assert (await cached.validate(token)).error == "token_revoked"  # never cached
