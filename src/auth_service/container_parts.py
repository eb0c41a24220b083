"""The builders ``build_container`` calls: each area's services, given the ones they call
(no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.session import Database
from auth_service.services.accounts import AccountRules, Accounts
from auth_service.services.admin_users import AdminUsers
from auth_service.services.audit import Audit
from auth_service.services.client_auth import ClientAuthenticator
from auth_service.services.clients import Clients
from auth_service.services.invitations import Invitations
from auth_service.services.keyring import KeyRing
from auth_service.services.keys import KeyContext, KeyGenerator, signing_envelope
from auth_service.services.login import LoginRules, Logins
from auth_service.services.mail import Mailer, create_mailer
from auth_service.services.password_policy import PasswordPolicy
from auth_service.services.passwords import PasswordRules, Passwords
from auth_service.services.registration import Registrations
from auth_service.services.revocation import RevocationPolicy
from auth_service.services.rotation import KeyRotation, RotationPolicy
from auth_service.services.sessions import SessionPolicy, Sessions
from auth_service.services.tokens import TokenIssuer, TokenPolicy
from auth_service.services.totp import Totp
from auth_service.services.verification import EmailVerification, VerificationRules
from auth_service.services.webhook_sender import WebhookSender
from auth_service.services.webhooks import Webhooks
from auth_service.services.webhooks import sealer as webhook_sealer
from auth_service.settings import Settings
from auth_service.store import Store


def build_clients(
    settings: Settings,
    db: Database,
    store: Store,
    hasher: PasswordHasher,
    clock: Clock,
    audit: Audit,
) -> Clients:
    authenticator = ClientAuthenticator(
        db.reader,  # it only reads the client row (on SQLite: no write lock)
        hasher,
        store=store,
        failure_limit=settings.client_auth_failure_limit,
        cache_seconds=settings.client_auth_cache_seconds,
        familiar_ttl=timedelta(days=settings.known_client_days),
        clock=clock,
    )
    revocation = RevocationPolicy.from_settings(settings)
    return Clients(db, store, hasher, authenticator, revocation, clock, audit)


def build_webhooks(
    settings: Settings, db: Database, clock: Clock, audit: Audit
) -> tuple[Webhooks, WebhookSender]:
    envelope = webhook_sealer(settings.secret_values())
    production = settings.environment == "production"
    sender = WebhookSender(
        db, envelope, clock, production=production, poll_seconds=settings.webhook_poll_seconds
    )
    return Webhooks(db, envelope, clock, audit, production=production), sender


def build_key_rotation(
    settings: Settings,
    db: Database,
    store: Store,
    keyring: KeyRing,
    clock: Clock,
    key_generator: KeyGenerator,
    audit: Audit,
) -> KeyRotation:
    keys = KeyContext(
        sessionmaker=db.writer,
        store=store,
        envelope=signing_envelope(settings.secret_values()),
        clock=clock,
        key_bits=settings.signing_key_bits,
        lock_ttl=timedelta(seconds=settings.key_lock_ttl_seconds),
        generate=key_generator,
        audit=audit,
    )
    return KeyRotation(keys, RotationPolicy.from_settings(settings), keyring, db)


@dataclass(frozen=True, slots=True)
class UserAreas:
    password_policy: PasswordPolicy
    mailer: Mailer
    tokens: TokenIssuer
    sessions: Sessions
    passwords: Passwords
    totp: Totp
    logins: Logins
    accounts: Accounts
    admin_users: AdminUsers
    registrations: Registrations
    verification: EmailVerification
    invitations: Invitations


def build_user_areas(
    settings: Settings,
    db: Database,
    store: Store,
    keyring: KeyRing,
    hasher: PasswordHasher,
    clock: Clock,
    audit: Audit,
) -> UserAreas:
    """The frontend-facing services, each given the ones it calls."""
    policy = PasswordPolicy.from_settings(settings)
    mailer = create_mailer(settings, clock)
    revocation = RevocationPolicy.from_settings(settings)
    tokens = TokenIssuer(keyring, TokenPolicy.from_settings(settings))
    sessions = Sessions(
        db, store, tokens, SessionPolicy.from_settings(settings), revocation, clock, audit
    )
    rules = PasswordRules.from_settings(settings)
    passwords = Passwords(db, store, hasher, policy, sessions, mailer, rules, clock, audit)
    sealed = Totp.envelope_for(settings.secret_values())
    issuer = settings.totp_issuer_name
    totp = Totp(db, store, sealed, passwords, sessions, mailer, issuer, clock, audit)
    login_rules = LoginRules.from_settings(settings)
    logins = Logins(db, store, hasher, sessions, totp, login_rules, clock, audit)
    account_rules = AccountRules.from_settings(settings)
    accounts = Accounts(
        db, store, hasher, policy, sessions, account_rules, revocation, clock, audit
    )
    admin_users = AdminUsers(db, sessions, mailer, clock, audit)
    verification = EmailVerification(
        db, store, hasher, mailer, VerificationRules.from_settings(settings), clock, audit
    )
    invitations = Invitations(db, mailer, settings.invitation_url, clock, audit)
    registrations = Registrations(
        db, hasher, policy, accounts, verification, invitations, clock, audit
    )
    return UserAreas(
        policy,
        mailer,
        tokens,
        sessions,
        passwords,
        totp,
        logins,
        accounts,
        admin_users,
        registrations,
        verification,
        invitations,
    )
