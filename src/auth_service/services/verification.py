"""Email verification, ``AUTH_REQUIRE_EMAIL_VERIFICATION`` (design: invitations-verification.md).

A verification token is 256 random bits, stored as SHA-256 only, usable once within 24 h.
Opening it takes the account's password too: the token proves the mailbox, the password
proves the person who chose it. So an address someone else pre-registered can never be
verified by its owner's click into an account whose password the squatter knows (the owner
does not know that password; a registration of a never-used unverified account replaces it).

- ``issue``/``burn``: rows in the caller's transaction (registration and reset use them).
- ``resend``: counted per address and per IP group (429, the same for every address), the
  lookup and the mail run after the 202.
- ``verify``: a wrong password is 401 ``invalid_credentials`` (counted against the account's
  login limit; the token stays usable); then the user is locked, the token re-read, the
  password hash checked unchanged, ``email_verified_at`` set and every outstanding token
  burnt, committed before the answer. Unknown, used, expired, or a disabled user: 400.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher, hash_opaque
from auth_service.db.models import EmailVerificationToken, User
from auth_service.db.session import Database
from auth_service.errors import InvalidCredentialsError, InvalidVerificationTokenError
from auth_service.services.accounts import try_normalize_email
from auth_service.services.audit import Audit
from auth_service.services.limits import account_key, ip_group, reset_counters, take_attempt
from auth_service.services.mail import FollowUp, Mailer, MailMessage, send_quietly
from auth_service.services.store_keys import verify_email_key, verify_ip_key
from auth_service.settings import Settings
from auth_service.store.base import Store

log = logging.getLogger(__name__)

VERIFY_TTL = timedelta(hours=24)
VERIFY_WINDOW = timedelta(hours=1)
VERIFY_PER_EMAIL = 5  # verification mails (registration and resend) per address per hour
VERIFY_PER_IP = 30  # resends per IP group per hour


@dataclass(frozen=True, slots=True)
class VerificationRules:
    required: bool  # AUTH_REQUIRE_EMAIL_VERIFICATION
    account_failure_limit: int  # AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT: the password typed here
    url: str  # AUTH_EMAIL_VERIFICATION_URL
    reset_url: str  # AUTH_PASSWORD_RESET_URL: where an existing account's owner is sent

    @classmethod
    def from_settings(cls, settings: Settings) -> VerificationRules:
        return cls(
            required=settings.require_email_verification,
            account_failure_limit=settings.login_account_failure_limit,
            url=settings.email_verification_url,
            reset_url=settings.password_reset_url,
        )


class EmailVerification:
    def __init__(
        self,
        db: Database,
        store: Store,
        hasher: PasswordHasher,
        mailer: Mailer,
        rules: VerificationRules,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self._db = db
        self._store = store
        self._hasher = hasher
        self._mailer = mailer
        self.rules = rules
        self._clock = clock
        self._audit = audit

    async def count_mail(self, address: str) -> None:
        """One verification mail asked for ``address`` (normalised): 429 past the limit."""
        await take_attempt(self._store, verify_email_key(address), VERIFY_PER_EMAIL, VERIFY_WINDOW)

    def issue(self, db: AsyncSession, user_id: uuid.UUID) -> str:
        """Add a token row in the caller's transaction; the token itself (for the mail)."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        db.add(
            EmailVerificationToken(
                user_id=user_id,
                token_hash=hash_opaque(token),
                created_at=now,
                expires_at=now + VERIFY_TTL,
            )
        )
        return token

    async def burn(self, db: AsyncSession, user_id: uuid.UUID) -> None:
        """Use up every outstanding token of the user."""
        await db.execute(
            update(EmailVerificationToken)
            .where(
                EmailVerificationToken.user_id == user_id,
                EmailVerificationToken.used_at.is_(None),
            )
            .values(used_at=self._clock.now())
            .execution_options(synchronize_session=False)
        )

    def link_mail(self, address: str, token: str) -> FollowUp:
        link = f"{self.rules.url}?{urlencode({'token': token})}"
        message = MailMessage(
            to=address,
            subject="Verify your email address",
            text=(
                f"Someone registered {address}. To confirm it was you, open this link within "
                f"24 hours and type the password you chose:\n{link}\n\nIf it was not you, "
                "ignore this mail: without the link the account cannot be used."
            ),
        )
        return partial(send_quietly, self._mailer, message)

    def existing_mail(self, address: str) -> FollowUp:
        message = MailMessage(
            to=address,
            subject="You already have an account",
            text=(
                f"Someone tried to register {address}, which already has an account. If it was "
                f"you, sign in, or choose a new password at {self.rules.reset_url}.\n\nIf it "
                "was not you, ignore this mail: nothing has changed."
            ),
        )
        return partial(send_quietly, self._mailer, message)

    async def resend(self, *, email: str, ip: str | None) -> FollowUp | None:
        address = try_normalize_email(email)
        await self.count_mail(address or "-")
        await take_attempt(self._store, verify_ip_key(ip_group(ip)), VERIFY_PER_IP, VERIFY_WINDOW)
        if address is None:
            return None
        return partial(self._send_again, address)

    async def _send_again(self, address: str) -> bool:
        """Runs after the 202 (``address`` normalised). True if a mail was sent."""
        try:
            async with self._db.transaction() as db:
                user = await db.scalar(select(User).where(User.email == address).with_for_update())
                if user is None or user.disabled or user.email_verified_at is not None:
                    return False
                token = self.issue(db, user.id)
                await self._audit.record(db, "email.verification_resent", subject=str(user.id))
        except Exception:
            log.exception("a verification resend could not be recorded")
            return False
        return bool(await self.link_mail(address, token)())

    async def verify(self, token: str, password: str) -> None:
        token_hash = hash_opaque(token)
        async with self._db.read() as db:
            row = await db.scalar(
                select(EmailVerificationToken).where(
                    EmailVerificationToken.token_hash == token_hash
                )
            )
            user = await db.get(User, row.user_id) if row is not None else None
        if row is None or user is None or user.disabled or not _usable(row, self._clock.now()):
            raise InvalidVerificationTokenError()
        key = account_key(user.email)
        await take_attempt(self._store, key, self.rules.account_failure_limit)
        if not await self._hasher.verify(user.password_hash, password):
            raise InvalidCredentialsError("The password is not this account's.")
        await reset_counters(self._store, [key])
        now = self._clock.now()
        async with self._db.transaction() as db:
            # The user first, then the token (the order of password reset: no deadlock).
            locked = await db.scalar(select(User).where(User.id == user.id).with_for_update())
            current = await db.scalar(
                select(EmailVerificationToken)
                .where(EmailVerificationToken.token_hash == token_hash)
                .with_for_update()
            )
            if (
                locked is None
                or locked.disabled
                or locked.password_hash != user.password_hash  # changed meanwhile
                or current is None
                or not _usable(current, now)
            ):
                raise InvalidVerificationTokenError()
            locked.email_verified_at = locked.email_verified_at or now
            locked.updated_at = now
            await self.burn(db, locked.id)
            await self._audit.record(db, "user.email_verified", subject=str(locked.id))


def _usable(row: EmailVerificationToken, now: datetime) -> bool:
    return row.used_at is None and now < row.expires_at
