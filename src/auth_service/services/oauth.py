"""The RFC endpoints' use cases: client credentials (RFC 6749 §4.4), introspection
(RFC 7662) and revocation (RFC 7009). See docs/design/oauth.md.

- Access tokens are checked by the validator (``/validate``'s path: signature cache,
  revocation mirror); refresh tokens by their hash in the database. The two shapes are
  disjoint (a JWT has two dots, a refresh token none), so ``token_type_hint`` only saves
  nothing here and a wrong hint still finds the token (RFC 7662 §2.1, RFC 7009 §2.1).
- Introspection never says why a token is inactive (``{"active": false}``).
- Revocation never fails for a token it will not revoke (RFC 7009 §2.2): a client revokes
  its own service tokens; a user's token only with the ``revoke`` scope allowed.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from auth_service.clock import Clock
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import RefreshToken, RevokedToken, Session, User
from auth_service.db.session import Database
from auth_service.errors import InvalidScopeError, NotFoundError
from auth_service.metrics import count_verdict
from auth_service.services.clients import SCOPE, Clients
from auth_service.services.revocation import RevocationPolicy, revoke_jti
from auth_service.services.sessions import Sessions
from auth_service.services.tokens import TokenIssuer
from auth_service.services.validation import TokenValidator, is_service
from auth_service.store.base import Store

REVOKE_SCOPE = "revoke"  # lets a client revoke users' tokens (a backend's forced logout)
MAX_SCOPE_PARAMETER = 2048
_USERNAMES_KEPT = 10_000
_INACTIVE: dict[str, Any] = {"active": False}
_ACCESS_CLAIMS = ("sub", "exp", "iat", "nbf", "iss", "aud", "jti", "scope", "client_id")


@dataclass(frozen=True, slots=True)
class ServiceToken:
    access_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"  # noqa: S105  (the RFC 6750 scheme name)


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class OAuth:
    def __init__(
        self,
        db: Database,
        store: Store,
        clients: Clients,
        tokens: TokenIssuer,
        validator: TokenValidator,
        sessions: Sessions,
        revocation: RevocationPolicy,
        *,
        issuer: str,
        clock: Clock,
    ) -> None:
        self._db = db
        self._store = store
        self._clients = clients
        self._tokens = tokens
        self._validator = validator
        self._sessions = sessions
        self._revocation = revocation
        self._issuer = issuer
        self._clock = clock
        self._usernames: OrderedDict[str, str] = OrderedDict()  # user id → email (never changes)

    async def client_credentials(self, client_id: str, scope: str | None) -> ServiceToken:
        """A service token for an authenticated client; ``scope`` (space-separated) must be
        within the client's allowed scopes, and omitted it is all of them (RFC 6749 §3.3)."""
        allowed = await self._clients.allowed_scopes(client_id)
        scopes = list(allowed) if not scope else self._requested(scope, allowed)
        issued = self._tokens.service_token(
            now=self._clock.now(), client_id=client_id, scopes=scopes
        )
        return ServiceToken(issued.token, issued.expires_in, " ".join(scopes))

    @staticmethod
    def _requested(scope: str, allowed: tuple[str, ...]) -> list[str]:
        if len(scope) > MAX_SCOPE_PARAMETER:
            raise InvalidScopeError()
        requested = list(dict.fromkeys(scope.split(" ")))
        if any(not SCOPE.fullmatch(name) or name not in allowed for name in requested):
            raise InvalidScopeError()
        return requested

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 §2.2: the token's metadata if it is active, else only ``active: false``."""
        if _looks_like_jwt(token):
            return await self._introspect_access(token)
        return await self._introspect_refresh(token)

    async def _introspect_access(self, token: str) -> dict[str, Any]:
        verdict = await self._validator.validate(token)
        count_verdict(verdict.valid, verdict.error)
        claims = verdict.claims
        if not verdict.valid or claims is None:
            return _INACTIVE
        answer: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        answer.update((name, claims[name]) for name in _ACCESS_CLAIMS if name in claims)
        if not is_service(claims):
            username = await self._username(str(claims["sub"]))
            if username is None:
                return _INACTIVE
            answer["username"] = username
        return answer

    async def _introspect_refresh(self, token: str) -> dict[str, Any]:
        found = await self._live_refresh_token(token)
        if found is None:
            return _INACTIVE
        row, user = found
        return {
            "active": True,
            "token_type": "refresh_token",
            "sub": str(user.id),
            "username": user.email,
            "iss": self._issuer,
            "iat": int(row.created_at.timestamp()),
            "exp": int(row.expires_at.timestamp()),
        }

    async def revoke(self, client_id: str, token: str) -> None:
        """RFC 7009: revoke what this client may revoke; anything else is a silent no-op."""
        if _looks_like_jwt(token):
            await self._revoke_access(client_id, token)
            return
        if not await self._may_revoke_users(client_id):
            return
        found = await self._live_refresh_token(token)
        if found is None:
            return
        row, user = found
        async with self._db.transaction() as db:
            with contextlib.suppress(NotFoundError):  # revoked meanwhile
                await self._sessions.revoke_one(
                    db, user_id=user.id, session_id=row.session_id, reason="revoked_by_client"
                )

    async def _revoke_access(self, client_id: str, token: str) -> None:
        verdict = await self._validator.validate(token)
        claims = verdict.claims
        if not verdict.valid or claims is None:
            return  # dead already (or never ours): nothing to do
        service = is_service(claims)
        if service and claims.get("client_id") != client_id:
            return  # another client's service token
        if not service and not await self._may_revoke_users(client_id):
            return
        now = self._clock.now()
        jti, expires_at = str(claims["jti"]), datetime.fromtimestamp(float(claims["exp"]), UTC)
        async with self._db.transaction() as db:
            if await db.get(RevokedToken, jti) is None:
                db.add(
                    RevokedToken(
                        jti=jti, expires_at=expires_at, revoked_at=now, revoked_by=client_id
                    )
                )
            if not service:  # the user's session too, as a logout would
                with contextlib.suppress(NotFoundError, ValueError):
                    await self._sessions.revoke_one(
                        db,
                        user_id=uuid.UUID(str(claims["sub"])),
                        session_id=uuid.UUID(str(claims["sid"])),
                        reason="revoked_by_client",
                    )
            # The index entry is written before the commit: a store failure stores nothing.
            await revoke_jti(
                self._store, jti=jti, expires_at=expires_at, now=now, leeway=self._revocation.leeway
            )

    async def _may_revoke_users(self, client_id: str) -> bool:
        return REVOKE_SCOPE in await self._clients.allowed_scopes(client_id)

    async def _live_refresh_token(self, token: str) -> tuple[RefreshToken, User] | None:
        """The refresh token and its user, if the token could be used now."""
        if not token or len(token) > 128:
            return None
        now = self._clock.now()
        query = select(RefreshToken).where(RefreshToken.token_hash == hash_opaque(token))
        async with self._db.read() as db:
            row = (await db.scalars(query)).one_or_none()
            session = await db.get(Session, row.session_id) if row is not None else None
            user = await db.get(User, session.user_id) if session is not None else None
        if row is None or session is None or user is None or user.disabled:
            return None
        if row.used_at is not None or row.revoked_at is not None or session.revoked_at is not None:
            return None
        if now >= row.expires_at or now >= session.expires_at:
            return None
        return row, user

    async def _username(self, user_id: str) -> str | None:
        known = self._usernames.get(user_id)
        if known is not None:
            self._usernames.move_to_end(user_id)
            return known
        try:
            key = uuid.UUID(user_id)
        except ValueError:
            return None
        async with self._db.read() as db:
            user = await db.get(User, key)
        if user is None:
            return None
        self._usernames[user_id] = user.email
        while len(self._usernames) > _USERNAMES_KEPT:
            self._usernames.popitem(last=False)
        return user.email
