"""The verification cache of /validate: a token's signature and static claim checks run once;
the time checks, key status and revocation run on every call (the key-status and revocation
cases are in test_validate_revocation.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.crypto.jwt import verify_parsed
from auth_service.services import validation
from auth_service.settings import Settings
from tests.support.http import client_headers, register_and_login, validate
from tests.support.service import Service, started

LEEWAY = 10  # the default AUTH_CLOCK_LEEWAY_SECONDS


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kid of every RSA signature check the validator runs."""
    calls: list[str] = []
    real = validation.verify_parsed

    def counting(parsed: Any, key: Any) -> dict[str, Any]:
        calls.append(parsed.header.kid)
        return real(parsed, key)

    monkeypatch.setattr(validation, "verify_parsed", counting)
    return calls


def _signed(service: Service, claims: dict[str, Any]) -> str:
    signing = service.container.keyring.signing
    assert signing is not None
    return jwt.encode(
        claims,
        signing.private_key,
        algorithm="RS256",
        headers={"typ": "at+jwt", "kid": signing.kid},
    )


async def _verdicts(service: Service, token: str, headers: dict[str, str], times: int) -> list[Any]:
    bodies = [await validate(service, token, headers) for _ in range(times)]
    return [body.get("error", body["valid"]) for body in bodies]


async def test_a_signature_and_a_static_rejection_are_checked_once(
    service: Service, verifications: list[str]
) -> None:
    user = await register_and_login(service)
    headers = await client_headers(service)
    genuine = jwt.decode(user.pair["access_token"], options={"verify_signature": False})
    assert await _verdicts(service, user.pair["access_token"], headers, 3) == [True] * 3
    assert len(verifications) == 1
    cases = [
        ({**genuine, "aud": "api.elsewhere.test"}, "invalid_audience"),
        ({**genuine, "iss": "https://elsewhere.test"}, "invalid_issuer"),
        ({key: value for key, value in genuine.items() if key != "sid"}, "malformed"),
    ]
    for claims, reason in cases:
        assert await _verdicts(service, _signed(service, claims), headers, 3) == [reason] * 3
    assert len(verifications) == 1 + len(cases)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_a_remembered_token_becomes_valid_when_its_time_comes(
    service: Service, clock: FrozenClock, verifications: list[str], claim: str
) -> None:
    user = await register_and_login(service)
    headers = await client_headers(service)
    genuine = jwt.decode(user.pair["access_token"], options={"verify_signature": False})
    now = int(clock.now().timestamp())
    token = _signed(service, {**genuine, claim: now + LEEWAY + 5})
    assert await _verdicts(service, token, headers, 2) == ["not_yet_valid"] * 2
    clock.advance(5)
    assert await _verdicts(service, token, headers, 1) == [True]
    assert len(verifications) == 1


async def test_a_remembered_token_expires_on_time(
    service: Service, clock: FrozenClock, verifications: list[str]
) -> None:
    user = await register_and_login(service)
    headers = await client_headers(service)
    genuine = jwt.decode(user.pair["access_token"], options={"verify_signature": False})
    token = _signed(service, {**genuine, "exp": int(clock.now().timestamp()) + 5})
    assert await _verdicts(service, token, headers, 2) == [True] * 2
    clock.advance(5 + LEEWAY - 1)
    assert await _verdicts(service, token, headers, 1) == [True]
    clock.advance(1)
    assert await _verdicts(service, token, headers, 2) == ["expired"] * 2
    assert len(verifications) == 1


@pytest.mark.parametrize(
    "off",
    [
        {"validation_cache_size": 0},
        {"validation_cache_max_bytes": 0},
        {"validation_cache_max_bytes": 600},  # less than any RS256 token's entry
    ],
)
async def test_with_the_cache_off_every_call_verifies_the_signature(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    verifications: list[str],
    off: dict[str, int],
) -> None:
    async with started(make_container(make_settings(**off))) as service:
        user = await register_and_login(service)
        headers = await client_headers(service)
        assert await _verdicts(service, user.pair["access_token"], headers, 3) == [True] * 3
        forged = _signed(service, {"iss": "x"})
        assert await _verdicts(service, forged, headers, 2) == ["malformed"] * 2
    assert len(verifications) == 5


async def test_a_variant_of_a_cached_token_is_verified_afresh_and_refused(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def counting(parsed: Any, key: Any) -> dict[str, Any]:
        calls.append(parsed.header.kid)
        return verify_parsed(parsed, key)

    monkeypatch.setattr(validation, "verify_parsed", counting)
    user = await register_and_login(service)
    headers = await client_headers(service)
    token = user.pair["access_token"]
    assert (await validate(service, token, headers))["valid"] is True
    head, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "roles": ["admin"]}, "k" * 32, algorithm="HS256")
    variants = {
        f"{head}.{payload}.{signature[:10]}{'B' if signature[10] == 'A' else 'A'}{signature[11:]}": (
            "invalid_signature"
        ),
        f"{head}.{forged.split('.')[1]}.{signature}": "invalid_signature",
        f" {token}": "malformed",
        f"{token}.": "malformed",
        f"{head}.{payload}.{signature}=": "malformed",
    }
    for variant, reason in variants.items():
        for _ in range(2):
            assert await validate(service, variant, headers) == {"valid": False, "error": reason}
    assert (await validate(service, token, headers))["valid"] is True
    assert len(calls) == 1 + 2 * 2  # the cached genuine token once; each bad signature twice
