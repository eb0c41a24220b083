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
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import RefreshToken, Session, User
from auth_service.db.session import Database
from auth_service.errors import InvalidRefreshTokenError, NotFoundError, RefreshTokenReusedError
from auth_service.services.audit import Audit
from auth_service.services.revocation import (
    RevocationPolicy,
    revoke_jti,
    revoke_sessions,
    revoke_user_tokens,
)
from auth_service.services.store_keys import refresh_grace_key
from auth_service.services.tokens import TokenIssuer, seconds_until
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


def clean_ip(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


class _Outcome(Enum):
    INVALID = "invalid"
    REUSED = "reused"


class Sessions:
    """Sessions (one refresh-token family each): start, rotate, list and revoke them."""

    def __init__(
        self,
        db: Database,
        store: Store,
        tokens: TokenIssuer,
        policy: SessionPolicy,
        revocation: RevocationPolicy,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self._db = db
        self._store = store
        self._audit = audit
        self._tokens = tokens
        self._policy = policy
        self._revocation = revocation
        self._clock = clock

    async def start(
        self,
        db: AsyncSession,
        user: User,
        *,
        amr: Sequence[str],
        ip: str | None,
        user_agent: str | None,
    ) -> TokenPair:
        """A new session and its first token pair, in the caller's transaction (flushed;
        the caller commits)."""
        now = self._clock.now()
        session = Session(
            id=uuid.uuid4(),
            user_id=user.id,
            amr=list(amr),
            ip=clean_ip(ip),
            user_agent=(user_agent or "")[:_MAX_USER_AGENT] or None,
            created_at=now,
            last_used_at=now,
            expires_at=now + self._policy.refresh_ttl,
        )
        raw, row = _new_refresh_token(session, now, self._policy.refresh_ttl, None)
        db.add(session)
        await db.flush()  # no ORM relationships: the session row must exist before its token's
        db.add(row)
        await db.flush()
        return self._pair(user, session, raw, row, now)

    async def refresh(self, raw_token: str) -> TokenPair:
        """Rotate ``raw_token``: a new pair, the grace pair again, or reuse → session revoked."""
        if not raw_token or len(raw_token) > _MAX_REFRESH_TOKEN_LENGTH:
            raise InvalidRefreshTokenError()
        token_hash = hash_opaque(raw_token)
        outcome = await self._rotate(raw_token, token_hash)
        if outcome is _Outcome.INVALID:
            raise InvalidRefreshTokenError()
        if outcome is _Outcome.REUSED:
            raise RefreshTokenReusedError()
        return outcome

    async def logout(self, *, claims: dict[str, Any]) -> None:
        """Revoke the caller's session (and so its refresh tokens) and this access token;
        committed before it returns."""
        now = self._clock.now()
        async with self._db.transaction() as db:
            ended = False
            with contextlib.suppress(NotFoundError, ValueError):
                await self.revoke_one(
                    db,
                    user_id=uuid.UUID(claims["sub"]),
                    session_id=uuid.UUID(claims["sid"]),
                    reason="logout",
                )
                ended = True
            expires_at = datetime.fromtimestamp(float(claims["exp"]), tz=now.tzinfo)
            await revoke_jti(
                self._store,
                jti=str(claims["jti"]),
                expires_at=expires_at,
                now=now,
                leeway=self._revocation.leeway,
            )
            if ended:  # last: the audit head lock is not held across the store call above
                await self._audit.record(
                    db, "logout", subject=str(claims["sub"]), details={"session_id": claims["sid"]}
                )

    async def logout_with_refresh(self, raw_token: str) -> None:
        """Revoke the session that ``raw_token`` belongs to (browser mode's logout, where the
        cookie is the credential); nothing for a token that is not known, or is dead."""
        if not raw_token or len(raw_token) > _MAX_REFRESH_TOKEN_LENGTH:
            return
        query = select(RefreshToken).where(RefreshToken.token_hash == hash_opaque(raw_token))
        async with self._db.transaction() as db:
            token = (await db.scalars(query)).one_or_none()
            if token is None or token.revoked_at is not None:
                return
            session = await db.get(Session, token.session_id)
            if session is None or session.revoked_at is not None:
                return
            await self.revoke_one(
                db, user_id=session.user_id, session_id=session.id, reason="logout"
            )
            await self._audit.record(
                db,
                "logout",
                actor=str(session.user_id),
                subject=str(session.user_id),
                details={"session_id": str(session.id), "by": "cookie"},
            )

    async def logout_all(self, *, user_id: uuid.UUID) -> None:
        """Every session of the user, and every token issued until now
        (``users.tokens_revoked_after``, the durable record that the store's revoke-after
        entry indexes and the revocation index rebuilds from); committed before it returns."""
        async with self._db.transaction() as db:
            user = await db.get(User, user_id, with_for_update=True)
            if user is not None:
                await self.end_all(db, user, reason="logout_all")
                await self._audit.record(db, "logout_all", subject=str(user_id))

    async def end_all(self, db: AsyncSession, user: User, *, reason: str) -> None:
        """In the caller's transaction (it commits): every session of ``user`` revoked and
        every token issued until now (``tokens_revoked_after`` and the store's entries)."""
        now = self._clock.now()
        await self.revoke_all(db, user_id=user.id, reason=reason)
        user.tokens_revoked_after = now
        user.updated_at = now
        await revoke_user_tokens(self._store, self._revocation, user_id=str(user.id), now=now)

    async def delete(self, *, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
        """The user ends one of its sessions; ``NotFoundError`` for anyone else's."""
        async with self._db.transaction() as db:
            await self.revoke_one(
                db, user_id=user_id, session_id=session_id, reason="deleted_by_user"
            )

    async def live(self, *, user_id: uuid.UUID) -> list[Session]:
        now = self._clock.now()
        query = (
            select(Session)
            .where(
                Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now
            )
            .order_by(Session.created_at.desc())
        )
        async with self._db.read() as db:
            return [*(await db.scalars(query)).all()]

    async def revoke_all(
        self,
        db: AsyncSession,
        *,
        user_id: uuid.UUID,
        reason: str,
        keep: uuid.UUID | None = None,
    ) -> list[str]:
        """Revoke every live session of the user (but ``keep``), in the caller's transaction
        (it commits); returns their ids."""
        now = self._clock.now()
        query = select(Session).where(Session.user_id == user_id, Session.revoked_at.is_(None))
        revoked: list[str] = []
        for session in (await db.scalars(query)).all():
            if session.id == keep:
                continue
            await _revoke_family(db, session, now, reason=reason)
            revoked.append(str(session.id))
        await revoke_sessions(self._store, self._revocation, revoked)
        return revoked

    async def revoke_one(
        self, db: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID, reason: str
    ) -> None:
        """Revoke one live session of the user, in the caller's transaction;
        ``NotFoundError`` for anyone else's or a dead one."""
        session = await db.get(Session, session_id)
        if session is None or session.user_id != user_id or session.revoked_at is not None:
            raise NotFoundError("No such session.")
        await _revoke_family(db, session, self._clock.now(), reason=reason)
        await revoke_sessions(self._store, self._revocation, [str(session_id)])

    def _pair(
        self, user: User, session: Session, raw: str, row: RefreshToken, now: datetime
    ) -> TokenPair:
        access = self._tokens.user_token(
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

    async def _rotate(self, raw_token: str, token_hash: str) -> TokenPair | _Outcome:
        now = self._clock.now()
        async with self._db.transaction() as db:
            query = (
                select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
            )
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
                raw, child = _new_refresh_token(session, now, self._policy.refresh_ttl, token.id)
                db.add(child)
                pair = self._pair(user, session, raw, child, now)
                await self._keep_for_grace(raw_token, token_hash, pair)
                return pair
            if now - token.used_at <= self._policy.reuse_grace and await _successor_unused(
                db, token
            ):
                again = await self._grace_pair(raw_token, token_hash)
                if again is not None:
                    return again
            await _revoke_family(db, session, now, reason="refresh_token_reused")
            await self._audit.record(
                db,
                "refresh.reuse_detected",
                subject=str(session.user_id),
                details={"session_id": str(session.id)},
            )
        await revoke_sessions(self._store, self._revocation, [str(session.id)])
        return _Outcome.REUSED

    async def _keep_for_grace(self, raw: str, token_hash: str, pair: TokenPair) -> None:
        grace = self._policy.reuse_grace
        if grace <= timedelta(0):
            return
        sealed = Envelope(raw, purpose=_GRACE_PURPOSE).seal(
            json.dumps(asdict(pair)).encode(), associated_data=token_hash
        )
        # A little longer than the grace period: the database decides whether grace applies.
        await self._store.put(
            refresh_grace_key(token_hash),
            base64.b64encode(sealed).decode(),
            grace + timedelta(seconds=5),
        )

    async def _grace_pair(self, raw: str, token_hash: str) -> TokenPair | None:
        value = (await self._store.get_many([refresh_grace_key(token_hash)]))[0]
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


async def _successor_unused(db: AsyncSession, token: RefreshToken) -> bool:
    child = (
        await db.scalars(select(RefreshToken).where(RefreshToken.parent_id == token.id))
    ).first()
    return child is not None and child.used_at is None and child.revoked_at is None


async def _revoke_family(db: AsyncSession, session: Session, now: datetime, *, reason: str) -> None:
    if session.revoked_at is None:
        session.revoked_at = now
        session.revoked_reason = reason
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id == session.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
