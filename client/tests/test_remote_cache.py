"""``AuthClient``'s caches with injected clocks: the optional positive verdict cache (TTL,
``exp`` bound, LRU bound, never a negative verdict) and the client-credentials token cache
(margin, per scope, single-flight, failures not cached)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.remote import AuthClient
from auth_service_client.remote_core import MAX_CACHE_SECONDS
from auth_service_client.types import Verdict
from helpers import WALL, Clock


class Service:
    """/validate: tokens named ``valid-<exp offset>`` are valid until WALL + offset; /oauth/token:
    a new token each time (``expires_in`` settable, failures injectable)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.expires_in: Any = 100
        self.fail_next = 0
        self.delay = 0.0
        self.issued = 0

    def verdict(self, token: str) -> dict[str, Any]:
        if token.startswith("valid-"):
            exp = WALL + float(token.removeprefix("valid-"))
            return {"valid": True, "claims": {"sub": token, "exp": exp}}
        if token.startswith("noexp"):
            return {"valid": True, "claims": {"sub": token}}
        return {"valid": False, "error": "token_revoked"}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.url.path == "/validate":
            return httpx.Response(200, json=self.verdict(json.loads(request.content)["token"]))
        if request.url.path == "/validate/batch":
            tokens = json.loads(request.content)["tokens"]
            return httpx.Response(200, json={"results": [self.verdict(t) for t in tokens]})
        if self.fail_next:
            self.fail_next -= 1
            return httpx.Response(503, json={"error": "service_unavailable"})
        self.issued += 1
        body = {"access_token": f"svc-{self.issued}", "expires_in": self.expires_in}
        return httpx.Response(200, json=body)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service() -> Service:
    return Service()


def client(service: Service, clock: Clock, **options: Any) -> AuthClient:
    return AuthClient(
        "http://auth.test",
        "c",
        "s",
        backoff=0.0,
        transport=httpx.MockTransport(service),
        time_source=clock.mono,
        wall_time=clock.wall,
        **options,
    )


async def test_the_cache_is_off_by_default(service: Service, clock: Clock) -> None:
    async with client(service, clock) as auth:
        for _ in range(3):
            assert (await auth.validate("valid-900")).valid
    assert len(service.asked) == 3


async def test_a_valid_verdict_is_cached_for_cache_seconds(service: Service, clock: Clock) -> None:
    async with client(service, clock, cache_seconds=5.0) as auth:
        first = await auth.validate("valid-900")
        clock.now = 4.99
        assert await auth.validate("valid-900") is first
        assert len(service.asked) == 1
        clock.now = 5.0
        assert (await auth.validate("valid-900")).valid
        assert len(service.asked) == 2


async def test_a_cached_verdict_never_outlives_the_tokens_exp(
    service: Service, clock: Clock
) -> None:
    async with client(service, clock, cache_seconds=5.0) as auth:
        await auth.validate("valid-2")
        clock.now = 1.99
        await auth.validate("valid-2")
        assert len(service.asked) == 1
        clock.now = 2.0  # exp: the service is asked again (and would say expired)
        await auth.validate("valid-2")
        assert len(service.asked) == 2


@pytest.mark.parametrize("token", ["revoked", "noexp", "valid--1"])
async def test_invalid_or_unbounded_verdicts_are_never_cached(
    service: Service, clock: Clock, token: str
) -> None:
    async with client(service, clock, cache_seconds=5.0) as auth:
        await auth.validate(token)
        await auth.validate(token)
        await auth.validate_many([token])
    assert len(service.asked) == 3


async def test_the_cache_is_bounded_least_recently_used_first(
    service: Service, clock: Clock
) -> None:
    async with client(service, clock, cache_seconds=5.0, cache_max_entries=3) as auth:
        for token in ("valid-901", "valid-902", "valid-903"):
            await auth.validate(token)
        await auth.validate("valid-901")  # used: now the most recent
        await auth.validate("valid-904")  # evicts 902, the least recently used
        assert len(auth._core.cache or ()) == 3
        asked = len(service.asked)
        await auth.validate("valid-901")
        await auth.validate("valid-903")
        assert len(service.asked) == asked
        await auth.validate("valid-902")
        assert len(service.asked) == asked + 1


async def test_validate_many_uses_and_fills_the_cache(service: Service, clock: Clock) -> None:
    async with client(service, clock, cache_seconds=5.0) as auth:
        await auth.validate("valid-900")
        verdicts = await auth.validate_many(["valid-900", "revoked", "valid-901"])
        assert [v.valid for v in verdicts] == [True, False, True]
        assert service.asked == ["/validate", "/validate/batch"]
        assert (await auth.validate_many(["valid-901", "valid-900"]))[0].valid
        assert await auth.validate_many(["valid-900"]) == [Verdict(True, verdicts[0].claims)]
        assert len(service.asked) == 2  # all from the cache: no request


@pytest.mark.parametrize("seconds", [-1.0, MAX_CACHE_SECONDS + 0.01, 60.0])
def test_cache_seconds_outside_0_to_5_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="revoked token"):
        AuthClient("http://x", "c", "s", cache_seconds=seconds)


@pytest.mark.parametrize(("expires_in", "kept"), [(100, 90.0), (900, 870.0), (1, 0.9)])
async def test_a_service_token_is_kept_until_expiry_minus_a_margin(
    service: Service, clock: Clock, expires_in: int, kept: float
) -> None:
    service.expires_in = expires_in
    async with client(service, clock) as auth:
        token = await auth.client_credentials_token()
        clock.now = kept - 0.01
        assert await auth.client_credentials_token() == token
        clock.now = kept
        assert await auth.client_credentials_token() != token
    assert len(service.asked) == 2


async def test_service_tokens_are_cached_per_scope(service: Service, clock: Clock) -> None:
    async with client(service, clock) as auth:
        tokens = [
            await auth.client_credentials_token(scope) for scope in (None, "a", "b", "a", None)
        ]
    assert tokens == ["svc-1", "svc-2", "svc-3", "svc-2", "svc-1"]


async def test_fifty_concurrent_callers_share_one_request(service: Service, clock: Clock) -> None:
    service.delay = 0.05
    async with client(service, clock) as auth:
        tokens = await asyncio.gather(*(auth.client_credentials_token() for _ in range(50)))
    assert set(tokens) == {"svc-1"}
    assert service.asked == ["/oauth/token"]


async def test_a_failure_is_shared_by_the_waiters_but_not_cached(
    service: Service, clock: Clock
) -> None:
    service.delay, service.fail_next = 0.05, 1
    async with client(service, clock) as auth:
        results = await asyncio.gather(
            *(auth.client_credentials_token() for _ in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, ServiceUnavailableError) for r in results)
        assert len(service.asked) == 1
        assert await auth.client_credentials_token() == "svc-1"  # asked again
        assert len(service.asked) == 2


async def test_a_malformed_token_answer_is_not_cached(service: Service, clock: Clock) -> None:
    service.expires_in = "soon"
    async with client(service, clock) as auth:
        with pytest.raises(ServiceUnavailableError, match="expires_in"):
            await auth.client_credentials_token()
        service.expires_in = 60
        assert await auth.client_credentials_token() == "svc-2"


async def test_a_cancelled_caller_does_not_cancel_the_shared_request(
    service: Service, clock: Clock
) -> None:
    service.delay = 0.05
    async with client(service, clock) as auth:
        first = asyncio.create_task(auth.client_credentials_token())
        second = asyncio.create_task(auth.client_credentials_token())
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == "svc-1"
        with pytest.raises(asyncio.CancelledError):
            await first
    assert len(service.asked) == 1
