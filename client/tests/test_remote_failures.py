"""``AuthClient``'s failure handling, with failures injected precisely through
``httpx.MockTransport``: retries and back-off, 4xx, 5xx, 503 + Retry-After, and the breaker's
accounting. (Its helpers serve test_remote_requests.py too.)"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from auth_service_client.remote_core import ServerError

Step = httpx.Response | Exception
VALID = {"valid": True, "claims": {"sub": "u1", "exp": 4_000_000_000}}


def ok(body: Any = VALID) -> httpx.Response:
    return httpx.Response(200, json=body)


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": code, "error_description": "no"}
    return httpx.Response(status, json=body, headers=headers)


class Script:
    """Answers the requests with the steps in turn (the last one repeats); records them."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def auth(script: Callable[[httpx.Request], Any], **options: Any) -> AuthClient:
    options.setdefault("backoff", 0.0)
    return AuthClient(
        "http://auth.test/base",
        "client",
        "secret",
        transport=httpx.MockTransport(script),
        **options,
    )


async def test_transport_errors_are_retried_then_succeed() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ok())
    async with auth(script, retries=2) as client:
        assert (await client.validate("t")).valid
    assert len(script.requests) == 3


async def test_transport_errors_past_the_retries_are_service_unavailable() -> None:
    script = Script(httpx.ReadTimeout("slow"))
    async with auth(script, retries=2) as client:
        with pytest.raises(ServiceUnavailableError, match="ReadTimeout after 3") as down:
            await client.validate("t")
        assert isinstance(down.value.__cause__, httpx.ReadTimeout)
        assert len(script.requests) == 3
    script = Script(httpx.ConnectError("refused"))
    async with auth(script, retries=0) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.validate("t")
    assert len(script.requests) == 1


def test_back_off_doubles_with_equal_jitter_and_a_cap() -> None:
    core = AuthClient("http://x", "c", "s", backoff=0.1)._core
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (10, 2.0)]:
        delays = [core.backoff_delay(retry) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered


async def test_the_back_off_is_actually_waited() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ConnectError("refused"), ok())
    async with auth(script, retries=2, backoff=0.1) as client:
        started = time.perf_counter()
        await client.validate("t")
    assert time.perf_counter() - started >= 0.05 + 0.1  # at least half of 0.1 and of 0.2


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (error(422, "invalid_request"), 422, "invalid_request"),
        (error(429, "rate_limited", {"Retry-After": "1"}), 429, "rate_limited"),
        (error(401, "invalid_token"), 401, "invalid_token"),
        (httpx.Response(404, text="<html>not here</html>"), 404, "http_404"),
    ],
)
async def test_a_4xx_is_rejected_never_retried_and_no_breaker_failure(
    answer: httpx.Response, status: int, code: str
) -> None:
    script = Script(answer)
    async with auth(script, retries=3, breaker_failures=1) as client:
        for _ in range(2):
            with pytest.raises(RequestRejectedError) as rejected:
                await client.validate("t")
            assert not isinstance(rejected.value, InvalidClientError)
            assert (rejected.value.status, rejected.value.code) == (status, code)
        assert client.breaker.state == "closed"
    assert len(script.requests) == 2


async def test_401_invalid_client_is_invalid_client_error() -> None:
    script = Script(error(401, "invalid_client"))
    async with auth(script) as client:
        with pytest.raises(InvalidClientError) as rejected:
            await client.client_credentials_token()
    assert (rejected.value.status, rejected.value.code, rejected.value.message) == (
        401,
        "invalid_client",
        "no",
    )
    assert len(script.requests) == 1


async def test_a_5xx_is_service_unavailable_at_once() -> None:
    script = Script(error(500, "internal_error"), error(502, "bad_gateway"))
    async with auth(script, retries=3) as client:
        for asked, status in enumerate((500, 502), start=1):
            with pytest.raises(ServerError) as down:
                await client.validate("t")
            assert isinstance(down.value, ServiceUnavailableError)
            assert (down.value.status, len(script.requests)) == (status, asked)


async def test_a_busy_503_is_retried_once_after_its_retry_after() -> None:
    script = Script(error(503, "server_busy", {"Retry-After": "1"}), ok())
    async with auth(script) as client:
        started = time.perf_counter()
        assert (await client.validate("t")).valid
        assert time.perf_counter() - started >= 0.95  # honoured
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    ("headers", "retries", "asked"),
    [
        ({"Retry-After": "0"}, 2, 2),  # once only
        ({"Retry-After": "120"}, 2, 1),  # too long to wait for: fail now
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 2, 1),
        ({}, 2, 1),
        ({"Retry-After": "0"}, 0, 1),  # retries=0: no retry at all
    ],
)
async def test_a_503_that_stays_busy_raises(
    headers: dict[str, str], retries: int, asked: int
) -> None:
    script = Script(error(503, "server_busy", headers))
    async with auth(script, retries=retries, breaker_failures=1) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.validate("t")
        assert client.breaker.state == "open"  # a 503 is a failure for the breaker
    assert len(script.requests) == asked


async def test_the_breaker_counts_calls_not_attempts_and_then_fails_fast() -> None:
    clock = Clock()
    script = Script(httpx.ConnectError("refused"))
    async with auth(script, retries=2, breaker_failures=2, time_source=clock) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.validate("t")
        assert (client.breaker.state, len(script.requests)) == ("closed", 3)
        with pytest.raises(ServiceUnavailableError):
            await client.introspect("t")
        assert client.breaker.state == "open"
        for call in (
            client.validate("t"),
            client.introspect("t"),
            client.client_credentials_token(),
        ):
            with pytest.raises(CircuitOpenError):
                await call
        assert len(script.requests) == 6  # nothing sent while open
        script.steps = [error(500, "internal_error")]
        clock.now += 10.0
        with pytest.raises(ServerError):
            await client.validate("t")  # the probe: a 5xx reopens
        assert (client.breaker.state, len(script.requests)) == ("open", 7)
        script.steps = [error(422, "invalid_request")]
        clock.now += 10.0
        with pytest.raises(RequestRejectedError):
            await client.validate("t")  # a 4xx probe: the service is up
        assert client.breaker.state == "closed"


async def test_a_200_that_is_not_json_is_unavailable_and_a_breaker_failure() -> None:
    script = Script(httpx.Response(200, text="<html>captive proxy</html>"))
    async with auth(script, breaker_failures=2) as client:
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError, match="not a JSON object"):
                await client.validate("t")
        assert client.breaker.state == "open"


async def test_a_batch_answer_of_the_wrong_length_is_refused() -> None:
    async with auth(Script(ok({"results": [VALID]}))) as client:
        with pytest.raises(ServiceUnavailableError, match="wrong number of results"):
            await client.validate_many(["a", "b"])
