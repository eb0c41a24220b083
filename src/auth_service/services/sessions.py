"""Sessions and refresh-token rotation with reuse detection (a session is one token family).

Refresh token format: ``secrets.token_urlsafe(32)`` (256 bits), stored only as SHA-256 hex.
A rotation runs in one transaction with the token row locked (``SELECT … FOR UPDATE`` on
PostgreSQL; on SQLite every transaction is ``BEGIN IMMEDIATE``, so writers already queue).
The pair a first use returned is kept in the store for the grace period, sealed under a key
derived from the refresh token itself, so the same request repeated gets the same pair.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.clock import Clock
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.crypto.passwords import PasswordHasher, hash_opaque
from auth_service.db.models import RefreshToken, Session, User
from auth_service.errors import InvalidRefreshTokenError, NotFoundError, RefreshTokenReusedError
from auth_service.services.keyring import KeyRing
from auth_service.services.password_policy import PasswordPolicy
from auth_service.services.revocation import (
    RevocationPolicy,
    revoke_jti,
    revoke_sessions,
    revoke_user_tokens,
)
from auth_service.services.store_keys import refresh_grace_key
from auth_service.services.tokens import issue_access_token, seconds_until
from auth_service.settings import Settings
from auth_service.store.base import Store

_GRACE_PURPOSE = "refresh-grace"
_MAX_USER_AGENT = 512
_MAX_REFRESH_TOKEN_LENGTH = 128


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    token_type: str = "Bearer"  # noqa: S105  (the RFC 6750 scheme name)


@dataclass
class SessionContext:
    """What the account, login, session and password use cases share. ``sessionmaker``
    writes (each use case commits its own transaction before it returns); ``reader`` only
    reads (no write lock on SQLite)."""

    sessionmaker: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    store: Store
    keyring: KeyRing
    settings: Settings
    clock: Clock
    hasher: PasswordHasher
    password_policy: PasswordPolicy
    # Urgent (known-IP) login hashes in flight per IP group on this instance (login.py).
    urgent_logins: dict[str, int] = field(default_factory=dict)

    @property
    def policy(self) -> RevocationPolicy:
        return RevocationPolicy(self.settings.access_token_ttl, self.settings.clock_leeway)


def _new_refresh_token(
    session: Session, now: datetime, ttl: timedelta, parent: uuid.UUID | None
) -> tuple[str, RefreshToken]:
    raw = secrets.token_urlsafe(32)
    row = RefreshToken(
        id=uuid.uuid4(),
        session_id=session.id,
        parent_id=parent,
        token_hash=hash_opaque(raw),
        created_at=now,
        expires_at=min(now + ttl, session.expires_at),
    )
    return raw, row


def _pair(
    ctx: SessionContext, user: User, session: Session, raw: str, row: RefreshToken, now: datetime
) -> TokenPair:
    access = issue_access_token(
        ctx.keyring,
        ctx.settings,
        now=now,
        subject=str(user.id),
        session_id=str(session.id),
        roles=user.roles,
        amr=session.amr,
    )
    return TokenPair(
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=raw,
        refresh_expires_in=seconds_until(row.expires_at, now),
    )


def clean_ip(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


async def start_session(
    ctx: SessionContext,
    db: AsyncSession,
    user: User,
    *,
    amr: Sequence[str],
    ip: str | None,
    user_agent: str | None,
) -> TokenPair:
    """A new session and its first token pair (flushed; the caller's transaction commits)."""
    now = ctx.clock.now()
    session = Session(
        id=uuid.uuid4(),
        user_id=user.id,
        amr=list(amr),
        ip=clean_ip(ip),
        user_agent=(user_agent or "")[:_MAX_USER_AGENT] or None,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=ctx.settings.refresh_token_ttl_seconds),
    )
    raw, row = _new_refresh_token(
        session, now, timedelta(seconds=ctx.settings.refresh_token_ttl_seconds), None
    )
    db.add(session)
    await db.flush()  # no ORM relationships: the session row must exist before its token's
    db.add(row)
    await db.flush()
    return _pair(ctx, user, session, raw, row, now)


class _Outcome(Enum):
    INVALID = "invalid"
    REUSED = "reused"


async def refresh(ctx: SessionContext, raw_token: str) -> TokenPair:
    """Rotate ``raw_token``: a new pair, the grace pair again, or reuse → session revoked."""
    if not raw_token or len(raw_token) > _MAX_REFRESH_TOKEN_LENGTH:
        raise InvalidRefreshTokenError()
    token_hash = hash_opaque(raw_token)
    outcome = await _rotate(ctx, raw_token, token_hash)
    if outcome is _Outcome.INVALID:
        raise InvalidRefreshTokenError()
    if outcome is _Outcome.REUSED:
        raise RefreshTokenReusedError()
    return outcome


