"""Access tokens: RS256 JWS signed with the active key from the in-memory key cache.

Format: header ``{"alg": "RS256", "typ": "at+jwt", "kid"}``; claims ``iss, sub, aud, exp, iat,
nbf, jti, sid, roles, amr`` (user tokens). ``iat``/``nbf``/``exp`` are whole seconds.
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


def issue_access_token(
    keyring: KeyRing,
    settings: Settings,
    *,
    now: datetime,
    subject: str,
    session_id: str,
    roles: Sequence[str],
    amr: Sequence[str],
) -> IssuedToken:
    signing = keyring.signing
    if signing is None:
        raise ServiceUnavailableError("no active signing key is loaded")
    issued_at = math.floor(now.timestamp())
    expires_at = issued_at + settings.access_token_ttl_seconds
    jti = secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject,
        "aud": audience_claim(settings.audience),
        "exp": expires_at,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": jti,
        "sid": session_id,
        "roles": list(roles),
        "amr": list(amr),
    }
    token = encode_token(claims, private_key=signing.private_key, kid=signing.kid, typ=AT_JWT)
    return IssuedToken(
        token=token,
        jti=jti,
        expires_at=datetime.fromtimestamp(expires_at, UTC),
        expires_in=settings.access_token_ttl_seconds,
    )


def seconds_until(moment: datetime, now: datetime) -> int:
    return max(0, math.floor((moment - now) / timedelta(seconds=1)))
