"""``SyncAuthClient``: the same verdicts against the real service, and the same retry, breaker
and cache semantics (failures injected with ``httpx.MockTransport``), from threads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from auth_service_client.errors import (
    CircuitOpenError,
    InvalidClientError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from auth_service_client.sync import SyncAuthClient
from auth_service_client.types import Verdict
from conftest import Service
from helpers import WALL, Clock


class Counting(httpx.BaseTransport):
    """The real network, with the paths asked for recorded."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def real(service: Service, **options: Any) -> SyncAuthClient:
    return SyncAuthClient(service.base_url, service.client_id, service.client_secret, **options)


def mocked(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> SyncAuthClient:
    options.setdefault("backoff", 0.0)
    return SyncAuthClient(
        "http://auth.test", "c", "s", transport=httpx.MockTransport(handler), **options
    )


def test_verdicts_batches_and_introspection_from_the_service(service: Service) -> None:
    pair, gone = service.login(), service.login()
    service.logout(gone)
    kinds = [pair["access_token"], "garbage", gone["access_token"]]
    transport = Counting()
    with real(service, transport=transport) as auth:
        singles = [auth.validate(token) for token in kinds]
        assert [v.error for v in singles] == [None, "malformed", "token_revoked"]
        assert (
            json.loads(json.dumps(singles[0].claims))
            == service.validate(pair["access_token"])["claims"]
        )
        tokens = [kinds[i % 3] for i in range(201)]
        assert auth.validate_many(tokens) == [singles[i % 3] for i in range(201)]
        assert auth.validate_many([]) == []
        assert transport.paths == ["/validate"] * 3 + ["/validate/batch"] * 3
        assert auth.introspect(pair["access_token"])["active"] is True
        assert auth.introspect("garbage") == {"active": False}


def test_a_service_token_once_for_fifty_threads(service: Service) -> None:
    transport = Counting()
    with real(service, transport=transport) as auth, ThreadPoolExecutor(50) as pool:
        tokens = set(pool.map(lambda _: auth.client_credentials_token(), range(50)))
        assert len(tokens) == 1
        assert transport.paths == ["/oauth/token"]
        verdict = auth.validate(tokens.pop())
        assert verdict.claims is not None and verdict.claims["client_id"] == service.client_id


def test_a_wrong_secret_is_invalid_client(service: Service) -> None:
    with SyncAuthClient(service.base_url, service.client_id, "wrong", breaker_failures=1) as auth:
        with pytest.raises(InvalidClientError):
            auth.validate("x")
        assert auth.breaker.state == "closed"


def test_validate_many_sends_its_chunks_from_several_threads() -> None:
    lock = threading.Lock()
    sizes: list[int] = []
    in_flight = peak = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        tokens = json.loads(request.content)["tokens"]
        with lock:
            sizes.append(len(tokens))
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return httpx.Response(200, json={"results": [{"valid": False, "error": t} for t in tokens]})

    tokens = [f"t{i}" for i in range(1000)]
    with mocked(handler, batch_threads=4) as auth:
        assert auth.validate_many(tokens) == [Verdict(False, None, t) for t in tokens]
    assert sizes.count(100) == 10
    assert peak == 4


def test_retries_on_transport_errors_only_and_never_on_a_4xx() -> None:
    steps: list[httpx.Response | Exception] = [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"valid": False, "error": "expired"}),
        httpx.Response(422, json={"error": "invalid_request"}),
    ]
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(1)
        step = steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    with mocked(handler, retries=2) as auth:
        assert auth.validate("t") == Verdict(False, None, "expired")
        assert len(asked) == 3
        with pytest.raises(RequestRejectedError) as rejected:
            auth.validate("t")
        assert (rejected.value.code, len(asked)) == ("invalid_request", 4)


def test_a_busy_503_is_retried_once_then_raises() -> None:
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(1)
        return httpx.Response(503, json={"error": "server_busy"}, headers={"Retry-After": "0"})

    with mocked(handler) as auth, pytest.raises(ServiceUnavailableError):
        auth.validate("t")
    assert len(asked) == 2


def test_the_breaker_opens_fails_fast_and_probes_after_the_cool_down() -> None:
    clock = Clock()
    down = True
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(1)
        if down:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"valid": False, "error": "expired"})

    with mocked(
        handler, retries=1, breaker_failures=2, breaker_reset_seconds=5.0, time_source=clock.mono
    ) as auth:
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError):
                auth.validate("t")
        assert len(asked) == 4
        with pytest.raises(CircuitOpenError):
            auth.validate("t")
        assert len(asked) == 4
        down = False
        clock.now += 5.0
        assert auth.validate("t").error == "expired"
        assert auth.breaker.state == "closed"


def test_the_cache_keeps_valid_verdicts_within_exp_and_never_invalid_ones() -> None:
    clock = Clock()
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        token = json.loads(request.content)["token"]
        asked.append(token)
        if token == "bad":
            return httpx.Response(200, json={"valid": False, "error": "token_revoked"})
        claims = {"sub": token, "exp": WALL + (2 if token == "short" else 900)}
        return httpx.Response(200, json={"valid": True, "claims": claims})

    options: dict[str, Any] = {
        "cache_seconds": 5.0,
        "time_source": clock.mono,
        "wall_time": clock.wall,
    }
    with mocked(handler, cache_max_entries=2, **options) as auth:
        for token in ("long", "long", "short", "short", "bad", "bad"):
            auth.validate(token)
        assert asked == ["long", "short", "bad", "bad"]
        clock.now = 2.0
        auth.validate("short")  # past its exp (and not cached again: no life left)
        auth.validate("other")
        auth.validate("third")  # evicts "long" (2 entries at most)
        auth.validate("long")
        clock.now = 7.0
        auth.validate("third")  # past cache_seconds
        assert asked[4:] == ["short", "other", "third", "long", "third"]
    with pytest.raises(ValueError, match="cache_seconds"):
        SyncAuthClient("http://x", "c", "s", cache_seconds=6.0)


def test_token_cache_margin_and_a_shared_failure_that_is_not_cached() -> None:
    clock = Clock()
    issued: list[int] = []
    failing = True

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(0.5 if failing else 0.05)  # long enough for all 20 to join the one call
        if failing:
            issued.append(0)
            return httpx.Response(500, json={"error": "internal_error"})
        issued.append(1)
        return httpx.Response(200, json={"access_token": f"svc-{len(issued)}", "expires_in": 100})

    with mocked(handler, time_source=clock.mono) as auth, ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(auth.client_credentials_token) for _ in range(20)]
        assert all(isinstance(f.exception(), ServiceUnavailableError) for f in futures)
        assert issued == [0]
        failing = False
        token = auth.client_credentials_token()
        clock.now = 89.9
        assert auth.client_credentials_token() == token
        clock.now = 90.0
        assert auth.client_credentials_token() != token
        assert issued == [0, 1, 1]
