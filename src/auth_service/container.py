"""The one object that holds a running instance's parts; built in the app's lifespan.

``build_container`` does no I/O. ``start`` checks the schema, makes sure the signing keys
exist, loads the key cache and starts the background followers; ``stop`` undoes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from auth_service.clock import Clock, SystemClock
from auth_service.crypto.jwk import generate_rsa_key
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.migrate import current_revision, head_revision
from auth_service.db.session import (
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
)
from auth_service.errors import ConfigurationError
from auth_service.scheduler import KeyScheduler
from auth_service.services.clients import ClientAuthenticator
from auth_service.services.key_events import follow_key_events, reload_keyring
from auth_service.services.keyring import KeyRing
from auth_service.services.keys import (
    KeyContext,
    KeyGenerator,
    ensure_signing_keys,
    load_snapshot,
    signing_envelope,
)
from auth_service.services.mail import Mailer, create_mailer
from auth_service.services.password_policy import PasswordPolicy
from auth_service.services.revocation import INDEX_MARKER_KEY, RevocationPolicy
from auth_service.services.revocation_index import (
    RevocationIndex,
    check_eviction_policy,
    follow_database,
    prepare_index,
)
from auth_service.services.rotation import RotationPolicy
from auth_service.services.sessions import SessionContext
from auth_service.services.store_keys import MIRRORED_PREFIXES
from auth_service.services.totp import TotpContext
from auth_service.services.validation import TokenValidator
from auth_service.settings import Settings, ensure_production_ready
from auth_service.store import Store, StoreUnavailableError, create_store
from auth_service.store.mirror import MirroredStore

log = logging.getLogger(__name__)

_STOP_SECONDS = 5
# With the in-process store a CLI change (another process) reaches this one within a second.
_DATABASE_FOLLOW_EVERY = timedelta(seconds=0.5)


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    store: Store
    clock: Clock
    keyring: KeyRing
    keys: KeyContext
    hasher: PasswordHasher
    validator: TokenValidator
    clients: ClientAuthenticator
    sessions: SessionContext
    policy: RotationPolicy
    totp: TotpContext
    mailer: Mailer
    revocations: RevocationIndex
    scheduler: KeyScheduler | None = None
    owns_store: bool = True
    mirror: MirroredStore | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def reload_keys(self) -> bool:
        """Reload this instance's key cache now (the others follow the "keys changed" event)."""
        return await reload_keyring(self.keys, self.keyring)


def build_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    key_generator: KeyGenerator = generate_rsa_key,
) -> Container:
    ensure_production_ready(settings)
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    reader = create_read_sessionmaker(engine)
    clock = clock or SystemClock()
    owns_store = store is None
    if store is None:
        store = create_store(
            settings.redis_url,
            settings.redis_key_prefix,
            socket_timeout=settings.redis_socket_timeout_seconds,
        )
    mirror = (
        MirroredStore(store, prefixes=MIRRORED_PREFIXES) if settings.revocation_mirror else None
    )
    if mirror is not None:
        store = mirror
    keys = KeyContext(
        sessionmaker=sessionmaker,
        store=store,
        envelope=signing_envelope(settings.secret_value()),
        clock=clock,
        key_bits=settings.signing_key_bits,
        lock_ttl=timedelta(seconds=settings.key_lock_ttl_seconds),
        generate=key_generator,
    )
    keyring = KeyRing()
    hasher = PasswordHasher.from_settings(settings)
    password_policy = PasswordPolicy.from_settings(settings)
    policy = RotationPolicy.from_settings(settings)
    revocations = RevocationIndex(
        sessionmaker,
        store,
        clock,
        RevocationPolicy(settings.access_token_ttl, settings.clock_leeway),
    )

    return Container(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        reader=reader,
        store=store,
        clock=clock,
        keyring=keyring,
        keys=keys,
        hasher=hasher,
        validator=TokenValidator(
            keyring,
            store,
            settings,
            clock,
            reload_keys=partial(reload_keyring, keys, keyring),
            ensure_index=revocations.ensure,
        ),
        clients=ClientAuthenticator(
            reader,  # it only reads the client row (on SQLite: no write lock)
            hasher,
            store=store,
            failure_limit=settings.client_auth_failure_limit,
            cache_seconds=settings.client_auth_cache_seconds,
            familiar_ttl=timedelta(days=settings.known_client_days),
        ),
        sessions=SessionContext(
            sessionmaker=sessionmaker,
            reader=reader,
            hasher=hasher,
            password_policy=password_policy,
            store=store,
            keyring=keyring,
            settings=settings,
            clock=clock,
        ),
        policy=policy,
        totp=TotpContext.from_settings(settings, store, clock),
        mailer=create_mailer(settings, clock),
        revocations=revocations,
        scheduler=(
            KeyScheduler(keys, policy, every=timedelta(seconds=settings.key_check_interval_seconds))
            if settings.scheduler_enabled
            else None
        ),
        owns_store=owns_store,
        mirror=mirror,
    )


