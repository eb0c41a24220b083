"""Revocation entries in the store: every instance sees them, and each expires on its own.

Keys (under the store prefix):
- ``revoked:jti:<jti>``: one access token; lives until that token could no longer be valid.
- ``revoked:sid:<sid>``: a session; no new token is issued for it, so it lives one access
  TTL plus leeway.
- ``user:<id>:revoked-after``: epoch seconds; tokens issued at or before it are revoked.
- ``user:<id>:disabled``: set while the user is disabled (a disabled user gets no new token,
  so it too can expire after one access TTL plus leeway).
- ``revoked:epoch``: the index marker, a random id. The database is the record of every
  revocation and these entries are its index (DESIGN.md "Revocation is durable"); the marker
  is written last by a rebuild from the database (``services/revocation_index.py``), so a
  store without it (restarted without persistence, flushed, failed over) is not known to
  hold every revocation and nothing is valid until the rebuild has run. Under ``revoked:`` so
  the mirror answers it from memory with the entries: one extra key per ``get_many``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_service.services.store_keys import INDEX_MARKER_KEY as INDEX_MARKER_KEY
from auth_service.services.store_keys import client_deleted_key as client_deleted_key
from auth_service.services.store_keys import disabled_key as disabled_key
from auth_service.services.store_keys import jti_key as jti_key
from auth_service.services.store_keys import revoked_after_key as revoked_after_key
from auth_service.services.store_keys import sid_key as sid_key
from auth_service.settings import Settings
from auth_service.store.base import Store

INDEX_MARKER_TTL = timedelta(days=7)
"""The store requires a TTL: when the marker lapses the next check rebuilds (harmless)."""


@dataclass(frozen=True, slots=True)
class RevocationPolicy:
    """How long entries must live: any token they target is dead by then."""

    access_ttl: timedelta
    leeway: timedelta
    client_cache: timedelta = timedelta(0)  # AUTH_CLIENT_AUTH_CACHE_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> RevocationPolicy:
        cache = timedelta(seconds=settings.client_auth_cache_seconds)
        return cls(settings.access_token_ttl, settings.clock_leeway, cache)

    @property
    def horizon(self) -> timedelta:
        return self.access_ttl + self.leeway

    @property
    def client_horizon(self) -> timedelta:
        """How long a deleted client's entry must live: an instance that missed the delete
        could issue tokens until its verified secret lapsed, and they live a horizon."""
        return self.horizon + self.client_cache


async def revoke_jti(
    store: Store, *, jti: str, expires_at: datetime, now: datetime, leeway: timedelta
) -> None:
    remaining = expires_at + leeway - now
    if remaining > timedelta(0):
        await store.put(jti_key(jti), "1", remaining)


async def revoke_sessions(store: Store, policy: RevocationPolicy, session_ids: list[str]) -> None:
    for sid in session_ids:
        await store.put(sid_key(sid), "1", policy.horizon)


async def revoke_user_tokens(
    store: Store, policy: RevocationPolicy, *, user_id: str, now: datetime
) -> None:
    """Every token of the user issued up to ``now`` (whole seconds, as ``iat``) is revoked."""
    await store.put(revoked_after_key(user_id), str(math.floor(now.timestamp())), policy.horizon)


async def mark_disabled(
    store: Store, policy: RevocationPolicy, *, user_id: str, disabled: bool
) -> None:
    if disabled:
        await store.put(disabled_key(user_id), "1", policy.horizon)
    else:
        await store.delete(disabled_key(user_id))


def revoke_client_tokens(
    store: Store, policy: RevocationPolicy, *, client_id: str
) -> Awaitable[None]:
    """Every token of the client is revoked, whenever issued (the client was deleted; client
    ids are never reused)."""
    return store.put(client_deleted_key(client_id), "1", policy.client_horizon)


def revocation_keys(*, jti: str, sid: str | None, subject: str, service: bool) -> list[str]:
    """The store keys that decide whether a token is revoked: a user token's
    ``[jti, user revoke-after, user disabled, (session)]``, a service token's
    ``[jti, client deleted]``."""
    if service:
        return [jti_key(jti), client_deleted_key(subject)]
    keys = [jti_key(jti), revoked_after_key(subject), disabled_key(subject)]
    if sid is not None:
        keys.append(sid_key(sid))
    return keys


def revocation_reason(values: list[str | None], *, iat: float, service: bool) -> str | None:
    """Interpret ``get_many(revocation_keys(...))``: the reason code, or None if live."""
    if service:
        return "token_revoked" if any(value is not None for value in values) else None
    jti_value, revoked_after, disabled = values[0], values[1], values[2]
    if disabled is not None:
        return "user_disabled"
    if jti_value is not None:
        return "token_revoked"
    if len(values) > 3 and values[3] is not None:
        return "session_revoked"
    if revoked_after is not None and iat <= float(revoked_after):
        return "token_revoked"
    return None
