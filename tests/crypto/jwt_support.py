"""Shared pieces of the crypto/jwt.py tests: keys, hand-forged tokens, constants."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import settings

from auth_service.crypto.jwk import public_jwk_members, thumbprint
from auth_service.crypto.jwt import (
    TokenRejected,
    check_claims,
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


def check(
    payload: Mapping[str, Any], *, now: datetime = NOW, leeway: timedelta = LEEWAY, **kwargs: Any
) -> None:
    check_claims(payload, issuer=ISSUER, audiences=AUDIENCES, now=now, leeway=leeway, **kwargs)
