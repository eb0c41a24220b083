"""The rules' edges (the service's leeway arithmetic, the alg allow-list) and the signature
cache: a repeat token skips RSA but its times and key are checked again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from auth_service_client import rules
from auth_service_client.verifier import LocalVerifier
from test_jwks_cache import _KEYS, AUDIENCE, ISSUER, FakeJwks, public_jwk, token

T, L = 1_000_000.0, 10.0


def reason(call: Any) -> str | None:
    try:
        call()
    except rules.Rejected as exc:
        return exc.reason
    return None


def test_time_bounds_use_the_service_leeway_arithmetic() -> None:
    bounds = rules.TimeBounds(exp=T, nbf=T - 100, iat=T - 100)
    assert reason(lambda: bounds.check(T + L - 1, L)) is None
    assert reason(lambda: bounds.check(T + L, L)) == "expired"
    early = rules.TimeBounds(exp=T + 900, nbf=T, iat=None)
    assert reason(lambda: early.check(T - L, L)) is None
    assert reason(lambda: early.check(T - L - 1, L)) == "not_yet_valid"
    issued = rules.TimeBounds(exp=T + 900, nbf=None, iat=T)
    assert reason(lambda: issued.check(T - L, L)) is None
    assert reason(lambda: issued.check(T - L - 1, L)) == "not_yet_valid"


def test_only_rs256_can_be_allowed() -> None:
    assert rules.allow_list(["RS256", "HS256", "none", "ES256"]) == {"RS256"}
    assert rules.allow_list(["HS256"]) == frozenset()
    with pytest.raises(TypeError):
        rules.allow_list("RS256")


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_cached_token_skips_rsa_but_times_and_key_are_rechecked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, mono = Clock(), Clock()
    jwks = FakeJwks([public_jwk(_KEYS[0], "k0")], max_age=60)
    http = httpx.AsyncClient(transport=httpx.MockTransport(jwks))
    calls = []
    verify = rules.verify_signature

    def counted(parsed: rules.Parsed, key: Any) -> dict[str, Any]:
        calls.append(parsed.kid)
        return verify(parsed, key)

    monkeypatch.setattr(rules, "verify_signature", counted)
    now = int(clock.now)
    tok = token(_KEYS[0], "k0", iat=now, nbf=now, exp=now + 100)
    wrong_aud = token(_KEYS[0], "k0", aud="other")
    verifier = LocalVerifier(
        "http://auth", issuer=ISSUER, audience=AUDIENCE, http=http, clock=clock, monotonic=mono
    )
    async with http, verifier:
        for _ in range(3):
            assert (await verifier.verify(tok)).valid
            assert (await verifier.verify(wrong_aud)).error == "invalid_audience"
        assert len(calls) == 2  # one RSA verify per token
        shared = (await verifier.verify(tok)).claims
        assert shared is not None
        with pytest.raises(TypeError):  # a caller cannot change what the cache answers others
            shared["sub"] = "someone-else"  # type: ignore[index]
        clock.now += 110
        assert (await verifier.verify(tok)).error == "expired"
        clock.now -= 110
        jwks.keys = [public_jwk(_KEYS[1], "k1")]  # k0 unpublished
        mono.now += 61
        assert (await verifier.verify(tok)).error == "unknown_key"
        assert len(calls) == 2
