"""Accounts: the one email normalisation, registration, disabling and enabling users.

Each use case owns its transaction (``async with self._db.transaction()``), which commits
before the method returns, so before the route answers. No connection or transaction is
held while argon2 or the password policy runs: read, release, hash, then write.

Emails are stored normalised (``normalize_email``), which makes the unique index on
``users.email`` one account per address however it is spelled; every lookup, rate-limit key
and lock key is built from that same function.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import User
from auth_service.db.session import Database
from auth_service.errors import (
    EmailTakenError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    RegistrationClosedError,
    ServerBusyError,
    UnauthorizedError,
)
from auth_service.services import store_keys
from auth_service.services.admins import ADMIN_ROLE, ensure_another_admin
from auth_service.services.audit import Audit
from auth_service.services.limits import ip_group, take_attempt
from auth_service.services.password_policy import PasswordPolicy
from auth_service.services.revocation import RevocationPolicy, mark_disabled
from auth_service.services.sessions import Sessions
from auth_service.settings import Settings
from auth_service.store.base import Store

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit less the angle brackets; also the column size
REGISTER_WINDOW = timedelta(hours=1)


def normalize_email(raw: str) -> str:
    """The canonical form of an email address, or ``InvalidRequestError`` (422).

    Trim, Unicode NFKC (fullwidth letters and the fullwidth full stop become ASCII), the
    domain IDNA/UTS-46 (email-validator: there the ideographic full stops are dots too), lower
    case. An ideographic full stop in the local part stays: a mailbox's local part is the mail
    host's to interpret, and two spellings of it may be two mailboxes. The submitted value is
    never repeated in the error.
    """
    if len(raw) > 4 * MAX_EMAIL_LENGTH:  # do not normalise megabytes of text
        raise InvalidRequestError(f"email: must be at most {MAX_EMAIL_LENGTH} characters")
    candidate = unicodedata.normalize("NFKC", raw).strip().lower()
    if not candidate:
        raise InvalidRequestError("email: an email address is required")
    try:
        validated = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError:
        if len(candidate) > MAX_EMAIL_LENGTH:
            raise InvalidRequestError(
                f"email: must be at most {MAX_EMAIL_LENGTH} characters"
            ) from None
        raise InvalidRequestError("email: not a valid email address") from None
    normalized = unicodedata.normalize("NFKC", validated.normalized).lower()
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise InvalidRequestError(f"email: must be at most {MAX_EMAIL_LENGTH} characters")
    return normalized


def try_normalize_email(raw: str) -> str | None:
    """``normalize_email``, or None for an address that does not normalise (it can match no
    account)."""
    try:
        return normalize_email(raw)
    except InvalidRequestError:
        return None


SECOND_FACTORS = frozenset({"otp", "recovery"})


@dataclass(frozen=True, slots=True)
class AccountRules:
    registration_open: bool
    register_ip_limit: int
    admin_mfa_required: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountRules:
        return cls(
            registration_open=settings.registration_open,
            register_ip_limit=settings.register_ip_limit,
            admin_mfa_required=settings.admin_mfa_required,
        )


class Accounts:
    """Users: registration, lookups, the admin check, disabling and enabling."""

    def __init__(
        self,
        db: Database,
        store: Store,
        hasher: PasswordHasher,
        password_policy: PasswordPolicy,
        sessions: Sessions,
        rules: AccountRules,
        revocation: RevocationPolicy,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self._db = db
        self._audit = audit
        self._store = store
        self._hasher = hasher
        self._password_policy = password_policy
        self._sessions = sessions
        self._rules = rules
        self._revocation = revocation
        self._clock = clock

    async def register(
        self,
        *,
        email: str,
        password: str,
        ip: str | None,
        roles: Sequence[str] = (),
        limited: bool = True,
        email_verified: bool = False,
    ) -> User:
        """Create an enabled user; ``EmailTakenError`` if the (normalised) email exists.

        Over HTTP (``limited``) registration must be open and the attempt is admitted
        (``admit``) before any other work; the CLI's ``create-admin`` passes ``limited=False``
        and ``email_verified=True`` (the operator vouches for the address).
        """
        if isinstance(roles, str):
            raise TypeError("roles must be a sequence of role names, not one string")
        if limited:
            await self.admit(ip, need_open=True)
        address = normalize_email(email)
        await self._password_policy.check(password, email=address)
        async with self._db.read() as db:
            if await find_by_email(db, address) is not None:
                raise EmailTakenError()
        password_hash = await self._hasher.hash(password)
        verified_at = self._clock.now() if email_verified else None
        try:
            # A concurrent registration may insert the same email between the check and the
            # insert: the unique index decides.
            async with self._db.transaction() as db:
                return await self.create(db, address, password_hash, roles, verified_at)
        except IntegrityError as exc:
            raise_if_email_conflict(exc)
            raise

    async def admit(self, ip: str | None, *, need_open: bool) -> None:
        """A registration over HTTP, before any work: 403 while registration is closed
        (unless invited), 503 when the hash queue would refuse it, and one attempt against
        the client IP's ``AUTH_REGISTER_IP_LIMIT`` per hour (429)."""
        if need_open and not self._rules.registration_open:
            raise RegistrationClosedError()
        if self._hasher.queue.full(urgent=False):
            raise ServerBusyError()  # refused before any work: the hash would refuse it
        await take_attempt(
            self._store,
            store_keys.register_ip_key(ip_group(ip)),
            self._rules.register_ip_limit,
            REGISTER_WINDOW,
        )

    async def create(
        self,
        db: AsyncSession,
        address: str,
        password_hash: str,
        roles: Sequence[str],
        verified_at: datetime | None,
    ) -> User:
        """Insert the user (``address`` normalised, the password already hashed) in the
        caller's transaction and append ``user.registered``; the unique index raises
        ``IntegrityError`` for a taken address (``raise_if_email_conflict``)."""
        now = self._clock.now()
        user = User(
            email=address,
            password_hash=password_hash,
            roles=list(roles),
            disabled=False,
            mfa_enabled=False,
            email_verified_at=verified_at,
            password_changed_at=now,
            created_at=now,
            updated_at=now,
        )
        db.add(user)
        await db.flush()
        await self._audit.record(
            db,
            "user.registered",
            subject=str(user.id),
            details={"email": address, "roles": list(roles)},
        )
        return user

    async def get(self, user_id: uuid.UUID) -> User | None:
        async with self._db.read() as db:
            return await db.get(User, user_id)

    async def me(self, user_id: uuid.UUID) -> User:
        """The signed-in user; ``NotFoundError`` if it no longer exists."""
        user = await self.get(user_id)
        if user is None:
            raise NotFoundError("No such user.")
        return user

    async def get_by_email(self, email: str) -> User | None:
        address = try_normalize_email(email)
        if address is None:
            return None
        async with self._db.read() as db:
            return await find_by_email(db, address)

    async def authorize_admin(self, claims: dict[str, Any]) -> User:
        """The caller, if it is an admin NOW: its current roles and status are read from the
        database on every admin request (a demotion or a disabled flag takes effect on the
        next request on every instance, whatever the token says). With
        ``AUTH_ADMIN_REQUIRE_MFA`` (on by default in production) the token must also show a
        second factor in ``amr``."""
        user = await self.get(uuid.UUID(str(claims["sub"])))
        if user is None or user.disabled:
            raise UnauthorizedError("The access token is not valid (user_disabled).")
        if ADMIN_ROLE not in user.roles:
            raise ForbiddenError("The admin role is required.")
        if self._rules.admin_mfa_required and not SECOND_FACTORS.intersection(
            claims.get("amr", [])
        ):
            raise ForbiddenError(
                "Admins must sign in with a second factor (AUTH_ADMIN_REQUIRE_MFA)."
            )
        return user

    async def set_disabled(
        self, user_id: uuid.UUID, disabled: bool, *, keep_an_admin: bool = False
    ) -> User:
        """Disable or enable a user; ``NotFoundError`` if there is no such user,
        ``LastAdminError`` to disable the last enabled admin when ``keep_an_admin`` (over
        HTTP; the CLI may, for an operator's incident response).

        Disabling is durable and immediate everywhere: ``users.disabled`` and
        ``tokens_revoked_after`` (the record), every session revoked, and the store's
        disabled and revoke-after entries written (the index, which the revocation mirror
        announces to every instance), all before the commit. So live tokens answer
        ``user_disabled``, refresh and login are refused, and enabling again does not bring
        the old tokens back.
        """
        now = self._clock.now()
        store, revocation = self._store, self._revocation
        async with self._db.transaction() as db:
            if disabled and keep_an_admin:
                await ensure_another_admin(db, user_id)  # 409 last_admin; locks admins first
            user = await db.get(User, user_id, with_for_update=True)
            if user is None:
                raise NotFoundError("No user has this id.")
            user.disabled = disabled
            user.updated_at = now
            if disabled:
                await self._sessions.end_all(db, user, reason="user_disabled")
                # The index entry is written before the commit: a failure leaves nothing.
                await mark_disabled(store, revocation, user_id=str(user.id), disabled=True)
            await self._audit.record(
                db, "user.disabled" if disabled else "user.enabled", subject=str(user.id)
            )
        if not disabled:
            # Deleted only after the commit: a revocation-index rebuild that read the row
            # before it would otherwise write the entry back (revocation_index.py re-reads).
            await mark_disabled(store, revocation, user_id=str(user.id), disabled=False)
        return user


async def find_by_email(db: AsyncSession, address: str) -> User | None:
    """The user with this already normalised address."""
    return (await db.execute(select(User).where(User.email == address))).scalar_one_or_none()


def is_email_conflict(exc: IntegrityError) -> bool:
    """Whether the violated constraint is the unique email index (Postgres or SQLite text)."""
    return "email" in str(exc.orig).lower()


def raise_if_email_conflict(exc: IntegrityError) -> None:
    """``EmailTakenError`` if ``is_email_conflict``; otherwise return (the caller re-raises)."""
    if is_email_conflict(exc):
        raise EmailTakenError() from None


__all__ = [
    "ADMIN_ROLE",
    "MAX_EMAIL_LENGTH",
    "AccountRules",
    "Accounts",
    "find_by_email",
    "is_email_conflict",
    "normalize_email",
    "raise_if_email_conflict",
    "try_normalize_email",
]
