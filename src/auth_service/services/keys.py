"""Signing keys: creation, encryption at rest, the initial pair, and loading the key cache.

Lifecycle (DESIGN.md): ``next → active → retired → expired``, plus ``revoked``. Every state
change runs under the store lock ``KEYS_LOCK`` and is announced on ``KEYS_CHANNEL`` after
commit, so every instance reloads its ``KeyRing``. Failure modes handled here:

- another instance holds the lock: wait for its result instead of creating a second pair;
- the lock is lost (expired) before commit: roll back (nothing half-written);
- the secret does not open the active key: ``KeyDecryptionError`` (one clear line at start-up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.clock import Clock
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.crypto.jwk import (
    generate_rsa_key,
    private_key_from_pem,
    private_key_to_pem,
    public_jwk_members,
    thumbprint,
)
from auth_service.db.models import KeyStatus, SigningKey
from auth_service.errors import KeyDecryptionError, RotationInProgressError, ServiceUnavailableError
from auth_service.observability import Metrics
from auth_service.services.audit import Audit
from auth_service.services.keyring import (
    KeySnapshot,
    SigningMaterial,
    build_jwks,
    verification_key,
)
from auth_service.services.store_keys import KEYS_CHANNEL as KEYS_CHANNEL
from auth_service.services.store_keys import SIGNING_KEYS_LOCK
from auth_service.store.base import Store

log = logging.getLogger(__name__)

KEYS_LOCK = SIGNING_KEYS_LOCK  # a bare name: the store adds its own lock namespace
SIGNING_KEY_PURPOSE = "signing-key"
ALGORITHM = "RS256"

KeyGenerator = Callable[[int], rsa.RSAPrivateKey]


@dataclass(frozen=True, slots=True)
class KeyContext:
    """What the key use cases need, passed in (no globals)."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: Store
    envelope: Envelope
    clock: Clock
    key_bits: int
    lock_ttl: timedelta
    generate: KeyGenerator = generate_rsa_key
    metrics: Metrics = field(default_factory=Metrics)
    # kid → (sealed bytes, opened key): a key is decrypted and RSA-checked once per process
    # (~60 ms each), not on every reload; a changed ciphertext is opened afresh.
    opened: dict[str, tuple[bytes, rsa.RSAPrivateKey]] = field(default_factory=dict)
    audit: Audit | None = None  # None in the tests that race bare key contexts


async def audit_key(ctx: KeyContext, session: AsyncSession, type_: str, kid: str) -> None:
    """A key's change in the audit log, in the transaction that makes it."""
    if ctx.audit is not None:
        await ctx.audit.record(session, type_, subject=kid)


def signing_envelope(secret: str | Sequence[str]) -> Envelope:
    return Envelope(secret, purpose=SIGNING_KEY_PURPOSE)


async def new_signing_key(ctx: KeyContext, *, status: KeyStatus, now: datetime) -> SigningKey:
    """Generate an RSA key off the event loop and seal its private half under the kid."""
    private_key = await asyncio.to_thread(ctx.generate, ctx.key_bits)
    members = public_jwk_members(private_key.public_key())
    kid = thumbprint(members)
    sealed = ctx.envelope.seal(private_key_to_pem(private_key), associated_data=kid)
    return SigningKey(
        kid=kid,
        alg=ALGORITHM,
        key_bits=ctx.key_bits,
        status=status,
        public_jwk=members,
        private_key_encrypted=sealed,
        created_at=now,
        activated_at=now if status == KeyStatus.ACTIVE else None,
    )


def open_private_key(envelope: Envelope, row: SigningKey) -> rsa.RSAPrivateKey:
    try:
        pem = envelope.open(row.private_key_encrypted, associated_data=row.kid)
    except EnvelopeError as exc:
        raise KeyDecryptionError(
            f"AUTH_KEY_ENCRYPTION_SECRET does not decrypt signing key {row.kid}: the secret is "
            "wrong or the key row was tampered with; restore the secret the keys were sealed with"
        ) from exc
    return private_key_from_pem(pem)


async def _status_counts(session: AsyncSession) -> tuple[bool, bool]:
    statuses = set(
        (
            await session.scalars(
                select(SigningKey.status).where(
                    SigningKey.status.in_((KeyStatus.ACTIVE, KeyStatus.NEXT))
                )
            )
        ).all()
    )
    return KeyStatus.ACTIVE in statuses, KeyStatus.NEXT in statuses


