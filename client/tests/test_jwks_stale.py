"""A lapsed JWKS copy while the JWKS endpoint fails: used for ``max_stale`` seconds past its
max-age (refetches still rate-limited), then ``ServiceUnavailableError`` (fail closed), from
the cache and from ``LocalVerifier.verify``."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.jwks import JwksCache
from auth_service_client.verifier import LocalVerifier
from test_jwks_cache import _KEYS, AUDIENCE, ISSUER, Clock, FakeJwks, public_jwk, token

DAY = 86_400.0


@dataclass
class Flaky:
    """A ``FakeJwks`` that answers 503 while ``down``."""

    fake: FakeJwks
    down: bool = False
    failures: int = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.failures += 1
            return httpx.Response(503, json={"error": "service_unavailable"})
        return await self.fake(request)


async def test_a_lapsed_copy_is_used_for_max_stale_then_refused() -> None:
    clock = Clock()
    flaky = Flaky(FakeJwks([public_jwk(_KEYS[0], "k0")], max_age=60))
    async with httpx.AsyncClient(transport=httpx.MockTransport(flaky)) as http:
        cache = JwksCache(http, "http://auth/.well-known/jwks.json", clock=clock, max_stale=300)
        assert await cache.get("k0") is not None
        flaky.down = True
        clock.now += 60 + 299  # lapsed, within the grace: the old key still serves
        assert await cache.get("k0") is not None
        assert flaky.failures == 1
        assert await cache.get("k0") is not None  # within refetch_interval: no new request
        assert flaky.failures == 1
        clock.now += 2  # past max-age + max_stale
        with pytest.raises(ServiceUnavailableError):
            await cache.get("k0")
        clock.now += 30 * DAY  # a month of 503s: still refused, never the old key
        with pytest.raises(ServiceUnavailableError):
            await cache.get("k0")
        failures = flaky.failures
        for _ in range(20):  # still rate-limited while refused
            with pytest.raises(ServiceUnavailableError):
                await cache.get("k0")
        assert flaky.failures == failures
        flaky.down = False  # the endpoint is back: the key serves again
        clock.now += 5
        assert await cache.get("k0") is not None


async def test_verify_fails_closed_once_the_copy_is_past_max_stale() -> None:
    clock = Clock()
    flaky = Flaky(FakeJwks([public_jwk(_KEYS[0], "k0")], max_age=60))
    http = httpx.AsyncClient(transport=httpx.MockTransport(flaky))
    verifier = LocalVerifier(
        "http://auth", issuer=ISSUER, audience=AUDIENCE, http=http, monotonic=clock
    )
    good = token(_KEYS[0], "k0")
    async with verifier:
        assert (await verifier.verify(good)).valid
        flaky.down = True
        clock.now += 60 + 200  # default max_stale (300 s): still served
        assert (await verifier.verify(good)).valid
        clock.now += 30 * DAY
        with pytest.raises(ServiceUnavailableError):
            await verifier.verify(good)  # the remembered token too
        with pytest.raises(ServiceUnavailableError):
            await verifier.verify(token(_KEYS[0], "k0"))
    await http.aclose()
