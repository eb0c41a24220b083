"""Service clients (HTTP Basic ``client_id:client_secret``, RFC 6749 §2.3.1).

Format: ``client_id`` is ``svc_`` + 16 random URL-safe characters; ``client_secret`` is
``secrets.token_urlsafe(32)`` (256 bits), stored only as an argon2id hash.

``ClientAuthenticator`` remembers a verified secret as its SHA-256 for a short time, so
argon2 runs once per client per window, not per request (the validation hot path). In the
last fifth of the window a request re-verifies it in the background (refresh-ahead), so under
steady traffic no request waits for argon2; a client deleted meanwhile is dropped then.
Only a right secret is ever remembered (one entry per client id, compared in constant time),
so no wrong secret can replace or evict it.

Single flight: concurrent requests with one (client id, secret digest) share one
verification and its outcome, right or wrong; requests with other secrets never wait for it.
The map of flights holds at most ``_MAX_FLIGHTS`` entries; beyond that a request verifies
on its own (a flood of distinct secrets makes it no larger, and each of those costs its own
hash, which the limits below bound).

Failure limits (``AUTH_CLIENT_AUTH_FAILURE_LIMIT`` failures a minute, fixed windows in the
store, so shared by every instance):

- ``client-fail:ip:<ip group>`` (an IPv6 /64 is one client IP): checked before anything else
  of a request that needs a hash; over it the request is 429 at once, without a database read
  or a hash. Failures counted plus this instance's verifications under way from that IP stay
  within the limit, so a burst cannot outrun the counter.
- ``client-fail:id:<client id>``: failures of an existing client from all IPs. It never
  refuses: a per-client lockout would let anyone who knows a client id shut that service out
  with 20 wrong secrets a minute (the classic account-lockout DoS). It takes away priority
  instead: the argon2 pool serves a known client's verification from its urgent queue, and
  once a client id is over its limit, verifications of unremembered secrets for it from an
  IP it has not authenticated from lately run in the normal queue. From a familiar IP
  (``client-seen:<client id>:<ip group>``, written on each right verification and kept for
  ``familiar_ttl``) they stay urgent. This is the "familiar versus unfamiliar location" split
  of AD FS Extranet Smart Lockout and of this service's logins (``AUTH_KNOWN_CLIENT_DAYS``).

So the right, remembered secret is accepted whatever the counters say (it costs nothing); a
right secret not yet remembered is verified unless its own IP is over the limit; a flood of
distinct wrong secrets costs at most the limit in hashes per IP per minute, and against one
client id at most the limit of them with priority. Only failures are counted (once each,
after the verification); a success resets nothing, so a caller holding one valid secret
cannot refill its budget. A store that cannot be reached makes those requests 503.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.clock import Clock, SystemClock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import Client
from auth_service.errors import InvalidClientError, RateLimitedError
from auth_service.services import store_keys
from auth_service.services.limits import guard_store, ip_group
from auth_service.store.base import Store

CLIENT_FAILURE_WINDOW = timedelta(minutes=1)
_MAX_CACHED_CLIENTS = 10_000
_MAX_FLIGHTS = 1024  # distinct (client id, secret) verifications coalesced at once
_MAX_SECRET_LENGTH = 256
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # issued ids are svc_ + 16 of these
_REFRESH_FRACTION = 0.2  # re-verify in the background during the window's last fifth
_LIMITED = "Too many failed client authentications from this address; retry later."

log = logging.getLogger(__name__)


def ip_failure_key(group: str) -> str:
    """``group`` is ``limits.ip_group(ip)``."""
    return store_keys.client_ip_failure_key(group)


def id_failure_key(client_id: str) -> str:
    return store_keys.client_id_failure_key(client_id)


def familiar_key(client_id: str, group: str) -> str:
    return store_keys.client_seen_key(client_id, group)


class _Refused(InvalidClientError):
    """A wrong secret (``known``: for an existing client) or an unknown client id."""

    def __init__(self, *, known: bool) -> None:
        super().__init__()
        self.known = known


@dataclass(slots=True)
class _Flight:
    """The verification of one (client id, secret digest) under way, and who waits on it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    refused: _Refused | None = None  # set when it was wrong: the waiters share the outcome


_Until = tuple[float, datetime | None, tuple[int, int]]
"""(monotonic end of the window, end of a previous secret's overlap, the generation read)"""


@dataclass(frozen=True, slots=True)
class _Remembered:
    """A right secret (its digest), until when (monotonic), and for a previous secret the
    wall-clock end of its overlap."""

    digest: bytes
    until: float
    overlap_ends: datetime | None


def _count(value: str | None) -> int:
    return int(value) if value else 0


