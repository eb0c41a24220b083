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
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_service.clock import Clock, SystemClock
from auth_service.container_parts import (
    build_clients,
    build_key_rotation,
    build_user_areas,
    build_webhooks,
)
from auth_service.crypto.audit_mac import AuditMac
from auth_service.crypto.jwk import generate_rsa_key
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.migrate import current_revision, head_revision
from auth_service.db.session import Database, create_engine, create_statement_engine
from auth_service.errors import ConfigurationError
from auth_service.metrics import Exporter
from auth_service.production import ensure_production_ready
from auth_service.scheduler import KeyScheduler
from auth_service.services.accounts import Accounts
from auth_service.services.admin_users import AdminUsers
from auth_service.services.audit import Audit
from auth_service.services.clients import Clients
from auth_service.services.health import Health
from auth_service.services.invitations import Invitations
from auth_service.services.keyring import KeyRing
from auth_service.services.keys import KeyGenerator
from auth_service.services.login import Logins
from auth_service.services.mail import Mailer
from auth_service.services.oauth import OAuth
from auth_service.services.password_policy import PasswordPolicy
from auth_service.services.passwords import Passwords
from auth_service.services.registration import Registrations
from auth_service.services.revocation import INDEX_MARKER_KEY, RevocationPolicy
from auth_service.services.revocation_feed import RevocationFeed
from auth_service.services.revocation_index import (
    RevocationIndex,
    check_eviction_policy,
    follow_database,
    prepare_index,
)
from auth_service.services.rotation import KeyRotation
from auth_service.services.sessions import Sessions
from auth_service.services.store_keys import EVENTS_PREFIX, MIRRORED_PREFIXES
from auth_service.services.totp import Totp
from auth_service.services.validation import TokenValidator, ValidationPolicy
from auth_service.services.verification import EmailVerification
from auth_service.services.webhook_sender import WebhookSender
from auth_service.services.webhooks import Outbox, Webhooks
from auth_service.settings import Settings
from auth_service.store import Store, StoreUnavailableError, create_store
from auth_service.store.mirror import Journal, MirroredStore

log = logging.getLogger(__name__)

_STOP_SECONDS = 5
# With the in-process store a CLI change (another process) reaches this one within a second.
_DATABASE_FOLLOW_EVERY = timedelta(seconds=0.5)