async def ensure_signing_keys(ctx: KeyContext, *, wait: timedelta | None = None) -> bool:
    """Make sure one ``active`` and one ``next`` key exist. True if this call created any.

    Exactly one instance creates them (store lock, re-checked inside). The others wait for
    its commit; one that loses the lock, or the race at the unique indexes, looks again.
    """
    limit = wait if wait is not None else ctx.lock_ttl * 2 + timedelta(seconds=5)
    deadline = asyncio.get_running_loop().time() + limit.total_seconds()
    while True:
        async with ctx.sessionmaker() as session:
            if all(await _status_counts(session)):
                return False
        if asyncio.get_running_loop().time() > deadline:
            raise ServiceUnavailableError("timed out waiting for another instance to create keys")
        token = await ctx.store.acquire_lock(KEYS_LOCK, ctx.lock_ttl)
        if token is None:
            await asyncio.sleep(0.2)
            continue
        try:
            created = await _create_missing_keys(ctx, token)
        except (RotationInProgressError, IntegrityError) as exc:
            log.warning("another instance created keys first (%s); looking again", exc.__class__)
            continue
        finally:
            await ctx.store.release_lock(KEYS_LOCK, token)
        if created:
            await ctx.store.publish(KEYS_CHANNEL, "created")
        return created


async def _create_missing_keys(ctx: KeyContext, token: str) -> bool:
    now = ctx.clock.now()
    async with ctx.sessionmaker() as session, session.begin():
        has_active, has_next = await _status_counts(session)  # re-read inside the lock
        if has_active and has_next:
            return False
        if not has_active:
            first = await new_signing_key(ctx, status=KeyStatus.ACTIVE, now=now)
            session.add(first)
            await audit_key(ctx, session, "key.published", first.kid)
            await audit_key(ctx, session, "key.promoted", first.kid)
            log.info("created the first active signing key")
        if not has_next:
            upcoming = await new_signing_key(ctx, status=KeyStatus.NEXT, now=now)
            session.add(upcoming)
            await audit_key(ctx, session, "key.published", upcoming.kid)
        if not await ctx.store.extend_lock(KEYS_LOCK, token, ctx.lock_ttl):
            raise RotationInProgressError("the key lock was lost before commit; nothing written")
    return True


async def list_keys(session: AsyncSession) -> list[SigningKey]:
    return list((await session.scalars(select(SigningKey).order_by(SigningKey.created_at))).all())


async def _authenticated_private_key(ctx: KeyContext, row: SigningKey) -> rsa.RSAPrivateKey | None:
    """Open the row's private key and check it matches the published public key and the kid.

    The public columns are not encrypted, so a row written by anyone with database access
    could publish a key of theirs; only a row sealed under our secret is trusted. A bad
    active key stops start-up; any other bad row is left out (and logged).
    """
    try:
        sealed = bytes(row.private_key_encrypted)
        cached = ctx.opened.get(row.kid)
        if cached is not None and cached[0] == sealed:
            private_key = cached[1]
        else:  # off the event loop: parsing checks the RSA key (tens of ms)
            private_key = await asyncio.to_thread(open_private_key, ctx.envelope, row)
            ctx.opened[row.kid] = (sealed, private_key)
        members = public_jwk_members(private_key.public_key())
        stored = {name: row.public_jwk.get(name) for name in ("kty", "n", "e")}
        if members != stored or thumbprint(members) != row.kid:
            raise KeyDecryptionError(
                f"signing key {row.kid} does not match its public key or kid: the row was altered"
            )
    except KeyDecryptionError:
        if row.status == KeyStatus.ACTIVE:
            raise
        log.error("signing key %s (%s) is not authentic; it is not published", row.kid, row.status)
        return None
    return private_key


async def load_snapshot(ctx: KeyContext) -> KeySnapshot:
    """Read every key that may verify or is published, each checked against its sealed half."""
    async with ctx.sessionmaker() as session:
        rows = await list_keys(session)
    trusted: list[SigningKey] = []
    signing = None
    for row in rows:
        if row.status == KeyStatus.EXPIRED:
            continue
        if row.status == KeyStatus.REVOKED:  # never verifies; kept so tokens get "key_revoked"
            trusted.append(row)
            continue
        private_key = await _authenticated_private_key(ctx, row)
        if private_key is None:
            continue
        trusted.append(row)
        if row.status == KeyStatus.ACTIVE:
            signing = SigningMaterial(row.kid, row.alg, private_key)
    return KeySnapshot(
        keys={row.kid: verification_key(row) for row in trusted},
        signing=signing,
        jwks=build_jwks(trusted),
        loaded_at=ctx.clock.now(),
    )
