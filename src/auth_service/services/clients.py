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
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import Client
from auth_service.errors import InvalidClientError, NotFoundError

CLIENT_ID_PREFIX = "svc_"
_MAX_CACHED_CLIENTS = 10_000
_MAX_SECRET_LENGTH = 256
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # issued ids are svc_ + 16 of these
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


@dataclass(slots=True)
class _Flight:
    """The verification of one client under way, and how many requests wait on it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


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
        self._in_flight: dict[str, _Flight] = {}
        # client id → the ticket of its background re-verification; a refusal of the client
        # or ``forget`` takes the ticket away, so a check that read the row before cannot
        # bring the client back when it finishes.
        self._refreshing: dict[str, object] = {}
        self.refreshes: set[asyncio.Task[None]] = set()
        self._closed = False

    async def authenticate(self, client_id: str, client_secret: str) -> str:
        """The client id if the secret is right; ``InvalidClientError`` otherwise."""
        if (
            not _CLIENT_ID.fullmatch(client_id)
            or not client_secret
            or len(client_secret) > _MAX_SECRET_LENGTH
        ):
            raise InvalidClientError()
        digest = hashlib.sha256(f"{client_id}\x00{client_secret}".encode()).digest()
        remaining = self._remaining(client_id, digest)
        if remaining is not None:
            if remaining < self._cache_seconds * _REFRESH_FRACTION:
                self._refresh_ahead(client_id, client_secret, digest)
            return client_id
        # One verification per client at a time: when a cached verification lapses under
        # load, the other requests wait for it instead of each running argon2 (a stampede).
        flight = self._in_flight.setdefault(client_id, _Flight())
        flight.users += 1
        try:
            async with flight.lock:
                if self._remaining(client_id, digest) is None:
                    read_at = await self._verify(client_id, client_secret)
                    self._remember(client_id, digest, read_at)
                return client_id
        finally:
            flight.users -= 1
            if not flight.users:
                del self._in_flight[client_id]

    def _remaining(self, client_id: str, digest: bytes) -> float | None:
        """Seconds left of a remembered verification of this very secret, else None."""
        cached = self._verified.get(client_id)
        if cached is None or not hmac.compare_digest(cached[0], digest):
            return None
        remaining = cached[1] - self._now()
        return remaining if remaining > 0 else None

    def _remember(self, client_id: str, digest: bytes, read_at: float) -> None:
        """The window runs from the moment the client row was read, not from the answer."""
        if self._cache_seconds > 0:
            self._verified[client_id] = (digest, read_at + self._cache_seconds)
            self._verified.move_to_end(client_id)
            while len(self._verified) > _MAX_CACHED_CLIENTS:
                self._verified.popitem(last=False)

    def _refresh_ahead(self, client_id: str, client_secret: str, digest: bytes) -> None:
        if self._closed or client_id in self._refreshing:
            return
        ticket = self._refreshing[client_id] = object()
        task = asyncio.get_running_loop().create_task(
            self._refresh(client_id, client_secret, digest, ticket),
            name=f"client-refresh {client_id}",
        )
        self.refreshes.add(task)
        task.add_done_callback(self.refreshes.discard)

    async def _refresh(
        self, client_id: str, client_secret: str, digest: bytes, ticket: object
    ) -> None:
        try:
            read_at = await self._verify(client_id, client_secret)
            if self._refreshing.get(client_id) is ticket:
                self._remember(client_id, digest, read_at)
        except InvalidClientError:  # deleted since: forget it now rather than at the window's end
            self.forget(client_id)
        except Exception as exc:  # the database or the hasher: the entry lapses on time
            log.warning("background re-verification of a client failed (%s)", type(exc).__name__)
        finally:
            if self._refreshing.get(client_id) is ticket:
                del self._refreshing[client_id]

    async def close(self) -> None:
        """Stop background re-verifications (before the hasher and the database close)."""
        self._closed = True
        for task in self.refreshes:
            task.cancel()
        if self.refreshes:
            await asyncio.wait(self.refreshes, timeout=5)

    async def _verify(self, client_id: str, client_secret: str) -> float:
        """Check the secret against the stored hash; the time the row was read, if right."""
        read_at = self._now()
        async with self._sessionmaker() as session:
            client = await session.get(Client, client_id)
        if client is None or client.deleted_at is not None:
            self.forget(client_id)
            await self._hasher.verify_dummy(client_secret)
            raise InvalidClientError()
        if not await self._hasher.verify(client.secret_hash, client_secret):
            raise InvalidClientError()
        return read_at

    def forget(self, client_id: str) -> None:
        """Drop a cached verification, and any re-verification under way (this instance;
        others forget within the window)."""
        self._verified.pop(client_id, None)
        self._refreshing.pop(client_id, None)
