"""Client authentication helpers: an authenticator on a container, a hasher that counts its
verifications, and session makers that fail as an unreachable database does."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.exc import OperationalError

from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher
from auth_service.services.client_auth import ClientAuthenticator


def authenticator(
    container: Container, hasher: PasswordHasher, *, limit: int = 10_000, **options: Any
) -> ClientAuthenticator:
    return ClientAuthenticator(
        container.db.reader, hasher, store=container.store, failure_limit=limit, **options
    )


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.verifications = 0

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        self.verifications += 1
        await asyncio.sleep(0.05)  # long enough for every concurrent caller to arrive
        return await super().verify(hash, password, urgent=urgent)


class DatabaseDown:
    """A session maker whose session fails as a database that went away does."""

    async def __aenter__(self) -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database down"))

    async def __aexit__(self, *exc: object) -> None:
        return None


class DatabaseRefused:
    """What asyncpg raises when PostgreSQL is not listening: a bare OSError."""

    async def __aenter__(self) -> Any:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    async def __aexit__(self, *exc: object) -> None:
        return None
