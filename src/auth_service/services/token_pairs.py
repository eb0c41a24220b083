"""Token pairs: an access token and a refresh token, as login and refresh hand them out.

Refresh token format: ``secrets.token_urlsafe(32)`` (256 bits), stored only as SHA-256 hex.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_service.crypto.passwords import hash_opaque
from auth_service.db.refresh_tokens import NewToken
from auth_service.services.tokens import TokenIssuer, seconds_until
from auth_service.settings import Settings


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    token_type: str = "Bearer"  # noqa: S105  (the RFC 6750 scheme name)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    refresh_ttl: timedelta
    reuse_grace: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        return cls(
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
            reuse_grace=timedelta(seconds=settings.refresh_reuse_grace_seconds),
        )


def new_refresh_token(
    now: datetime, ttl: timedelta, session_expires_at: datetime
) -> tuple[str, NewToken]:
    """A fresh refresh token and its row's values; it never outlives its session."""
    raw = secrets.token_urlsafe(32)
    row = NewToken(
        token_id=uuid.uuid4(),
        token_hash=hash_opaque(raw),
        expires_at=min(now + ttl, session_expires_at),
    )
    return raw, row


def issue_pair(
    tokens: TokenIssuer,
    *,
    now: datetime,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    roles: Sequence[str],
    amr: Sequence[str],
    refresh_token: str,
    refresh_expires_at: datetime,
) -> TokenPair:
    access = tokens.user_token(
        now=now, subject=str(user_id), session_id=str(session_id), roles=roles, amr=amr
    )
    return TokenPair(
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=refresh_token,
        refresh_expires_in=seconds_until(refresh_expires_at, now),
    )
