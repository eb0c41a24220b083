"""Key lifecycle changes: rotate (scheduled, manual), revoke, expire; and what is due.

``next → active → retired → expired``, plus ``revoked`` (DESIGN.md, API.md). Every change:

1. takes the store lock ``KEYS_LOCK`` (a token; released only by its holder) — busy means
   another instance is changing keys: ``RotationInProgressError``; the store down means
   ``StoreUnavailableError`` and nothing is touched;
2. re-reads the keys inside the lock and one database transaction (rows locked FOR UPDATE on
   Postgres, BEGIN IMMEDIATE on SQLite), so N instances that all found a rotation due make one;
3. checks the lock is still held right before commit (a lost lock rolls everything back);
4. announces ``KEYS_CHANNEL`` after commit, so every instance reloads its key cache.

Timing rules (``RotationPolicy``): a scheduled rotation is due ``interval`` after the active
key was activated. Any rotation but an emergency one promotes a ``next`` key only once it has
been published for the JWKS ``max-age`` plus the key-cache refresh (every instance's JWKS
and every verifier's cache hold it by then). A retired key verifies until its successor's
activation + access TTL + leeway + the key-cache refresh (an instance that missed the event
may sign with it that much longer); then it is ``expired`` and leaves JWKS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.db.models import KeyStatus, SigningKey
from auth_service.db.session import Database
from auth_service.errors import NotFoundError, RotationInProgressError
from auth_service.services.key_events import (
    follow_key_events,
    reload_keyring,
    watch_key_statuses,
)
from auth_service.services.keyring import KeyRing, in_jwks_order
from auth_service.services.keys import (
    KEYS_CHANNEL,
    KEYS_LOCK,
    KeyContext,
    audit_key,
    ensure_signing_keys,
    list_keys,
    load_snapshot,
    new_signing_key,
)
from auth_service.settings import Settings

log = logging.getLogger(__name__)

Trigger = Literal["scheduled", "manual", "revocation"]


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    interval: timedelta
    access_ttl: timedelta
    leeway: timedelta
    jwks_max_age: timedelta
    cache_refresh: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> RotationPolicy:
        return cls(
            interval=settings.key_rotation_interval,
            access_ttl=settings.access_token_ttl,
            leeway=settings.clock_leeway,
            jwks_max_age=settings.jwks_max_age,
            cache_refresh=settings.key_cache_refresh,
        )

    @property
    def min_next_age(self) -> timedelta:
        """How long a ``next`` key is published before a non-emergency rotation promotes it."""
        return self.jwks_max_age + self.cache_refresh

    def retired_until(self, successor_activated_at: datetime) -> datetime:
        return successor_activated_at + self.access_ttl + self.leeway + self.cache_refresh

    def due_at(self, active: SigningKey) -> datetime:
        return (active.activated_at or active.created_at) + self.interval


@dataclass(frozen=True, slots=True)
class RotationResult:
    active_kid: str
    previous_kid: str | None
    rotated: bool


@dataclass(frozen=True, slots=True)
class DueReport:
    rotation: RotationResult | None
    expired: list[str]


@asynccontextmanager
async def keys_lock(ctx: KeyContext, *, wait: timedelta = timedelta(0)) -> AsyncIterator[str]:
    """Hold ``KEYS_LOCK`` for the block; ``RotationInProgressError`` if it stays busy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait.total_seconds()
    while (token := await ctx.store.acquire_lock(KEYS_LOCK, ctx.lock_ttl)) is None:
        if loop.time() >= deadline:
            raise RotationInProgressError("another instance is changing the signing keys")
        await asyncio.sleep(0.1)
    try:
        yield token
    finally:
        await ctx.store.release_lock(KEYS_LOCK, token)


async def _still_held(ctx: KeyContext, token: str) -> None:
    if not await ctx.store.extend_lock(KEYS_LOCK, token, ctx.lock_ttl):
        raise RotationInProgressError("the key lock was lost before commit; nothing was written")