class ClientAuthenticator:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        hasher: PasswordHasher,
        *,
        store: Store,
        failure_limit: int,
        cache_seconds: float,
        familiar_ttl: timedelta = timedelta(days=30),
        time_source: Callable[[], float] = time.monotonic,
        clock: Clock | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._hasher = hasher
        self._store = store
        self._limit = failure_limit
        self._familiar_ttl = familiar_ttl
        self._cache_seconds = cache_seconds
        self._now = time_source
        self._clock = clock or SystemClock()
        # client id → its remembered right secrets (digest, valid until): at most two, the
        # current and, during a rotation's overlap, the previous one.
        self._verified: OrderedDict[str, list[_Remembered]] = OrderedDict()
        self._scopes: dict[str, tuple[str, ...]] = {}  # of each client verified lately
        # Bumped by ``forget`` (per client) and ``forget_all`` (every client): a verification
        # that read the client row before a change must not store what it read after it.
        self._changes: Counter[str] = Counter()
        self._epoch = 0
        self._in_flight: dict[tuple[str, bytes], _Flight] = {}
        # Verifications under way on this instance, by IP group and by client id: they count
        # against the limits until their outcome is counted in the store.
        self._hashing_from: Counter[str] = Counter()
        self._hashing_for: Counter[str] = Counter()
        # client id → the ticket of its background re-verification; a refusal of the client
        # or ``forget`` takes the ticket away, so a check that read the row before cannot
        # bring the client back when it finishes.
        self._refreshing: dict[str, object] = {}
        self.refreshes: set[asyncio.Task[None]] = set()
        self._closed = False

    async def authenticate(self, client_id: str, client_secret: str, ip: str | None) -> str:
        """The client id if the secret is right; ``InvalidClientError`` otherwise, or
        ``RateLimitedError`` when ``ip`` is over its failure limit and the secret would need
        a hash (see the module docstring)."""
        if (
            not _CLIENT_ID.fullmatch(client_id)
            or not client_secret
            or len(client_secret) > _MAX_SECRET_LENGTH
        ):
            raise InvalidClientError()
        digest = hashlib.sha256(f"{client_id}\x00{client_secret}".encode()).digest()
        remaining = self._remaining(client_id, digest)
        group = ip_group(ip)
        if remaining is not None:
            if remaining < self._cache_seconds * _REFRESH_FRACTION:
                self._refresh_ahead(client_id, client_secret, digest, group)
            return client_id
        key = (client_id, digest)
        flight = self._board(key)
        if flight is None:  # too many distinct verifications under way: this one goes alone
            await self._attempt(client_id, client_secret, digest, group)
            return client_id
        try:
            async with flight.lock:
                if flight.refused is not None:
                    await self._count_failure(client_id, group, known=flight.refused.known)
                    raise InvalidClientError()
                if self._remaining(client_id, digest) is None:
                    try:
                        await self._attempt(client_id, client_secret, digest, group)
                    except _Refused as refused:
                        flight.refused = refused
                        raise
                return client_id
        finally:
            self._leave(key, flight)

    def _board(self, key: tuple[str, bytes]) -> _Flight | None:
        flight = self._in_flight.get(key)
        if flight is None:
            if len(self._in_flight) >= _MAX_FLIGHTS:
                return None
            flight = self._in_flight[key] = _Flight()
        flight.users += 1
        return flight

    def _leave(self, key: tuple[str, bytes], flight: _Flight) -> None:
        flight.users -= 1
        if not flight.users:
            del self._in_flight[key]

    async def _attempt(self, client_id: str, client_secret: str, digest: bytes, group: str) -> None:
        """Verify under the failure limits; remember a right secret, count a wrong one."""
        ip_key = ip_failure_key(group)
        from_ip, for_id, familiar = await guard_store(
            self._store.get_many(
                [ip_key, id_failure_key(client_id), familiar_key(client_id, group)]
            )
        )
        # No await from these checks to the counting in ``_hashing``: atomic on the loop.
        if _count(from_ip) + self._hashing_from[group] >= self._limit:
            raise await self._rate_limited(ip_key, _count(from_ip))
        urgent = familiar is not None or (
            _count(for_id) + self._hashing_for[client_id] < self._limit
        )
        with self._hashing(client_id, group):
            try:
                until, scopes = await self._verify(client_id, client_secret, urgent=urgent)
            except _Refused as refused:
                await self._count_failure(client_id, group, known=refused.known)
                raise
        await self._mark_familiar(client_id, group)
        self._remember(client_id, digest, until, scopes)

    @contextmanager
    def _hashing(self, client_id: str, group: str) -> Iterator[None]:
        self._hashing_from[group] += 1
        self._hashing_for[client_id] += 1
        try:
            yield
        finally:
            for counter, key in ((self._hashing_from, group), (self._hashing_for, client_id)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]

    async def _rate_limited(self, ip_key: str, failures: int) -> RateLimitedError:
        if failures < self._limit:  # the rest of the budget is being used by requests under way
            return RateLimitedError(1, _LIMITED, limiter="client-auth")
        counted = await guard_store(self._store.hit(ip_key, self._limit, CLIENT_FAILURE_WINDOW))
        return RateLimitedError(counted.retry_after_seconds, _LIMITED, limiter="client-auth")

    async def _count_failure(self, client_id: str, group: str, *, known: bool) -> None:
        """One failed authentication; an unknown client id has no per-id counter to protect."""
        await guard_store(
            self._store.hit(ip_failure_key(group), self._limit, CLIENT_FAILURE_WINDOW)
        )
        if known:
            await guard_store(
                self._store.hit(id_failure_key(client_id), self._limit, CLIENT_FAILURE_WINDOW)
            )

    async def _mark_familiar(self, client_id: str, group: str) -> None:
        if self._familiar_ttl > timedelta(0):
            await guard_store(
                self._store.put(familiar_key(client_id, group), "1", self._familiar_ttl)
            )

    def _remaining(self, client_id: str, digest: bytes) -> float | None:
        """Seconds left of a remembered verification of this very secret, else None."""
        for remembered in self._verified.get(client_id, ()):
            if hmac.compare_digest(remembered.digest, digest):
                ends = remembered.overlap_ends
                if ends is not None and self._clock.now() >= ends:
                    return None  # a previous secret whose overlap is over
                remaining = remembered.until - self._now()
                return remaining if remaining > 0 else None
        return None

    def _remember(
        self, client_id: str, digest: bytes, until: _Until, scopes: tuple[str, ...]
    ) -> None:
        """``until`` comes from ``_verify``: the window runs from the moment the client row
        was read, not from the answer; and nothing is stored if the client changed since."""
        if until[0] <= self._now() or until[2] != self._generation(client_id):
            return
        self._scopes[client_id] = scopes
        others = [e for e in self._verified.get(client_id, ()) if e.digest != digest]
        self._verified[client_id] = [*others[-1:], _Remembered(digest, until[0], until[1])]
        self._verified.move_to_end(client_id)
        while len(self._verified) > _MAX_CACHED_CLIENTS:
            evicted, _ = self._verified.popitem(last=False)
            self._scopes.pop(evicted, None)

    def scopes(self, client_id: str) -> tuple[str, ...] | None:
        """The allowed scopes read with the client's last verification (None if unknown)."""
        return self._scopes.get(client_id)

    def _refresh_ahead(self, client_id: str, client_secret: str, digest: bytes, group: str) -> None:
        if self._closed or client_id in self._refreshing:
            return
        ticket = self._refreshing[client_id] = object()
        task = asyncio.get_running_loop().create_task(
            self._refresh(client_id, client_secret, digest, group, ticket),
            name=f"client-refresh {client_id}",
        )
        self.refreshes.add(task)
        task.add_done_callback(self.refreshes.discard)

    async def _refresh(
        self, client_id: str, client_secret: str, digest: bytes, group: str, ticket: object
    ) -> None:
        """Re-verify the remembered secret (urgent: it was right); the IP that asked stays
        familiar."""
        try:
            until, scopes = await self._verify(client_id, client_secret, urgent=True)
            if self._refreshing.get(client_id) is ticket:
                self._remember(client_id, digest, until, scopes)
                await self._mark_familiar(client_id, group)
        except InvalidClientError:  # deleted since: forget it now rather than at the window's end
            self.forget(client_id)
        except Exception as exc:  # the database, the store or the hasher: it lapses on time
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

    async def _verify(
        self, client_id: str, client_secret: str, *, urgent: bool
    ) -> tuple[_Until, tuple[str, ...]]:
        """Check the secret against the stored hashes (the current one, then a previous one
        still in its overlap); if right, until when (monotonic) it may be remembered: the
        window from the moment the row was read, and never past the previous secret's end.

        ``urgent`` applies to an existing client only; an unknown one's dummy never is."""
        read_at = self._now()
        generation = self._generation(client_id)  # before the read: a change after it counts
        async with self._sessionmaker() as session:
            client = await session.get(Client, client_id)
        if client is None or client.deleted_at is not None:
            self._drop(client_id)
            await self._hasher.verify_dummy(client_secret)
            raise _Refused(known=False)
        until: _Until = (read_at + self._cache_seconds, None, generation)
        if not await self._hasher.verify(client.secret_hash, client_secret, urgent=urgent):
            ends = client.previous_secret_expires_at
            in_overlap = ends is not None and self._clock.now() < ends
            if not in_overlap or not await self._hasher.verify(
                client.previous_secret_hash or "", client_secret, urgent=urgent
            ):
                raise _Refused(known=True)
            until = (until[0], ends, until[2])
        return until, tuple(client.scopes)

    def forget(self, client_id: str) -> None:
        """Drop a cached verification, and any re-verification under way, on this instance
        (the others are told by the ``clients`` event: ``Clients`` publishes it)."""
        if len(self._changes) >= _MAX_CACHED_CLIENTS:
            self.forget_all()  # bounded: a fresh epoch outdates every verification under way
        self._changes[client_id] += 1
        self._drop(client_id)

    def _drop(self, client_id: str) -> None:
        self._verified.pop(client_id, None)
        self._scopes.pop(client_id, None)
        self._refreshing.pop(client_id, None)

    def forget_all(self) -> None:
        """Events may have been missed (a resubscription): every client hashes again."""
        self._epoch += 1
        self._changes.clear()
        self._verified.clear()
        self._scopes.clear()
        self._refreshing.clear()

    def _generation(self, client_id: str) -> tuple[int, int]:
        return self._epoch, self._changes[client_id]
