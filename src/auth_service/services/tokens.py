"""Access tokens: RS256 JWS signed with the active key from the in-memory key cache.

Format: header ``{"alg": "RS256", "typ": "at+jwt", "kid"}``; claims ``iss, aud, exp, iat, nbf,
jti`` and ``sub, sid, roles, amr`` (user tokens) or ``sub, client_id, scope``
(service tokens). ``iat``/``nbf``/``exp`` are whole seconds.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from auth_service.crypto.jwt import AT_JWT, encode_token
from auth_service.errors import ServiceUnavailableError
from auth_service.services.keyring import KeyRing
from auth_service.settings import Settings


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: datetime
    expires_in: int


def audience_claim(audiences: Sequence[str]) -> str | list[str]:
    return audiences[0] if len(audiences) == 1 else list(audiences)


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What every access token says about who issued it, for whom, and for how long."""

    issuer: str
    audience: tuple[str, ...]
    ttl_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenPolicy:
        return cls(
            issuer=settings.issuer,
            audience=tuple(settings.audience),
            ttl_seconds=settings.access_token_ttl_seconds,
        )


class TokenIssuer:
    """Signs access tokens with the active key of the in-memory key cache."""

    def __init__(self, keyring: KeyRing, policy: TokenPolicy) -> None:
        self._keyring = keyring
        self._policy = policy

    def user_token(
        self,
        *,
        now: datetime,
        subject: str,
        session_id: str,
        roles: Sequence[str],
        amr: Sequence[str],
    ) -> IssuedToken:
        return self._issue(
            now, {"sub": subject, "sid": session_id, "roles": list(roles), "amr": list(amr)}
        )

    def service_token(self, *, now: datetime, client_id: str, scopes: Sequence[str]) -> IssuedToken:
        """A client-credentials token: ``sub`` and ``client_id`` name the client, ``scope`` is
        space-separated (RFC 9068 §2.2.3); no session, roles or amr."""
        claims = {"sub": client_id, "client_id": client_id, "scope": " ".join(scopes)}
        return self._issue(now, claims)

    def _issue(self, now: datetime, subject_claims: dict[str, Any]) -> IssuedToken:
        signing = self._keyring.signing
        if signing is None:
            raise ServiceUnavailableError("no active signing key is loaded")
        policy = self._policy
        issued_at = math.floor(now.timestamp())
        expires_at = issued_at + policy.ttl_seconds
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            "iss": policy.issuer,
            "aud": audience_claim(policy.audience),
            "exp": expires_at,
            "iat": issued_at,
            "nbf": issued_at,
            "jti": jti,
            **subject_claims,
        }
        token = encode_token(claims, private_key=signing.private_key, kid=signing.kid, typ=AT_JWT)
        return IssuedToken(
            token=token,
            jti=jti,
            expires_at=datetime.fromtimestamp(expires_at, UTC),
            expires_in=policy.ttl_seconds,
        )


def seconds_until(moment: datetime, now: datetime) -> int:
    return max(0, math.floor((moment - now) / timedelta(seconds=1)))
