"""Service clients: create, list and delete them, and authenticate one (``client_auth``).

Format: ``client_id`` is ``svc_`` + 16 random URL-safe characters; ``client_secret`` is
``secrets.token_urlsafe(32)`` (256 bits), shown once and stored only as an argon2id hash.
The secret is hashed before the write transaction opens (nothing is held across argon2).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import Client
from auth_service.db.session import Database
from auth_service.errors import NotFoundError
from auth_service.services.client_auth import ClientAuthenticator

CLIENT_ID_PREFIX = "svc_"


@dataclass(frozen=True, slots=True)
class NewClient:
    client: Client
    client_secret: str  # shown once


class Clients:
    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        authenticator: ClientAuthenticator,
        clock: Clock,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._authenticator = authenticator
        self._clock = clock

    async def authenticate(self, client_id: str, client_secret: str, ip: str | None) -> str:
        """The client id if the secret is right; ``InvalidClientError`` (401) or 429."""
        return await self._authenticator.authenticate(client_id, client_secret, ip)

    async def create(self, *, name: str, scopes: Sequence[str] = ()) -> NewClient:
        secret = secrets.token_urlsafe(32)
        secret_hash = await self._hasher.hash(secret)
        client = Client(
            client_id=CLIENT_ID_PREFIX + secrets.token_urlsafe(12),
            name=name,
            secret_hash=secret_hash,
            scopes=list(scopes),
            created_at=self._clock.now(),
        )
        async with self._db.transaction() as db:
            db.add(client)
        return NewClient(client=client, client_secret=secret)

    async def active(self) -> list[Client]:
        query = select(Client).where(Client.deleted_at.is_(None)).order_by(Client.created_at)
        async with self._db.read() as db:
            return [*(await db.scalars(query)).all()]

    async def delete(self, client_id: str) -> None:
        """Soft-delete (the row stays for the audit trail); this instance forgets its
        verified secret at once."""
        async with self._db.transaction() as db:
            client = await db.get(Client, client_id, with_for_update=True)
            if client is None or client.deleted_at is not None:
                raise NotFoundError("No such client.")
            client.deleted_at = self._clock.now()
        self._authenticator.forget(client_id)

    def forget(self, client_id: str) -> None:
        """Drop this instance's verified secret of ``client_id`` (the next request hashes)."""
        self._authenticator.forget(client_id)

    async def close(self) -> None:
        await self._authenticator.close()