async def _keys_in(session: AsyncSession, *statuses: KeyStatus) -> dict[str, SigningKey]:
    query = select(SigningKey).where(SigningKey.status.in_(statuses)).with_for_update()
    return {row.status: row for row in (await session.scalars(query)).all()}


async def _promote(
    ctx: KeyContext, session: AsyncSession, policy: RotationPolicy, now: datetime
) -> RotationResult:
    """Within the caller's transaction: next → active, active → retired, a new next.

    The order of the flushes keeps the partial unique indexes (one active, one next) true
    after every statement.
    """
    current = await _keys_in(session, KeyStatus.ACTIVE, KeyStatus.NEXT)
    active, upcoming = current.get(KeyStatus.ACTIVE), current.get(KeyStatus.NEXT)
    if upcoming is None:  # never after start-up (a revoked next is replaced at once)
        log.warning("no next key to promote: a new key signs without being published first")
        upcoming = await new_signing_key(ctx, status=KeyStatus.NEXT, now=now)
        session.add(upcoming)
        await session.flush()
    replacement = await new_signing_key(ctx, status=KeyStatus.NEXT, now=now)
    if active is not None:
        active.status, active.retired_at = KeyStatus.RETIRED, now
        active.expires_at = policy.retired_until(now)
        await session.flush()
    upcoming.status, upcoming.activated_at = KeyStatus.ACTIVE, now
    await session.flush()
    session.add(replacement)
    await session.flush()
    if active is not None:
        await audit_key(ctx, session, "key.retired", active.kid)
    await audit_key(ctx, session, "key.promoted", upcoming.kid)
    await audit_key(ctx, session, "key.published", replacement.kid)
    return RotationResult(
        active_kid=upcoming.kid,
        previous_kid=active.kid if active is not None else None,
        rotated=True,
    )


async def rotate_keys(
    ctx: KeyContext, policy: RotationPolicy, *, trigger: Trigger
) -> RotationResult:
    """Rotate now (``manual``) or if due (``scheduled``); see the module docstring."""
    try:
        if trigger == "scheduled" and (idle := await _not_due(ctx, policy)) is not None:
            result = idle  # the common case: no lock, no write
        else:
            result = await _rotate_locked(ctx, policy, trigger)
    except Exception as exc:
        ctx.metrics.count_rotation(trigger, _outcome(exc))
        raise
    ctx.metrics.count_rotation(trigger, "rotated" if result.rotated else "not_due")
    if result.rotated:
        log.info(
            "rotated the signing keys (%s): %s is active, %s retired",
            trigger,
            result.active_kid,
            result.previous_kid,
        )
        await announce(ctx, "rotated")
    return result


async def _not_due(ctx: KeyContext, policy: RotationPolicy) -> RotationResult | None:
    async with ctx.sessionmaker() as session:
        query = select(SigningKey).where(SigningKey.status == KeyStatus.ACTIVE)
        active = await session.scalar(query)
    if active is not None and ctx.clock.now() < policy.due_at(active):
        return RotationResult(active.kid, None, rotated=False)
    return None


async def _rotate_locked(
    ctx: KeyContext, policy: RotationPolicy, trigger: Trigger
) -> RotationResult:
    async with keys_lock(ctx) as token, ctx.sessionmaker() as session, session.begin():
        now = ctx.clock.now()
        current = await _keys_in(session, KeyStatus.ACTIVE, KeyStatus.NEXT)
        active, upcoming = current.get(KeyStatus.ACTIVE), current.get(KeyStatus.NEXT)
        if trigger == "scheduled" and active is not None and now < policy.due_at(active):
            return RotationResult(active.kid, None, rotated=False)  # another instance did it
        if upcoming is not None and now - upcoming.created_at < policy.min_next_age:
            ready = upcoming.created_at + policy.min_next_age
            raise RotationInProgressError(
                f"the next key was published at {upcoming.created_at.isoformat()}; verifiers "
                f"may not hold it before {ready.isoformat()} (JWKS max-age + key-cache "
                "refresh), so it cannot sign yet; revoke the active key for an emergency rotation"
            )
        result = await _promote(ctx, session, policy, now)
        await _still_held(ctx, token)
    return result