@dataclass
class Container:
    """Settings and infrastructure, the services (one per area, what routes reach through
    ``api/deps.py``), and the runtime state of a started instance."""

    settings: Settings
    engine: AsyncEngine
    db: Database
    store: Store
    clock: Clock
    keyring: KeyRing
    hasher: PasswordHasher
    password_policy: PasswordPolicy
    mailer: Mailer
    revocations: RevocationIndex
    audit: Audit
    webhooks: Webhooks
    webhook_sender: WebhookSender
    # The services:
    accounts: Accounts
    admin_users: AdminUsers
    registrations: Registrations
    verification: EmailVerification
    invitations: Invitations
    metrics: Exporter
    logins: Logins
    sessions: Sessions
    passwords: Passwords
    totp: Totp
    rotation: KeyRotation
    validator: TokenValidator
    clients: Clients
    oauth: OAuth
    health: Health
    # Runtime:
    scheduler: KeyScheduler | None = None
    owns_store: bool = True
    mirror: MirroredStore | None = None
    feed: RevocationFeed | None = None  # the revocation stream (needs the mirror)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def build_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    key_generator: KeyGenerator = generate_rsa_key,
    hasher: PasswordHasher | None = None,
) -> Container:
    ensure_production_ready(settings)
    engine = create_engine(settings)
    db = Database.on(engine, create_statement_engine(settings, engine))
    clock = clock or SystemClock()
    owns_store = store is None
    if store is None:
        store = create_store(
            settings.redis_url,
            settings.redis_key_prefix,
            socket_timeout=settings.redis_socket_timeout_seconds,
            sentinels=settings.redis_sentinels,
            sentinel_service=settings.redis_sentinel_service,
        )
    journal = Journal(
        EVENTS_PREFIX, settings.access_token_ttl + settings.clock_leeway, INDEX_MARKER_KEY
    )
    mirror = (
        MirroredStore(
            store,
            prefixes=MIRRORED_PREFIXES,
            journal=journal,
            outage_grace=settings.revocation_mirror_outage_grace_seconds,
        )
        if settings.revocation_mirror
        else None
    )
    if mirror is not None:
        store = mirror
    keyring = KeyRing()
    hasher = hasher or PasswordHasher.from_settings(settings)
    revocations = RevocationIndex(db.writer, store, clock, RevocationPolicy.from_settings(settings))
    audit = Audit(db, AuditMac(settings.secret_values()), clock, Outbox(clock))
    webhooks, sender = build_webhooks(settings, db, clock, audit)
    rotation = build_key_rotation(settings, db, store, keyring, clock, key_generator, audit)
    users = build_user_areas(settings, db, store, keyring, hasher, clock, audit)
    validator = TokenValidator(
        keyring,
        store,
        ValidationPolicy.from_settings(settings),
        clock,
        reload_keys=rotation.reload,
        ensure_index=revocations.ensure,
    )
    revocation = RevocationPolicy.from_settings(settings)
    clients = build_clients(settings, db, store, hasher, clock, audit)
    return Container(
        settings=settings,
        engine=engine,
        db=db,
        store=store,
        clock=clock,
        keyring=keyring,
        hasher=hasher,
        password_policy=users.password_policy,
        mailer=users.mailer,
        revocations=revocations,
        audit=audit,
        webhooks=webhooks,
        webhook_sender=sender,
        accounts=users.accounts,
        admin_users=users.admin_users,
        registrations=users.registrations,
        verification=users.verification,
        invitations=users.invitations,
        metrics=Exporter(db, hasher.queue, mirror),
        logins=users.logins,
        sessions=users.sessions,
        passwords=users.passwords,
        totp=users.totp,
        rotation=rotation,
        validator=validator,
        clients=clients,
        oauth=OAuth(
            db,
            store,
            clients,
            users.tokens,
            validator,
            users.sessions,
            revocation,
            issuer=settings.issuer,
            clock=clock,
        ),
        health=Health(
            engine,
            store,
            keyring,
            clock,
            stale_after=timedelta(seconds=3 * settings.key_cache_refresh_seconds),
        ),
        scheduler=(
            KeyScheduler(
                rotation,
                every=timedelta(seconds=settings.key_check_interval_seconds),
                housekeeping=(
                    partial(audit.prune_older_than, settings.audit_retention_days)
                    if settings.audit_retention_days
                    else None
                ),
            )
            if settings.scheduler_enabled
            else None
        ),
        owns_store=owns_store,
        mirror=mirror,
        feed=(
            RevocationFeed(
                mirror,
                keyring,
                per_client=settings.event_streams_per_client,
                heartbeat=settings.event_heartbeat_seconds,
            )
            if mirror is not None
            else None
        ),
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
        await container.rotation.ensure_keys()
    except StoreUnavailableError as exc:
        raise ConfigurationError(f"cannot reach the store (AUTH_REDIS_URL): {exc}") from exc
    # Load once before serving, so that a wrong secret fails start-up with one clear line.
    # Background followers start only once every check has passed.
    await container.rotation.load()
    # Never serve from a store that lost revocations: rebuild it from the database first.
    await prepare_index(container.revocations.ensure)
    if container.settings.redis_url is None:  # the in-process store: follow the database
        container.tasks.append(
            asyncio.create_task(
                follow_database(container.revocations, every=_DATABASE_FOLLOW_EVERY),
                name="revocation-database",
            )
        )
        container.tasks.append(
            asyncio.create_task(
                container.clients.poll_changes(every=_DATABASE_FOLLOW_EVERY),
                name="client-changes-database",
            )
        )
        container.tasks.append(
            asyncio.create_task(
                container.rotation.watch_statuses(every=_DATABASE_FOLLOW_EVERY),
                name="key-statuses-database",
            )
        )
    container.tasks.append(
        asyncio.create_task(container.clients.follow_changes(), name="client-changes")
    )
    container.tasks.append(
        asyncio.create_task(container.webhook_sender.run(), name="webhook-sender")
    )
    if container.mirror is not None:
        follow = container.mirror.follow(
            before_resync=container.revocations.ensure, marker_key=INDEX_MARKER_KEY
        )
        container.tasks.append(asyncio.create_task(follow, name="revocation-mirror"))
    ready = asyncio.Event()
    container.tasks.append(
        asyncio.create_task(
            container.rotation.follow(
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
    if container.feed is not None:
        container.feed.shut_down()
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
    await container.db.dispose()
    container.hasher.close()
    container.password_policy.close()


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