async def check_schema(engine: AsyncEngine) -> None:
    try:
        current = await current_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        raise ConfigurationError(
            f"cannot reach the database ({type(exc).__name__}); check AUTH_DATABASE_URL"
        ) from exc
    if current != head_revision():
        raise ConfigurationError(
            f"the database schema is at {current or 'nothing'}, not {head_revision()}: "
            "run `auth-service migrate`"
        )


async def start(container: Container) -> None:
    await check_schema(container.engine)
    await check_eviction_policy(
        container.store,
        environment=container.settings.environment,
        assume_noeviction=container.settings.redis_assume_noeviction,
    )
    try:
        await ensure_signing_keys(container.keys)
    except StoreUnavailableError as exc:
        raise ConfigurationError(f"cannot reach the store (AUTH_REDIS_URL): {exc}") from exc
    # Load once before serving, so that a wrong secret fails start-up with one clear line.
    # Background followers start only once every check has passed.
    container.keyring.replace(await load_snapshot(container.keys))
    # Never serve from a store that lost revocations: rebuild it from the database first.
    await prepare_index(container.revocations.ensure)
    if container.settings.redis_url is None:  # the in-process store: follow the database
        container.tasks.append(
            asyncio.create_task(
                follow_database(container.revocations, every=_DATABASE_FOLLOW_EVERY),
                name="revocation-database",
            )
        )
    if container.mirror is not None:
        follow = container.mirror.follow(
            before_resync=container.revocations.ensure, marker_key=INDEX_MARKER_KEY
        )
        container.tasks.append(asyncio.create_task(follow, name="revocation-mirror"))
    ready = asyncio.Event()
    container.tasks.append(
        asyncio.create_task(
            follow_key_events(
                container.keys,
                container.keyring,
                refresh_every=timedelta(seconds=container.settings.key_cache_refresh_seconds),
                ready=ready,
            ),
            name="key-events",
        )
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ready.wait(), timeout=5)
    if container.scheduler is not None:
        container.scheduler.start()


async def stop(container: Container) -> None:
    if container.scheduler is not None:
        await container.scheduler.shutdown()
    for task in container.tasks:
        task.cancel()
    if container.tasks:
        # A client library's cleanup must not hold shutdown hostage.
        _done, stuck = await asyncio.wait(container.tasks, timeout=_STOP_SECONDS)
        for task in stuck:
            log.warning(
                "background task %s did not stop within %ss", task.get_name(), _STOP_SECONDS
            )
    container.tasks.clear()
    await container.clients.close()
    if container.owns_store:
        with contextlib.suppress(StoreUnavailableError):
            await container.store.close()
    elif container.mirror is not None:
        container.mirror.mark_stale()  # an injected store lives on; this mirror does not
    await container.engine.dispose()
    container.hasher.close()
    container.sessions.password_policy.close()


@contextlib.asynccontextmanager
async def serving(container: Container) -> AsyncIterator[Container]:
    """``container`` started (``start``) and, however the block ends, stopped (``stop``)."""
    try:
        await start(container)
        yield container
    finally:
        await stop(container)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, serve: bool = False, **build_options: Any
) -> AsyncIterator[Container]:
    """A container built from ``settings`` (``build_options`` go to ``build_container``),
    always torn down by ``stop``, so in one order: client
    re-verifications, store, engine, hasher, password policy.

    ``serve=True`` also starts it (the app's lifespan). Without it nothing runs in the
    background (no followers, no scheduler) and nothing is checked: a command checks what it
    needs itself.
    """
    container = build_container(settings, **build_options)
    if serve:
        async with serving(container):
            yield container
        return
    try:
        yield container
    finally:
        await stop(container)
