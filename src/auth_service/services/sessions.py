"""Sessions: start, list and revoke them (a session is one refresh-token family); its
refresh rotation with reuse detection is ``services/refresh.py``.

Refresh token format: ``secrets.token_urlsafe(32)`` (256 bits), stored only as SHA-256 hex
(``services/token_pairs.py``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import RefreshToken, Session, User
from auth_service.db.refresh_tokens import revoke_family
from auth_service.db.session import Database
from auth_service.errors import NotFoundError
from auth_service.services.audit import Audit
from auth_service.services.refresh import MAX_REFRESH_TOKEN_LENGTH, RefreshRotation
from auth_service.services.revocation import (
    RevocationPolicy,
    revoke_jti,
    revoke_sessions,
    revoke_user_tokens,
)
from auth_service.services.token_pairs import SessionPolicy as SessionPolicy
from auth_service.services.token_pairs import TokenPair as TokenPair
from auth_service.services.token_pairs import issue_pair, new_refresh_token
from auth_service.services.tokens import TokenIssuer
from auth_service.store.base import Store

_MAX_USER_AGENT = 512


def clean_ip(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


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
        self._rotation = RefreshRotation(db, store, tokens, policy, revocation, clock, audit)

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
        raw, new = new_refresh_token(now, self._policy.refresh_ttl, session.expires_at)
        row = RefreshToken(
            id=new.token_id,
            session_id=session.id,
            parent_id=None,
            token_hash=new.token_hash,
            created_at=now,
            expires_at=new.expires_at,
        )
        db.add(session)
        await db.flush()  # no ORM relationships: the session row must exist before its token's
        db.add(row)
        await db.flush()
        return issue_pair(
            self._tokens,
            now=now,
            user_id=user.id,
            session_id=session.id,
            roles=user.roles,
            amr=session.amr,
            refresh_token=raw,
            refresh_expires_at=row.expires_at,
        )

    async def refresh(self, raw_token: str) -> TokenPair:
        """Rotate ``raw_token``: a new pair, the grace pair again, or reuse → session revoked
        (``InvalidRefreshTokenError``, ``RefreshTokenReusedError``)."""
        return await self._rotation.refresh(raw_token)

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
        if not raw_token or len(raw_token) > MAX_REFRESH_TOKEN_LENGTH:
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
            await revoke_family(db, session.id, now, reason=reason)
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
        await revoke_family(db, session.id, self._clock.now(), reason=reason)
        await revoke_sessions(self._store, self._revocation, [str(session_id)])
