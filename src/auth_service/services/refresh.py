"""Refresh-token rotation with reuse detection and the grace pair (API.md "Refresh rotation").

A refresh, with its round trips on PostgreSQL in brackets:

1. Read the token row joined with its session and user [1 statement]. Nothing is held after it.
2. Unused and live: mint the pair (the access token is signed with the key cache's loaded
   key; the successor is a fresh random token), seal it under the presented token and put it
   in the store under the successor's id [1 store call], then have the database use the token
   up, stamp the session and insert the successor in one statement [1]
   (``db/refresh_tokens.py``). It succeeds only while the token is unused, unrevoked and
   unexpired, its session live and its user enabled: the database picks exactly one winner.
3. Anything else (used, dead, or a rotation that lost): settle from the state the database
   holds now. A used token within ``AUTH_REFRESH_REUSE_GRACE_SECONDS`` of its first use,
   while its successor is unused, gets the very pair that first use got: the store entry
   under the successor the database holds. Any other use of a used token revokes the session
   (the family), audits ``refresh.reuse_detected`` and revokes the session in the store.

The store write comes before the rotation commits and outside it (no lock or connection is
held across it or the signing). So whoever sees the token used finds the winner's pair:
a concurrent request, a retry after a lost response, one after a process died past the commit.
A process that dies before the commit leaves the token unused and an entry nobody reads; an
entry of a request that lost the race is keyed by a successor id that never reached the
database, so it is never served; both lapse after the grace period.
"""

from __future__ import annotations

import base64
import hmac
import json
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from auth_service.clock import Clock
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.refresh_tokens import (
    RefreshState,
    read_refresh_state,
    read_successor,
    revoke_family,
    use_refresh_token,
)
from auth_service.db.session import Database
from auth_service.errors import InvalidRefreshTokenError, RefreshTokenReusedError
from auth_service.services.audit import Audit
from auth_service.services.revocation import RevocationPolicy, revoke_sessions
from auth_service.services.store_keys import refresh_grace_key
from auth_service.services.token_pairs import (
    SessionPolicy,
    TokenPair,
    issue_pair,
    new_refresh_token,
)
from auth_service.services.tokens import TokenIssuer
from auth_service.store.base import Store

_GRACE_PURPOSE = "refresh-grace"
_GRACE_TTL_MARGIN = timedelta(seconds=5)  # the database decides whether grace applies
MAX_REFRESH_TOKEN_LENGTH = 128


class RefreshRotation:
    """``refresh(raw_token)``: a new pair, the grace pair again, or reuse (session revoked)."""

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
        self._tokens = tokens
        self._policy = policy
        self._revocation = revocation
        self._clock = clock
        self._audit = audit

    async def refresh(self, raw_token: str) -> TokenPair:
        if not raw_token or len(raw_token) > MAX_REFRESH_TOKEN_LENGTH:
            raise InvalidRefreshTokenError()
        token_hash = hash_opaque(raw_token)
        now = self._clock.now()
        state = await read_refresh_state(self._db, token_hash)
        if state is not None and state.used_at is None and not state.is_dead(now):
            pair = await self._rotate(raw_token, token_hash, state, now)
            if pair is not None:
                return pair
            # Lost to a concurrent rotation, or the token died meanwhile: what is it now?
            state = await read_refresh_state(self._db, token_hash)
        return await self._settle(raw_token, token_hash, state, now)

    async def _rotate(
        self, raw_token: str, token_hash: str, state: RefreshState, now: datetime
    ) -> TokenPair | None:
        raw_child, child = new_refresh_token(
            now, self._policy.refresh_ttl, state.session_expires_at
        )
        pair = issue_pair(
            self._tokens,
            now=now,
            user_id=state.user_id,
            session_id=state.session_id,
            roles=state.roles,
            amr=state.amr,
            refresh_token=raw_child,
            refresh_expires_at=child.expires_at,
        )
        await self._keep_for_grace(raw_token, token_hash, child.token_id, pair)
        if await use_refresh_token(self._db, state, child, now):
            return pair
        # Lost, or won by this very rotation: a statement whose answer was lost on the wire
        # runs again (Database.run), and the second run finds the token used by the first.
        successor = await read_successor(self._db, state)
        if successor is not None and successor.token_id == child.token_id:
            return pair
        return None

    async def _settle(
        self, raw_token: str, token_hash: str, state: RefreshState | None, now: datetime
    ) -> TokenPair:
        """A token that is not (or no longer) rotatable: invalid, the grace pair, or reuse.
        One that is unused again after a lost rotation (say, a user disabled and enabled in
        between) is refused too: the caller may simply try again."""
        if state is None or state.used_at is None or state.is_dead(now):
            raise InvalidRefreshTokenError()
        if now - state.used_at <= self._policy.reuse_grace:
            again = await self._grace_pair(raw_token, token_hash, state)
            if again is not None:
                return again
        async with self._db.transaction() as db:
            ended = await revoke_family(db, state.session_id, now, reason="refresh_token_reused")
            if ended:
                # In the store before the commit (as logout does): if the store fails, the
                # transaction rolls back and the next replay detects the reuse again, rather
                # than the database saying revoked while every instance still accepts the
                # session's access tokens (attack review). The audit head lock comes last,
                # so it is not held across the store call.
                await revoke_sessions(self._store, self._revocation, [str(state.session_id)])
                await self._audit.record(
                    db,
                    "refresh.reuse_detected",
                    subject=str(state.user_id),
                    details={"session_id": str(state.session_id)},
                )
        if not ended:  # revoked meanwhile: by a concurrent replay, which reported the reuse
            raise InvalidRefreshTokenError()
        raise RefreshTokenReusedError()

    async def _keep_for_grace(
        self, raw_token: str, token_hash: str, successor_id: uuid.UUID, pair: TokenPair
    ) -> None:
        grace = self._policy.reuse_grace
        if grace <= timedelta(0):
            return
        sealed = Envelope(raw_token, purpose=_GRACE_PURPOSE).seal(
            json.dumps(asdict(pair)).encode(),
            associated_data=_grace_binding(token_hash, successor_id),
        )
        await self._store.put(
            refresh_grace_key(token_hash, str(successor_id)),
            base64.b64encode(sealed).decode(),
            grace + _GRACE_TTL_MARGIN,
        )

    async def _grace_pair(
        self, raw_token: str, token_hash: str, state: RefreshState
    ) -> TokenPair | None:
        """The pair the winning rotation stored, while its successor is unused; None when
        there is none to give (then the replay is reuse)."""
        successor = await read_successor(self._db, state)
        if successor is None or not successor.is_unused:
            return None
        key = refresh_grace_key(token_hash, str(successor.token_id))
        value = (await self._store.get_many([key]))[0]
        if value is None:
            return None
        try:
            opened = Envelope(raw_token, purpose=_GRACE_PURPOSE).open(
                base64.b64decode(value),
                associated_data=_grace_binding(token_hash, successor.token_id),
            )
            data: dict[str, Any] = json.loads(opened)
            pair = TokenPair(**data)
        except (EnvelopeError, ValueError, TypeError):
            return None
        if not hmac.compare_digest(hash_opaque(pair.refresh_token), successor.token_hash):
            return None
        return pair


def _grace_binding(token_hash: str, successor_id: uuid.UUID) -> str:
    return f"{token_hash}:{successor_id}"
