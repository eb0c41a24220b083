"""Service clients: create, list, delete them, rotate their secret; authenticate one
(``client_auth``); and tell every instance when a client's secrets change.

Format: ``client_id`` is ``svc_`` + 16 random URL-safe characters; ``client_secret`` is
``secrets.token_urlsafe(32)`` (256 bits), shown once and stored only as an argon2id hash.
A secret is hashed before the write transaction opens (nothing is held across argon2).

A deleted client or a retired secret stops authenticating at once on every instance: after
the commit the change is published on ``CLIENTS_CHANNEL`` and every instance's
authenticator forgets the client's verified secrets (``follow_changes``); a resubscription
forgets them all, since events may have been missed meanwhile. With the in-process store
(one serving process, CLI commands in others) the server polls ``clients.updated_at``
instead (``poll_changes``). Deleting a client also revokes every token it holds:
``clients.tokens_revoked_after`` (the record) and ``revoked:client:<id>:deleted`` (the
index: every token of the client, whenever issued), written in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import Client
from auth_service.db.session import Database
from auth_service.errors import InvalidRequestError, NotFoundError
from auth_service.services.audit import Audit
from auth_service.services.client_auth import ClientAuthenticator
from auth_service.services.revocation import RevocationPolicy, revoke_client_tokens
from auth_service.services.store_keys import CLIENTS_CHANNEL
from auth_service.store.base import Store
from auth_service.store.following import follow_channel

log = logging.getLogger(__name__)

CLIENT_ID_PREFIX = "svc_"
MAX_SCOPES = 32
MAX_OVERLAP = timedelta(days=30)
DEFAULT_OVERLAP = timedelta(hours=24)
SCOPE = re.compile(r"[A-Za-z0-9._:/-]{1,64}")  # a subset of RFC 6749 §3.3 scope-token
_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True, slots=True)
class NewSecret:
    client: Client
    client_secret: str  # shown once


def check_scopes(scopes: Sequence[str]) -> list[str]:
    """Distinct scope names, in order; ``InvalidRequestError`` for a bad one."""
    if isinstance(scopes, str):
        raise TypeError("scopes must be a sequence of scope names, not one string")
    if len(scopes) > MAX_SCOPES:
        raise InvalidRequestError(f"scopes: at most {MAX_SCOPES}")
    for scope in scopes:
        if not SCOPE.fullmatch(scope):
            raise InvalidRequestError("scopes: each is 1-64 of A-Z a-z 0-9 . _ : / -")
    return list(dict.fromkeys(scopes))


class Clients:
    def __init__(
        self,
        db: Database,
        store: Store,
        hasher: PasswordHasher,
        authenticator: ClientAuthenticator,
        revocation: RevocationPolicy,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self._db = db
        self._audit = audit
        self._store = store
        self._hasher = hasher
        self._authenticator = authenticator
        self._revocation = revocation
        self._clock = clock

    async def authenticate(self, client_id: str, client_secret: str, ip: str | None) -> str:
        """The client id if the secret is right; ``InvalidClientError`` (401) or 429."""
        return await self._authenticator.authenticate(client_id, client_secret, ip)

    async def allowed_scopes(self, client_id: str) -> tuple[str, ...]:
        """The scopes an authenticated client may ask for (remembered with its secret)."""
        known = self._authenticator.scopes(client_id)
        if known is not None:
            return known
        async with self._db.read() as db:
            client = await db.get(Client, client_id)
        if client is None or client.deleted_at is not None:
            return ()
        return tuple(client.scopes)

    async def create(self, *, name: str, scopes: Sequence[str] = ()) -> NewSecret:
        allowed = check_scopes(scopes)
        if not name.strip() or len(name) > 200 or not name.isprintable():
            raise InvalidRequestError("name: 1 to 200 printable characters")
        secret = secrets.token_urlsafe(32)
        secret_hash = await self._hasher.hash(secret)
        now = self._clock.now()
        client = Client(
            client_id=CLIENT_ID_PREFIX + secrets.token_urlsafe(12),
            name=name.strip(),
            secret_hash=secret_hash,
            scopes=allowed,
            created_at=now,
            updated_at=now,
        )
        async with self._db.transaction() as db:
            db.add(client)
            await self._audit.record(
                db,
                "client.created",
                subject=client.client_id,
                details={"name": client.name, "scopes": allowed},
            )
        return NewSecret(client=client, client_secret=secret)

    async def active(self) -> list[Client]:
        query = select(Client).where(Client.deleted_at.is_(None)).order_by(Client.created_at)
        async with self._db.read() as db:
            return [*(await db.scalars(query)).all()]

    async def delete(self, client_id: str) -> None:
        """Soft-delete (the row stays for the audit trail) and revoke every token of the
        client; its secrets stop working on every instance at once."""
        now = self._clock.now()
        async with self._db.transaction() as db:
            client = await db.get(Client, client_id, with_for_update=True)
            if client is None or client.deleted_at is not None:
                raise NotFoundError("No such client.")
            client.deleted_at = client.tokens_revoked_after = client.updated_at = now
            await revoke_client_tokens(self._store, self._revocation, client_id=client_id)
            await self._audit.record(db, "client.deleted", subject=client_id)
        await self._announce(client_id)

    async def rotate_secret(
        self, client_id: str, *, overlap: timedelta = DEFAULT_OVERLAP
    ) -> NewSecret:
        """A new secret; the current one keeps working for ``overlap`` (0: stops now), any
        older previous secret stops now. Tokens already issued are not touched."""
        if not timedelta(0) <= overlap <= MAX_OVERLAP:
            raise InvalidRequestError("overlap_seconds: 0 to 2592000 (30 days)")
        secret = secrets.token_urlsafe(32)
        secret_hash = await self._hasher.hash(secret)
        now = self._clock.now()
        async with self._db.transaction() as db:
            client = await db.get(Client, client_id, with_for_update=True)
            if client is None or client.deleted_at is not None:
                raise NotFoundError("No such client.")
            keep = overlap > timedelta(0)
            client.previous_secret_hash = client.secret_hash if keep else None
            client.previous_secret_expires_at = now + overlap if keep else None
            client.secret_hash = secret_hash
            client.secret_rotated_at = client.updated_at = now
            await self._audit.record(
                db,
                "client.secret_rotated",
                subject=client_id,
                details={"overlap_seconds": int(overlap.total_seconds())},
            )
        await self._announce(client_id)
        return NewSecret(client=client, client_secret=secret)

    def forget(self, client_id: str) -> None:
        """Drop this instance's verified secrets of ``client_id`` (the next request hashes)."""
        self._authenticator.forget(client_id)

    async def follow_changes(self) -> None:
        """Run until cancelled: forget a client's verified secrets when another instance (or
        this one) announces a change; forget all after each (re)subscription."""

        async def serve(messages: AsyncIterator[str], healthy: Callable[[], None]) -> None:
            self._authenticator.forget_all()
            healthy()
            async for client_id in messages:
                self._authenticator.forget(client_id)

        await follow_channel(
            self._store,
            CLIENTS_CHANNEL,
            serve,
            name="the client changes follower",
            retry_seconds=_RETRY_SECONDS,
        )

    async def poll_changes(self, *, every: timedelta) -> None:
        """Run until cancelled: forget the clients changed since the last look (the
        in-process store has no other process's events)."""
        since = self._clock.now()
        while True:
            await asyncio.sleep(every.total_seconds())
            try:
                since = await self._forget_changed(since)
            except Exception as exc:  # the database is away: look again next time
                log.warning("checking for changed clients failed (%s)", type(exc).__name__)

    async def _forget_changed(self, since: datetime) -> datetime:
        query = select(Client.client_id, Client.updated_at).where(Client.updated_at > since)
        async with self._db.read() as db:
            rows = (await db.execute(query)).all()
        for client_id, updated_at in rows:
            self._authenticator.forget(client_id)
            since = max(since, updated_at)
        return since

    async def _announce(self, client_id: str) -> None:
        self._authenticator.forget(client_id)
        try:
            await self._store.publish(CLIENTS_CHANNEL, client_id)
        except Exception:  # committed: the others forget on resubscription or their window
            log.exception("could not announce a client change; instances forget it in time")

    async def close(self) -> None:
        await self._authenticator.close()
