"""Speed: ``LocalVerifier.verify`` against bare ``jwt.decode`` with the same key and tokens
(the JWKS from an in-process mock, no network). Target: at least 0.8x the bare rate, on a
mix where each token comes back (the signature cache) and on all-distinct tokens."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from auth_service_client.verifier import LocalVerifier
from test_jwks_cache import _KEYS, AUDIENCE, ISSUER, FakeJwks, public_jwk, token

DISTINCT, REPEATS = 300, 5


async def _rates(tokens: list[str], cache_size: int) -> tuple[float, float]:
    """Best of three rounds each; every round starts with an empty signature cache."""
    key = _KEYS[0].public_key()
    best_local = best_bare = float("inf")
    for _ in range(3):
        jwks = FakeJwks([public_jwk(_KEYS[0], "k0")])
        http = httpx.AsyncClient(transport=httpx.MockTransport(jwks))
        verifier = LocalVerifier(
            "http://auth", issuer=ISSUER, audience=AUDIENCE, http=http, cache_size=cache_size
        )
        async with http, verifier:
            await verifier.jwks.get("k0")  # the JWKS fetched once, up front
            started = time.perf_counter()
            for item in tokens:
                assert (await verifier.verify(item)).valid
            best_local = min(best_local, time.perf_counter() - started)
        started = time.perf_counter()
        for item in tokens:
            jwt.decode(item, key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER, leeway=10)
        best_bare = min(best_bare, time.perf_counter() - started)
    return len(tokens) / best_local, len(tokens) / best_bare


@pytest.mark.parametrize(
    ("mix", "cache_size"), [("each token 5 times", 10_000), ("all distinct, no cache", 0)]
)
async def test_local_verify_keeps_up_with_bare_jwt_decode(mix: str, cache_size: int) -> None:
    distinct = [token(_KEYS[0], "k0") for _ in range(DISTINCT)]
    tokens = distinct * REPEATS if cache_size else distinct
    local, bare = await _rates(tokens, cache_size)
    print(f"\n{mix}: LocalVerifier {local:,.0f}/s, jwt.decode {bare:,.0f}/s: {local / bare:.2f}x")
    assert local >= 0.8 * bare