async def revoke_key(ctx: KeyContext, policy: RotationPolicy, kid: str) -> tuple[str, str]:
    """Revoke ``kid`` (idempotent); the active key is rotated away first, even if its ``next``
    is young, and a revoked ``next`` is replaced at once. Returns (kid, active kid)."""
    wait = ctx.lock_ttl + timedelta(seconds=5)  # an emergency: wait out a rotation in flight
    async with (
        keys_lock(ctx, wait=wait) as token,
        ctx.sessionmaker() as session,
        session.begin(),
    ):
        now = ctx.clock.now()
        query = select(SigningKey).where(SigningKey.kid == kid).with_for_update()
        row = await session.scalar(query)
        if row is None:
            raise NotFoundError("no signing key has that kid")
        changed = row.status != KeyStatus.REVOKED
        if row.status == KeyStatus.ACTIVE:
            await _promote(ctx, session, policy, now)
            ctx.metrics.count_rotation("revocation", "rotated")
        if changed:
            was_next = row.status == KeyStatus.NEXT
            row.status, row.revoked_at = KeyStatus.REVOKED, now
            await session.flush()
            upcoming = None
            if was_next:  # the RSA key is made before the audit head lock is taken
                upcoming = await new_signing_key(ctx, status=KeyStatus.NEXT, now=now)
                session.add(upcoming)
                await session.flush()
            await audit_key(ctx, session, "key.revoked", kid)
            if upcoming is not None:
                await audit_key(ctx, session, "key.published", upcoming.kid)
        active = (await _keys_in(session, KeyStatus.ACTIVE))[KeyStatus.ACTIVE]
        await _still_held(ctx, token)
    if changed:
        log.warning("revoked signing key %s; %s is active", kid, active.kid)
        await announce(ctx, "revoked")
    return kid, active.kid


async def expire_retired_keys(ctx: KeyContext) -> list[str]:
    """Mark every retired key past its ``expires_at`` as expired (kept in the database)."""
    if not await _retired_keys_past_expiry(ctx):
        return []  # the common case: no lock, no write
    async with keys_lock(ctx) as token, ctx.sessionmaker() as session, session.begin():
        rows = await _retired_keys_past_expiry(ctx, session)
        for row in rows:
            row.status = KeyStatus.EXPIRED
            await audit_key(ctx, session, "key.expired", row.kid)
        await _still_held(ctx, token)
    if rows:
        log.info("expired retired signing keys: %s", ", ".join(row.kid for row in rows))
        await announce(ctx, "expired")
    return [row.kid for row in rows]


async def _retired_keys_past_expiry(
    ctx: KeyContext, session: AsyncSession | None = None
) -> list[SigningKey]:
    query = select(SigningKey).where(
        SigningKey.status == KeyStatus.RETIRED, SigningKey.expires_at <= ctx.clock.now()
    )
    if session is not None:
        return list((await session.scalars(query.with_for_update())).all())
    async with ctx.sessionmaker() as own:
        return list((await own.scalars(query)).all())


async def run_due_work(ctx: KeyContext, policy: RotationPolicy) -> DueReport:
    """What the scheduler runs: rotate if due, then expire what is over."""
    rotation = await rotate_keys(ctx, policy, trigger="scheduled")
    expired = await expire_retired_keys(ctx)
    return DueReport(rotation=rotation, expired=expired)


