"""The verification cache's bounds: bytes (each entry charged ``entry_cost``) and entries, in
least-recently-used order; either bound 0 disables it; an entry over the byte bound on its own
is not cached. Its use by /validate is in tests/api/test_validate_cache.py."""

from __future__ import annotations

import base64
import gc
import json
import secrets
import tracemalloc
import uuid
from typing import Any

from auth_service.crypto.jwt import check_static_claims, parse_token
from auth_service.services.validation import SignatureCache, Verified, entry_cost

ISSUER = "https://auth.example.com"
KID = "k" * 43  # an RFC 7638 thumbprint's length
MIB = 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_HEADER = _b64(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": KID}).encode())


def _token(roles: int = 1, signature_bytes: int = 256) -> str:
    """A distinct user access token as the service signs it (~790 characters), its signature
    random bytes: the cache stores what the validator hands it and never checks signatures."""
    claims = {
        "iss": ISSUER,
        "aud": "auth-service",
        "exp": 1_765_100_000,
        "iat": 1_765_099_100,
        "nbf": 1_765_099_100,
        "jti": secrets.token_urlsafe(16),
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "roles": [f"role-{i}" for i in range(roles)],
        "amr": ["pwd"],
    }
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{_HEADER}.{payload}.{_b64(secrets.token_bytes(signature_bytes))}"


def _verified(token: str) -> Verified:
    """What the validator caches for ``token``: the kid, the decoded claims, their bounds."""
    parsed = parse_token(token, allowed_algorithms=["RS256"])
    claims: dict[str, Any] = json.loads(parsed.payload)
    return KID, claims, check_static_claims(claims, issuer=ISSUER, audiences=["auth-service"])


def _fill(cache: SignatureCache, count: int, **shape: int) -> list[str]:
    tokens = [_token(**shape) for _ in range(count)]
    for token in tokens:
        cache.put(token, _verified(token))
    return tokens


def test_the_byte_bound_holds_under_many_distinct_tokens_in_real_memory() -> None:
    bound = 1 * MIB
    cache = SignatureCache(100_000, bound)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(4_000):  # ~11 MB of entries through a 1 MiB cache
            token = _token()
            cache.put(token, _verified(token))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.charged <= bound
    assert 300 < len(cache) < 400  # ~2.8 KB each
    # The estimate is honest: what the entries really hold is near what they are charged.
    assert 0.75 * cache.charged < held < 1.25 * bound, (held, cache.charged)


def test_an_entry_is_charged_near_its_measured_size() -> None:
    for shape in ({"roles": 1}, {"roles": 8}, {"roles": 2, "signature_bytes": 512}):
        tokens = [_token(**shape) for _ in range(2_000)]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            cache = SignatureCache(100_000, 1024 * MIB)
            for token in tokens:
                fresh = "".join(token)  # a copy only the cache holds, as a request body's
                cache.put(fresh, _verified(fresh))
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        charged = sum(entry_cost(token) for token in tokens)
        assert 0.8 * held < charged < 1.3 * held, (shape, held, charged)


def test_least_recently_used_go_first() -> None:
    tokens = [_token() for _ in range(4)]
    cost = max(entry_cost(token) for token in tokens)
    cache = SignatureCache(100_000, 3 * cost)
    for token in tokens[:3]:
        cache.put(token, _verified(token))
    assert cache.get(tokens[0]) is not None  # now the most recent: 1, 2, 0
    cache.put(tokens[3], _verified(tokens[3]))  # evicts 1: 2, 0, 3
    assert cache.get(tokens[1]) is None
    assert cache.get(tokens[2]) is not None  # 0, 3, 2
    cache.put(tokens[1], _verified(tokens[1]))  # evicts 0: 3, 2, 1
    assert [cache.get(token) is not None for token in tokens] == [False, True, True, True]


def test_the_entry_count_stays_a_second_bound() -> None:
    cache = SignatureCache(10, 64 * MIB)
    tokens = _fill(cache, 25)
    assert len(cache) == 10
    assert [cache.get(token) is not None for token in tokens] == [False] * 15 + [True] * 10
    assert cache.charged == sum(entry_cost(token) for token in tokens[15:])


def test_either_bound_zero_disables_the_cache() -> None:
    for size, max_bytes in ((0, 64 * MIB), (100_000, 0)):
        cache = SignatureCache(size, max_bytes)
        tokens = _fill(cache, 3)
        assert len(cache) == 0 and cache.charged == 0
        assert all(cache.get(token) is None for token in tokens)


def test_an_entry_larger_than_the_bound_is_not_cached_and_evicts_nothing() -> None:
    small = _token()
    large = _token(roles=40)
    cache = SignatureCache(100_000, entry_cost(large) - 1)
    cache.put(small, _verified(small))
    cache.put(large, _verified(large))
    assert cache.get(large) is None
    assert cache.get(small) is not None
    assert cache.charged == entry_cost(small)


def test_putting_a_cached_token_again_charges_it_once() -> None:
    token = _token()
    cache = SignatureCache(100_000, 64 * MIB)
    cache.put(token, _verified(token))
    cache.put(token, _verified(token))
    assert len(cache) == 1 and cache.charged == entry_cost(token)


def test_the_charge_follows_the_claims_and_the_token() -> None:
    plain, many_roles, big_key = _token(), _token(roles=20), _token(signature_bytes=512)
    assert 2_400 < entry_cost(plain) < 3_200
    assert entry_cost(many_roles) > entry_cost(plain) + 7 * 20 * len('"role-10",') * 3 // 4
    assert entry_cost(big_key) - entry_cost(plain) == len(big_key) - len(plain)
