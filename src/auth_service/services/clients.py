"""Service clients (HTTP Basic ``client_id:client_secret``, RFC 6749 §2.3.1).

Format: ``client_id`` is ``svc_`` + 16 random URL-safe characters; ``client_secret`` is
``secrets.token_urlsafe(32)`` (256 bits), stored only as an argon2id hash.

``ClientAuthenticator`` remembers a verified secret as its SHA-256 for a short time, so
argon2 runs once per client per window, not per request (the validation hot path). In the
last fifth of the window a request re-verifies it in the background (refresh-ahead), so under
steady traffic no request waits for argon2; a client deleted meanwhile is dropped then.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import Client
from auth_service.errors import InvalidClientError, NotFoundError

CLIENT_ID_PREFIX = "svc_"
_MAX_CACHED_CLIENTS = 10_000
_MAX_SECRET_LENGTH = 256
_REFRESH_FRACTION = 0.2  # re-verify in the background during the window's last fifth

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewClient:
    client: Client
    client_secret: str  # shown once


async def create_client(
    session: AsyncSession,
    hasher: PasswordHasher,
    clock: Clock,
    *,
    name: str,
    scopes: Sequence[str] = (),
) -> NewClient:
    secret = secrets.token_urlsafe(32)
    client = Client(
        client_id=CLIENT_ID_PREFIX + secrets.token_urlsafe(12),
        name=name,
        secret_hash=await hasher.hash(secret),
        scopes=list(scopes),
        created_at=clock.now(),
    )
    session.add(client)
    await session.flush()
    return NewClient(client=client, client_secret=secret)


async def list_clients(session: AsyncSession) -> list[Client]:
    query = select(Client).where(Client.deleted_at.is_(None)).order_by(Client.created_at)
    return list((await session.scalars(query)).all())


async def delete_client(session: AsyncSession, clock: Clock, client_id: str) -> None:
    client = await session.get(Client, client_id)
    if client is None or client.deleted_at is not None:
        raise NotFoundError("No such client.")
    client.deleted_at = clock.now()


class ClientAuthenticator:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        hasher: PasswordHasher,
        *,
        cache_seconds: float,
        time_source: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._hasher = hasher
        self._cache_seconds = cache_seconds
        self._now = time_source
        self._verified: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Lock] = {}
        self._refreshing: set[str] = set()
        self.refreshes: set[asyncio.Task[None]] = set()
        self._closed = False

    async def authenticate(self, client_id: str, client_secret: str) -> str:
        """The client id if the secret is right; ``InvalidClientError`` otherwise."""
        if not client_id or not client_secret or len(client_secret) > _MAX_SECRET_LENGTH:
            raise InvalidClientError()
        digest = hashlib.sha256(f"{client_id}\x00{client_secret}".encode()).digest()
        remaining = self._remaining(client_id, digest)
        if remaining is not None:
            if remaining < self._cache_seconds * _REFRESH_FRACTION:
                self._refresh_ahead(client_id, client_secret, digest)
            return client_id
        # One verification per client at a time: when a cached verification lapses under
        # load, the other requests wait for it instead of each running argon2 (a stampede).
        lock = self._in_flight.setdefault(client_id, asyncio.Lock())
        try:
            async with lock:
                if self._remaining(client_id, digest) is not None:
                    return client_id
                await self._verify(client_id, client_secret, digest)
                return client_id
        finally:
            if not lock.locked():
                self._in_flight.pop(client_id, None)

    def _remaining(self, client_id: str, digest: bytes) -> float | None:
        """Seconds left of a remembered verification of this very secret, else None."""
        cached = self._verified.get(client_id)
        if cached is None or not hmac.compare_digest(cached[0], digest):
            return None
        remaining = cached[1] - self._now()
        return remaining if remaining > 0 else None

    def _refresh_ahead(self, client_id: str, client_secret: str, digest: bytes) -> None:
        if self._closed or client_id in self._refreshing:
            return
        self._refreshing.add(client_id)
        task = asyncio.get_running_loop().create_task(
            self._refresh(client_id, client_secret, digest), name=f"client-refresh {client_id}"
        )
        self.refreshes.add(task)
        task.add_done_callback(self.refreshes.discard)

    async def _refresh(self, client_id: str, client_secret: str, digest: bytes) -> None:
        try:
            await self._verify(client_id, client_secret, digest)
        except InvalidClientError:  # deleted since: forget it now rather than at the window's end
            if self._remaining(client_id, digest) is not None:
                del self._verified[client_id]
        except Exception as exc:  # the database or the hasher: the entry lapses on time
            log.warning("background re-verification of a client failed (%s)", type(exc).__name__)
        finally:
            self._refreshing.discard(client_id)

    async def close(self) -> None:
        """Stop background re-verifications (before the hasher and the database close)."""
        self._closed = True
        for task in self.refreshes:
            task.cancel()
        if self.refreshes:
            await asyncio.wait(self.refreshes, timeout=5)

    async def _verify(self, client_id: str, client_secret: str, digest: bytes) -> None:
        async with self._sessionmaker() as session:
            client = await session.get(Client, client_id) if len(client_id) <= 64 else None
        if client is None or client.deleted_at is not None:
            await self._hasher.verify_dummy(client_secret)
            raise InvalidClientError()
        if not await self._hasher.verify(client.secret_hash, client_secret):
            raise InvalidClientError()
        if self._cache_seconds > 0:
            self._verified[client_id] = (digest, self._now() + self._cache_seconds)
            self._verified.move_to_end(client_id)
            while len(self._verified) > _MAX_CACHED_CLIENTS:
                self._verified.popitem(last=False)

    def forget(self, client_id: str) -> None:
        """Drop a cached verification (this instance; others forget within the window)."""
        self._verified.pop(client_id, None)