async def announce(ctx: KeyContext, what: str) -> None:
    """Tell every instance to reload; a lost event is caught up by their refresh timers."""
    try:
        await ctx.store.publish(KEYS_CHANNEL, what)
    except Exception:  # the change is committed; do not report it as failed
        log.exception("could not announce the key change; instances reload on their timer")


def _outcome(exc: Exception) -> str:
    return "busy" if isinstance(exc, RotationInProgressError) else "failed"


@dataclass(frozen=True, slots=True)
class RotationStatus:
    active_kid: str | None
    active_since: datetime | None
    next_rotation_at: datetime | None
    interval_hours: float
    published_keys: list[str]  # JWKS order: active, next, retired
    last_rotation: dict[str, str | datetime | None] | None


async def rotation_status(ctx: KeyContext, policy: RotationPolicy) -> RotationStatus:
    async with ctx.sessionmaker() as session:
        rows = await list_keys(session)
    active = next((row for row in rows if row.status == KeyStatus.ACTIVE), None)
    published = in_jwks_order(rows)
    previous = max(
        (row for row in rows if row.retired_at is not None),
        key=lambda row: row.retired_at or row.created_at,
        default=None,
    )
    last = None
    if active is not None and previous is not None:
        last = {"at": previous.retired_at, "active_kid": active.kid, "previous_kid": previous.kid}
    return RotationStatus(
        active_kid=active.kid if active else None,
        active_since=(active.activated_at or active.created_at) if active else None,
        next_rotation_at=policy.due_at(active) if active else None,
        interval_hours=policy.interval.total_seconds() / 3600,
        published_keys=[row.kid for row in published],
        last_rotation=last,
    )


class KeyRotation:
    """The signing keys' life: make sure they exist, load, rotate, revoke, expire, report.

    Every change reloads this instance's key cache before it returns (the others follow the
    "keys changed" event, or their refresh timer)."""

    def __init__(
        self, keys: KeyContext, policy: RotationPolicy, keyring: KeyRing, db: Database
    ) -> None:
        self.keys = keys
        self.policy = policy
        self._keyring = keyring
        self._db = db

    async def ensure_keys(self, *, wait: timedelta | None = None) -> bool:
        """Create the active and next keys if missing; True if this call created any."""
        return await ensure_signing_keys(self.keys, wait=wait)

    async def load(self) -> None:
        """Load the key cache; raises if the keys cannot be opened (a wrong secret)."""
        self._keyring.replace(await load_snapshot(self.keys))

    async def reload(self) -> bool:
        """Reload the key cache now; on failure keep the old one. True on success."""
        return await reload_keyring(self.keys, self._keyring)

    async def follow(self, *, refresh_every: timedelta, ready: asyncio.Event) -> None:
        """Keep the key cache current until cancelled (events, resubscription, a timer)."""
        await follow_key_events(self.keys, self._keyring, refresh_every=refresh_every, ready=ready)

    async def watch_statuses(self, *, every: timedelta) -> None:
        """The in-process store only: the CLI's ``keys rotate|revoke`` runs in another
        process, whose "keys changed" event never reaches this one; a cheap look at the keys'
        statuses every ``every`` reloads the cache when they changed."""
        await watch_key_statuses(self.keys, self._keyring, every=every)

    async def rotate(self, *, trigger: Trigger = "manual") -> RotationResult:
        result = await rotate_keys(self.keys, self.policy, trigger=trigger)
        await self.reload()
        return result

    async def revoke(self, kid: str) -> tuple[str, str]:
        """Revoke ``kid``; returns (kid, the active kid)."""
        result = await revoke_key(self.keys, self.policy, kid)
        await self.reload()
        return result

    async def run_due_work(self) -> DueReport:
        return await run_due_work(self.keys, self.policy)

    async def status(self) -> RotationStatus:
        return await rotation_status(self.keys, self.policy)

    async def all_keys(self) -> list[SigningKey]:
        """Every signing key ever made, oldest first."""
        async with self._db.read() as session:
            return await list_keys(session)