async def _rotate(ctx: SessionContext, raw_token: str, token_hash: str) -> TokenPair | _Outcome:
    now = ctx.clock.now()
    async with ctx.sessionmaker() as db, db.begin():
        query = select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
        token = (await db.scalars(query)).one_or_none()
        if token is None:
            return _Outcome.INVALID
        session = await db.get(Session, token.session_id)
        user = await db.get(User, session.user_id) if session is not None else None
        if session is None or user is None:
            return _Outcome.INVALID
        if session.revoked_at is not None or token.revoked_at is not None:
            return _Outcome.INVALID
        if now >= token.expires_at or now >= session.expires_at or user.disabled:
            return _Outcome.INVALID
        if token.used_at is None:
            token.used_at = now
            session.last_used_at = now
            raw, child = _new_refresh_token(
                session, now, timedelta(seconds=ctx.settings.refresh_token_ttl_seconds), token.id
            )
            db.add(child)
            pair = _pair(ctx, user, session, raw, child, now)
            await _keep_for_grace(ctx, raw_token, token_hash, pair)
            return pair
        grace = timedelta(seconds=ctx.settings.refresh_reuse_grace_seconds)
        if now - token.used_at <= grace and await _successor_unused(db, token):
            again = await _grace_pair(ctx, raw_token, token_hash)
            if again is not None:
                return again
        await _revoke_family(db, session, now, reason="refresh_token_reused")
    await revoke_sessions(ctx.store, ctx.policy, [str(session.id)])
    return _Outcome.REUSED


async def _successor_unused(db: AsyncSession, token: RefreshToken) -> bool:
    child = (
        await db.scalars(select(RefreshToken).where(RefreshToken.parent_id == token.id))
    ).first()
    return child is not None and child.used_at is None and child.revoked_at is None


def _grace_key(token_hash: str) -> str:
    return refresh_grace_key(token_hash)


async def _keep_for_grace(ctx: SessionContext, raw: str, token_hash: str, pair: TokenPair) -> None:
    seconds = ctx.settings.refresh_reuse_grace_seconds
    if seconds <= 0:
        return
    sealed = Envelope(raw, purpose=_GRACE_PURPOSE).seal(
        json.dumps(asdict(pair)).encode(), associated_data=token_hash
    )
    # A little longer than the grace period: the database decides whether grace applies.
    await ctx.store.put(
        _grace_key(token_hash), base64.b64encode(sealed).decode(), timedelta(seconds=seconds + 5)
    )


async def _grace_pair(ctx: SessionContext, raw: str, token_hash: str) -> TokenPair | None:
    value = (await ctx.store.get_many([_grace_key(token_hash)]))[0]
    if value is None:
        return None
    try:
        opened = Envelope(raw, purpose=_GRACE_PURPOSE).open(
            base64.b64decode(value), associated_data=token_hash
        )
    except (EnvelopeError, ValueError):
        return None
    data: dict[str, Any] = json.loads(opened)
    return TokenPair(**data)


async def _revoke_family(db: AsyncSession, session: Session, now: datetime, *, reason: str) -> None:
    if session.revoked_at is None:
        session.revoked_at = now
        session.revoked_reason = reason
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id == session.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def revoke_session(
    ctx: SessionContext, db: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID, reason: str
) -> None:
    """Revoke one of the user's live sessions; ``NotFoundError`` for anyone else's or a dead one."""
    session = await db.get(Session, session_id)
    if session is None or session.user_id != user_id or session.revoked_at is not None:
        raise NotFoundError("No such session.")
    await _revoke_family(db, session, ctx.clock.now(), reason=reason)
    await revoke_sessions(ctx.store, ctx.policy, [str(session_id)])


async def revoke_all_sessions(
    ctx: SessionContext,
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    reason: str,
    keep: uuid.UUID | None = None,
) -> list[str]:
    """Revoke every live session of the user (but ``keep``); returns their ids."""
    now = ctx.clock.now()
    query = select(Session).where(Session.user_id == user_id, Session.revoked_at.is_(None))
    revoked: list[str] = []
    for session in (await db.scalars(query)).all():
        if session.id == keep:
            continue
        await _revoke_family(db, session, now, reason=reason)
        revoked.append(str(session.id))
    await revoke_sessions(ctx.store, ctx.policy, revoked)
    return revoked


async def logout(ctx: SessionContext, *, claims: dict[str, Any]) -> None:
    """Revoke the caller's session (and so its refresh tokens) and this access token;
    committed before it returns."""
    now = ctx.clock.now()
    async with ctx.sessionmaker.begin() as db:
        with contextlib.suppress(NotFoundError, ValueError):
            await revoke_session(
                ctx,
                db,
                user_id=uuid.UUID(claims["sub"]),
                session_id=uuid.UUID(claims["sid"]),
                reason="logout",
            )
        expires_at = datetime.fromtimestamp(float(claims["exp"]), tz=now.tzinfo)
        await revoke_jti(
            ctx.store,
            jti=str(claims["jti"]),
            expires_at=expires_at,
            now=now,
            leeway=ctx.settings.clock_leeway,
        )


async def logout_all(ctx: SessionContext, *, user_id: uuid.UUID) -> None:
    """Every session of the user, and every token issued until now (``tokens_revoked_after``,
    the durable record the store's revoke-after entry indexes); committed before it returns."""
    now = ctx.clock.now()
    async with ctx.sessionmaker.begin() as db:
        await revoke_all_sessions(ctx, db, user_id=user_id, reason="logout_all")
        user = await db.get(User, user_id)
        if user is not None:
            user.tokens_revoked_after = now
        await revoke_user_tokens(ctx.store, ctx.policy, user_id=str(user_id), now=now)


async def delete_session(ctx: SessionContext, *, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    async with ctx.sessionmaker.begin() as db:
        await revoke_session(
            ctx, db, user_id=user_id, session_id=session_id, reason="deleted_by_user"
        )


async def list_sessions(ctx: SessionContext, *, user_id: uuid.UUID) -> list[Session]:
    now = ctx.clock.now()
    query = (
        select(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now)
        .order_by(Session.created_at.desc())
    )
    async with ctx.reader() as db:
        return list((await db.scalars(query)).all())
