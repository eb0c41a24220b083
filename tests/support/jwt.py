"""Shared pieces of the crypto/jwt.py tests: keys, hand-forged tokens, constants, and the
validator's verification path (``services/validation.py``: ``parse_token`` →
``check_token_type`` → ``verify_parsed`` → ``check_static_claims`` + ``TimeBounds.check``)
in the small steps the tests assert on."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import settings

from auth_service.crypto.jwk import public_jwk_members, thumbprint
from auth_service.crypto.jwt import (
    TokenHeader,
    TokenRejected,
    check_static_claims,
    parse_token,
    verify_parsed,
)

ISSUER = "https://auth.example.com"
AUDIENCES = ("orders-api", "billing-api")
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T0 = int(NOW.timestamp())
LEEWAY = timedelta(seconds=10)
SECOND = timedelta(seconds=1)
RS256 = ["RS256"]
FUZZ = settings(database=None, max_examples=200)


@dataclasses.dataclass(frozen=True)
class Keys:
    real: rsa.RSAPrivateKey
    attacker: rsa.RSAPrivateKey

    @property
    def kid(self) -> str:
        return thumbprint(public_jwk_members(self.real.public_key()))

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.real.public_key()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(part: Mapping[str, Any] | bytes) -> str:
    return b64(part if isinstance(part, bytes) else json.dumps(part).encode())


def forge(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    key: rsa.RSAPrivateKey | None = None,
) -> str:
    """A compact JWS signed RS256 with ``key`` by hand (an empty signature without one)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    if key is None:
        return f"{signing_input}."
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "orders-api",
        "exp": T0 + 900,
        "iat": T0,
        "nbf": T0,
        "jti": "jti-1",
        "sid": "session-1",
        "roles": ["user"],
        "amr": ["pwd"],
    }
    base.update(overrides)
    return base


def header(keys: Keys, **overrides: Any) -> dict[str, Any]:
    return {"alg": "RS256", "typ": "at+jwt", "kid": keys.kid, **overrides}


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(TokenRejected) as info:
        call()
    return info.value.reason


def parsed_header(token: str, *, allowed_algorithms: Sequence[str]) -> TokenHeader:
    """The vetted header, as the validator's ``parse_token`` returns it."""
    return parse_token(token, allowed_algorithms=allowed_algorithms).header


def verify_token(
    token: str, public_key: rsa.RSAPublicKey, *, algorithms: Sequence[str]
) -> dict[str, Any]:
    """``parse_token`` then ``verify_parsed``: the unchecked claims of a verified token."""
    return verify_parsed(parse_token(token, allowed_algorithms=algorithms), public_key)


def check(
    payload: Mapping[str, Any], *, now: datetime = NOW, leeway: timedelta = LEEWAY, **kwargs: Any
) -> None:
    """The validator's claims checks: ``check_static_claims``, then ``TimeBounds.check``."""
    bounds = check_static_claims(payload, issuer=ISSUER, audiences=AUDIENCES, **kwargs)
    bounds.check(now, leeway)
