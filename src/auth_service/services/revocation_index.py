"""Rebuild the store's revocation entries from the database (DESIGN.md "Revocation is durable").

The database is the record; the store (and each instance's mirror) is an index of it whose
completeness is witnessed by the marker ``revoked:epoch`` (``INDEX_MARKER_KEY``). When the
marker is absent the index may be missing entries, and ``RevocationIndex.ensure`` rebuilds:

1. take the store lock ``revocation-rebuild`` (another instance holding it is rebuilding:
   wait briefly and re-check the marker);
2. read, in short read-only sessions paged by primary key, what can still matter within the
   access-token window (``horizon`` = access TTL + leeway): sessions revoked within it →
   ``revoked:sid:<id>``; users whose ``tokens_revoked_after`` is within it →
   ``user:<id>:revoked-after``; disabled users whose ``updated_at`` is within it →
   ``user:<id>:disabled`` (a disabled user gets no new token, and ``updated_at`` is at or
   after the disabling, so an older one holds no live token); each with the TTL it has left;
3. write them through the store with ``put_if_absent`` (so the mirror announces them, and a
   revocation written meanwhile — never older than the row we read — is not overwritten);
4. re-read the disabled users just written and drop the entry of any enabled meanwhile
   (the race with an un-revocation, see below);
5. check the lock is still ours (a flush during the rebuild takes the lock with it: start
   again), then set the marker, last.

Two more sources, for the OAuth endpoints: ``clients.tokens_revoked_after`` (a deleted
client) → ``revoked:client:<id>:deleted``, and ``revoked_tokens`` (``/oauth/revoke``) →
``revoked:jti:<jti>`` until the token's expiry plus leeway. Logout's ``revoked:jti:`` needs
no row: logout revokes the token's session too, so ``revoked:sid:`` covers it.

Failure modes: a database or store error while rebuilding raises ``RevocationIndexError``
and leaves the marker absent, so validation keeps answering 503 and the next call retries.
A holder that dies loses the lock after ``lock_ttl``; the others then take over.

Enabling a user is the one un-revocation. If an enable lands between our read and our
write, step 4 sees it and deletes the entry, provided the enable commits before it deletes
its store entry (the order an un-revocation must use). An enable that deletes first could
still be overwritten: the user then stays refused until the entry's TTL (at most
``horizon``) — a fail-closed error, never a revoked token accepted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.clock import Clock
from auth_service.db.models import Client, RevokedToken, Session, User
from auth_service.errors import ConfigurationError
from auth_service.services.revocation import (
    INDEX_MARKER_KEY,
    INDEX_MARKER_TTL,
    RevocationPolicy,
    client_deleted_key,
    disabled_key,
    jti_key,
    revoked_after_key,
    sid_key,
)
from auth_service.services.store_keys import REVOCATION_REBUILD_LOCK
from auth_service.store import RedisStore, Store, StoreUnavailableError
from auth_service.store.mirror import MirroredStore

log = logging.getLogger(__name__)

LOCK_NAME = REVOCATION_REBUILD_LOCK
_PAGE_SIZE = 1000
_WRITE_CONCURRENCY = 32  # store writes in flight at once (well under the pool size)
_POLL_SECONDS = 0.05
_ATTEMPTS = 3  # rebuilds started over because the lock vanished (flushed) meanwhile

Entry = tuple[str, str, timedelta]  # key, value, remaining TTL
Row = tuple[Any, datetime]  # primary key, the time the revocation was recorded (or ends)


class RevocationIndexError(Exception):
    """The index could not be made complete (database or store unavailable)."""


class RevocationIndex:
    """Ensures the store's revocation index is complete; built once in the container."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        store: Store,
        clock: Clock,
        policy: RevocationPolicy,
        *,
        lock_ttl: timedelta = timedelta(seconds=10),
        page_size: int = _PAGE_SIZE,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._store = store
        self._clock = clock
        self._policy = policy
        self._lock_ttl = lock_ttl
        self._page_size = page_size
        self._inflight: asyncio.Task[None] | None = None
        self.rebuilds = 0  # rebuilds this process ran (for tests and logs)

    @property
    def policy(self) -> RevocationPolicy:
        return self._policy

    async def ensure(self) -> None:
        """Return once the marker is in the store, rebuilding first if it is absent.

        Single-flight: concurrent callers share one check (and at most one rebuild).
        Raises ``RevocationIndexError`` if the index cannot be made complete.
        """
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._ensure())
            self._inflight.add_done_callback(self._clear)
        await asyncio.shield(self._inflight)

    def _clear(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: a failure is reported to the awaiting callers

    async def _ensure(self) -> None:
        loop = asyncio.get_running_loop()
        # Long enough for a holder that died to lose the lock, and a live one to finish.
        deadline = loop.time() + 3 * self._lock_ttl.total_seconds()
        attempts = 0
        try:
            while not await self._marker_present():
                token = await self._store.acquire_lock(LOCK_NAME, self._lock_ttl)
                if token is None:  # another instance is rebuilding: wait, then re-check
                    if loop.time() > deadline:
                        raise RevocationIndexError("another instance holds the rebuild lock")
                    await asyncio.sleep(_POLL_SECONDS)
                    continue
                try:
                    if await self._rebuild(token):
                        return
                finally:
                    await self._release(token)
                attempts += 1
                if attempts >= _ATTEMPTS:
                    raise RevocationIndexError("the rebuild lost its lock repeatedly")
        except StoreUnavailableError as exc:
            raise RevocationIndexError(f"the store failed during the rebuild: {exc}") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise RevocationIndexError(
                f"the database failed during the rebuild ({type(exc).__name__})"
            ) from exc

    async def _marker_present(self) -> bool:
        return (await self._store.get_many([INDEX_MARKER_KEY]))[0] is not None

    async def _release(self, token: str) -> None:
        try:
            await self._store.release_lock(LOCK_NAME, token)
        except StoreUnavailableError:
            log.warning("could not release the revocation rebuild lock (it expires by itself)")

    async def _rebuild(self, token: str) -> bool:
        """Copy, then set the marker; False if the lock vanished meanwhile (flushed)."""
        if await self._marker_present():  # finished elsewhere just before we took the lock
            return True
        self.rebuilds += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        copied = await self._copy_all(token)
        if not await self._store.extend_lock(LOCK_NAME, token, self._lock_ttl):
            log.warning("the revocation rebuild lost its lock (store flushed?); starting over")
            return False
        await self._store.put(INDEX_MARKER_KEY, secrets.token_urlsafe(12), INDEX_MARKER_TTL)
        log.info(
            "rebuilt the revocation index from the database: %d rows in %.3fs",
            copied,
            loop.time() - started,
        )
        return True

    async def _copy_all(self, token: str) -> int:
        now = self._clock.now()
        since = now - self._policy.horizon
        copied = 0
        for query, to_entry, recheck in (
            (
                select(Session.id, Session.revoked_at).where(Session.revoked_at > since),
                self._session_entry,
                None,
            ),
            (
                select(User.id, User.tokens_revoked_after).where(User.tokens_revoked_after > since),
                self._revoked_after_entry,
                None,
            ),
            (
                select(User.id, User.updated_at).where(
                    User.disabled.is_(True), User.updated_at > since
                ),
                self._disabled_entry,
                self._drop_enabled,
            ),
            (
                select(Client.client_id, Client.tokens_revoked_after).where(
                    Client.tokens_revoked_after > now - self._policy.client_horizon
                ),
                self._client_deleted_entry,
                None,
            ),
            (
                select(RevokedToken.jti, RevokedToken.expires_at).where(
                    RevokedToken.expires_at > since
                ),
                self._jti_entry,
                None,
            ),
        ):
            async for rows in self._pages(query):
                entries = [to_entry(str(row_id), at, now) for row_id, at in rows]
                await self._write([entry for entry in entries if entry is not None])
                if recheck is not None:
                    await recheck([row_id for row_id, _ in rows])
                copied += len(rows)
                await self._store.extend_lock(LOCK_NAME, token, self._lock_ttl)
        return copied

    def now(self) -> datetime:
        return self._clock.now()

    async def catch_up(self, since: datetime) -> None:
        """Index what the database recorded at or after ``since``: sessions revoked, users'
        revoke-after times, users disabled (and the disabled entry of users enabled)."""
        now = self._clock.now()
        async with self._sessionmaker() as db:  # read-only: nothing to commit
            revoked = (
                await db.execute(
                    select(Session.id, Session.revoked_at).where(Session.revoked_at >= since)
                )
            ).all()
            changed = (
                await db.execute(
                    select(
                        User.id, User.disabled, User.tokens_revoked_after, User.updated_at
                    ).where(User.updated_at >= since)
                )
            ).all()
            clients = (
                await db.execute(
                    select(Client.client_id, Client.tokens_revoked_after).where(
                        Client.tokens_revoked_after >= since
                    )
                )
            ).all()
            tokens = (
                await db.execute(
                    select(RevokedToken.jti, RevokedToken.expires_at).where(
                        RevokedToken.revoked_at >= since
                    )
                )
            ).all()
        entries = [self._session_entry(str(sid), at, now) for sid, at in revoked if at]
        entries += [self._client_deleted_entry(cid, at, now) for cid, at in clients if at]
        entries += [self._jti_entry(jti, expires_at, now) for jti, expires_at in tokens]
        for user_id, disabled, revoked_after, updated_at in changed:
            if revoked_after is not None and revoked_after >= since:
                entries.append(self._revoked_after_entry(str(user_id), revoked_after, now))
            if disabled:
                entries.append(self._disabled_entry(str(user_id), updated_at, now))
            else:
                await self._store.delete(disabled_key(str(user_id)))
        for entry in entries:
            if entry is not None:
                await self._store.put(*entry)

    async def _pages(self, query: Select[Any, Any]) -> AsyncIterator[list[Row]]:
        """Rows ``(id, time)`` of ``query`` in primary-key pages, one short session each."""
        id_column = query.selected_columns[0]
        last: Any = None  # a uuid or a string key, as the table's primary key
        while True:
            paged = query.order_by(id_column).limit(self._page_size)
            if last is not None:
                paged = paged.where(id_column > last)
            async with self._sessionmaker() as db:  # read-only: nothing to commit
                rows: list[Row] = [(row[0], row[1]) for row in (await db.execute(paged)).all()]
            if not rows:
                return
            yield rows
            if len(rows) < self._page_size:
                return
            last = rows[-1][0]

    def _remaining(self, at: datetime, now: datetime) -> timedelta | None:
        remaining = at + self._policy.horizon - now
        return remaining if remaining > timedelta(0) else None

    def _session_entry(self, sid: str, revoked_at: datetime, now: datetime) -> Entry | None:
        ttl = self._remaining(revoked_at, now)
        return None if ttl is None else (sid_key(sid), "1", ttl)

    def _revoked_after_entry(self, user_id: str, after: datetime, now: datetime) -> Entry | None:
        ttl = self._remaining(after, now)
        value = str(math.floor(after.timestamp()))  # as ``revoke_user_tokens`` writes it
        return None if ttl is None else (revoked_after_key(user_id), value, ttl)

    def _client_deleted_entry(self, client_id: str, at: datetime, now: datetime) -> Entry | None:
        ttl = at + self._policy.client_horizon - now  # as ``revoke_client_tokens`` writes it
        return None if ttl <= timedelta(0) else (client_deleted_key(client_id), "1", ttl)

    def _jti_entry(self, jti: str, expires_at: datetime, now: datetime) -> Entry | None:
        ttl = expires_at + self._policy.leeway - now  # as ``revoke_jti`` writes it
        return None if ttl <= timedelta(0) else (jti_key(jti), "1", ttl)

    def _disabled_entry(self, user_id: str, updated_at: datetime, now: datetime) -> Entry | None:
        ttl = self._remaining(updated_at, now)
        return None if ttl is None else (disabled_key(user_id), "1", ttl)

    async def _write(self, entries: Sequence[Entry]) -> None:
        for start in range(0, len(entries), _WRITE_CONCURRENCY):
            chunk = entries[start : start + _WRITE_CONCURRENCY]
            await asyncio.gather(
                *(self._store.put_if_absent(key, value, ttl) for key, value, ttl in chunk)
            )

    async def _drop_enabled(self, user_ids: Sequence[uuid.UUID]) -> None:
        """Users enabled since we read them: their entry must not outlive the enable."""
        async with self._sessionmaker() as db:
            query = select(User.id).where(User.id.in_(user_ids), User.disabled.is_(False))
            enabled = [str(row_id) for row_id in (await db.execute(query)).scalars()]
        for user_id in enabled:
            log.info("user %s was enabled during the revocation rebuild", user_id)
            await self._store.delete(disabled_key(user_id))


async def follow_database(index: RevocationIndex, *, every: timedelta) -> None:
    """For the in-process store only (one serving process, while the CLI writes the database
    from another, e.g. ``auth-service users disable``): every ``every`` the index catches up
    with what the database recorded since the last look. Runs until cancelled."""
    since = index.now()
    while True:
        await asyncio.sleep(every.total_seconds())
        looked_at = index.now()
        try:
            await index.catch_up(since)
        except (SQLAlchemyError, OSError, StoreUnavailableError) as exc:
            log.warning("the revocation index could not catch up (%s)", type(exc).__name__)
            continue
        since = looked_at - every  # overlap: a row committed late is looked at twice


async def check_eviction_policy(store: Store, *, environment: str, assume_noeviction: bool) -> None:
    """In production, refuse a Redis that may evict keys (revocations would be lost).

    ``ConfigurationError`` (one line) unless ``maxmemory-policy`` is ``noeviction``; when
    CONFIG is refused (managed Redis) only ``assume_noeviction`` lets the service start.
    """
    inner = store.inner if isinstance(store, MirroredStore) else store
    if environment != "production" or not isinstance(inner, RedisStore):
        return
    try:
        policy = await inner.maxmemory_policy()
    except StoreUnavailableError as exc:
        raise ConfigurationError(f"cannot reach the store (AUTH_REDIS_URL): {exc}") from exc
    if policy is None:
        if assume_noeviction:
            return
        raise ConfigurationError(
            "cannot read Redis maxmemory-policy (CONFIG refused): make sure it is noeviction, "
            "then set AUTH_REDIS_ASSUME_NOEVICTION=true"
        )
    if policy != "noeviction":
        raise ConfigurationError(
            f"Redis maxmemory-policy is {policy}: it may evict revocations; "
            "set maxmemory-policy noeviction"
        )


async def prepare_index(ensure: Callable[[], Awaitable[None]]) -> None:
    """At start-up: make the index complete before serving, or refuse to start."""
    try:
        await ensure()
    except RevocationIndexError as exc:
        raise ConfigurationError(f"cannot rebuild the revocation index: {exc}") from exc
