"""JWKS caching against a mock service with an injected clock: max-age, ETag/304, and the
unknown-kid refetch (rate-limited, single-flight)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from auth_service_client.jwks import JwksCache, max_age
from auth_service_client.verifier import LocalVerifier

ISSUER, AUDIENCE = "https://auth.example.com", "api"
_KEYS = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    members = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**members, "kid": kid, "use": "sig", "alg": "RS256"}


def token(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "u", "aud": AUDIENCE, "exp": now + 600, "iat": now}
    body |= {"nbf": now, "jti": f"j{time.monotonic_ns()}", "sid": "s", "roles": [], **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeJwks:
    """A JWKS endpoint: ``keys`` served with ``max_age`` and a content ETag."""

    keys: list[dict[str, Any]]
    max_age: int = 300
    delay: float = 0.0
    requests: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        body = json.dumps({"keys": self.keys}).encode()
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        headers = {"Cache-Control": f"public, max-age={self.max_age}", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers=headers)
        return httpx.Response(200, content=body, headers=headers)

    @property
    def statuses(self) -> list[str | None]:
        return [r.headers.get("if-none-match") for r in self.requests]


def cache_for(fake: FakeJwks, clock: Clock) -> tuple[JwksCache, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return JwksCache(http, "http://auth/.well-known/jwks.json", clock=clock), http


def test_cache_control_is_read() -> None:
    assert max_age("public, max-age=300", 60) == 300
    assert max_age("max-age=0", 60) == 0
    assert max_age("no-store", 60) == 0
    assert max_age(None, 60) == 60
    assert max_age("public", 60) == 60


async def test_max_age_is_honoured_then_the_copy_is_revalidated_with_its_etag() -> None:
    fake, clock = FakeJwks([public_jwk(_KEYS[0], "k0")], max_age=300), Clock()
    cache, http = cache_for(fake, clock)
    async with http:
        assert await cache.get("k0") is not None
        clock.now += 299.9
        assert await cache.get("k0") is not None
        assert cache.fetches == 1  # no refetch before max-age
        clock.now += 0.2
        assert await cache.get("k0") is not None
        assert cache.fetches == 2  # refetched once it lapsed...
        assert fake.statuses[1] is not None  # ...with If-None-Match: a 304 kept the keys
        clock.now += 299.9
        await cache.get("k0")
        assert cache.fetches == 2  # and the 304 renewed the lifetime
        fake.keys = [public_jwk(_KEYS[1], "k1")]
        clock.now += 1
        assert await cache.get("k1") is not None and await cache.get("k0") is None
        assert fake.statuses[2] is not None and cache.fetches == 3  # changed: a 200


async def test_an_unknown_kid_refetches_at_most_once_per_interval() -> None:
    fake, clock = FakeJwks([public_jwk(_KEYS[0], "k0")]), Clock()
    cache, http = cache_for(fake, clock)
    async with http:
        await cache.get("k0")
        clock.now += 5  # the refetch interval
        for kid in ("x1", "x2", "x3"):
            assert await cache.get(kid) is None
        assert cache.fetches == 2
        clock.now += 4.9
        assert await cache.get("x4") is None
        assert cache.fetches == 2
        clock.now += 0.1
        fake.keys.append(public_jwk(_KEYS[1], "k1"))
        assert await cache.get("k1") is not None  # a new key is found by that one refetch
        assert cache.fetches == 3


async def test_fifty_concurrent_unknown_kid_verifies_cost_one_fetch() -> None:
    fake, clock = FakeJwks([public_jwk(_KEYS[0], "k0")], delay=0.05), Clock()
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    verifier = LocalVerifier(
        "http://auth", issuer=ISSUER, audience=AUDIENCE, http=http, monotonic=clock
    )
    async with http, verifier:
        assert (await verifier.verify(token(_KEYS[0], "k0"))).valid
        clock.now += 10
        fake.keys.append(public_jwk(_KEYS[1], "k1"))  # k1 appears: found by the one refetch
        unknown = [token(_KEYS[1], "k1") for _ in range(25)]
        unknown += [token(_KEYS[1], f"nope{i}") for i in range(25)]
        verdicts = await asyncio.gather(*(verifier.verify(t) for t in unknown))
        assert [v.valid for v in verdicts[:25]] == [True] * 25
        assert {v.error for v in verdicts[25:]} == {"unknown_key"}
        assert len(fake.requests) == 2  # one at start, ONE for all fifty


async def test_a_failed_fetch_keeps_the_keys_and_with_none_is_unavailable() -> None:
    from auth_service_client.errors import ServiceUnavailableError

    fake, clock = FakeJwks([public_jwk(_KEYS[0], "k0")], max_age=10), Clock()
    up = True

    async def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("down", request=request)
        return await fake(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    cache = JwksCache(http, "http://auth/jwks", clock=clock)
    async with http:
        up = False
        with pytest.raises(ServiceUnavailableError):
            await cache.get("k0")
        up = True
        clock.now += 5
        assert await cache.get("k0") is not None
        up = False
        clock.now += 11
        assert await cache.get("k0") is not None  # lapsed and unreachable: still held
        fetches = cache.fetches
        assert await cache.get("k0") is not None
        assert cache.fetches == fetches  # and not retried on every call
