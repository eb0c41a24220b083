"""Password change and reset.

- Change: the current password is required (401 ``invalid_credentials``; every attempt
  counts against the account's login limit, a success resets it); every other session is
  revoked. Read, release, verify and hash, then one write that replaces the hash only if it
  is still the one verified (a concurrent change wins once, never silently twice).
- Forgot: the HTTP answer (202, one body) is sent before any lookup, so neither its content
  nor its timing depends on whether the account exists; ``send_reset_link`` then runs in the
  background: for a real, enabled account it stores a reset token (256 bits, SHA-256 only,
  ``AUTH_PASSWORD_RESET_TTL_SECONDS``) and mails the link. Failures are logged, never shown.
  Store keys ``forgot:email:<normalised email>`` and ``forgot:ip:<ip group>`` limit requests.
- Reset: a token that is unknown, used or expired is 400 ``invalid_reset_token``; the new
  password meets the policy (422) and is hashed before the write transaction; the token and
  every other outstanding reset token of the user are burnt and every session is revoked, in
  one transaction committed before the answer. Two-factor authentication stays on.
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
from auth_service.db.models import EmailVerificationToken, PasswordResetToken, User
from auth_service.db.session import Database
from auth_service.errors import InvalidCredentialsError, InvalidResetTokenError, NotFoundError
from auth_service.services.accounts import try_normalize_email
from auth_service.services.audit import Audit
from auth_service.services.limits import account_key, ip_group, reset_counters, take_attempt
from auth_service.services.mail import FollowUp, Mailer, MailMessage, send_quietly
from auth_service.services.password_policy import PasswordPolicy
from auth_service.services.sessions import Sessions
from auth_service.services.store_keys import forgot_email_key, forgot_ip_key
from auth_service.settings import Settings
from auth_service.store.base import Store

log = logging.getLogger(__name__)

FORGOT_WINDOW = timedelta(hours=1)
FORGOT_PER_EMAIL = 5
FORGOT_PER_IP = 30


@dataclass(frozen=True, slots=True)
class PasswordRules:
    account_failure_limit: int  # AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT: typing it again counts too
    reset_ttl: timedelta
    reset_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordRules:
        return cls(
            account_failure_limit=settings.login_account_failure_limit,
            reset_ttl=timedelta(seconds=settings.password_reset_ttl_seconds),
            reset_url=settings.password_reset_url,
        )


class Passwords:
    """Change, forgot and reset; and the "type your password again" check."""

    def __init__(
        self,
        db: Database,
        store: Store,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        sessions: Sessions,
        mailer: Mailer,
        rules: PasswordRules,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self._db = db
        self._audit = audit
        self._store = store
        self._hasher = hasher
        self._policy = policy
        self._sessions = sessions
        self._mailer = mailer
        self._rules = rules
        self._clock = clock

    async def change(
        self,
        *,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        current_password: str,
        new_password: str,
    ) -> None:
        async with self._db.read() as db:
            user = await db.get(User, user_id)
        if user is None:
            raise NotFoundError("No such user.")
        await self.verify_current(user, current_password)
        await self._policy.check(new_password, email=user.email)
        new_hash = await self._hasher.hash(new_password)
        async with self._db.transaction() as db:
            if not await self._replace_hash(db, user, new_hash):
                raise InvalidCredentialsError("The current password is wrong.")
            await self._sessions.revoke_all(
                db, user_id=user.id, reason="password_changed", keep=session_id
            )
            await self._audit.record(db, "password.changed", subject=str(user.id))

    async def verify_current(self, user: User, password: str) -> None:
        """A password a signed-in user must type again (change, TOTP setup and disable):
        counted against the account's login limit before argon2, which a success resets."""
        key = account_key(user.email)
        await take_attempt(self._store, key, self._rules.account_failure_limit)
        if not await self._hasher.verify(user.password_hash, password):
            raise InvalidCredentialsError("The current password is wrong.")
        await reset_counters(self._store, [key])

    async def forgot(self, *, email: str, ip: str | None) -> FollowUp | None:
        """Count the request per email and per client IP (429, the same for every address,
        existing or not) and return the work to run after the answer: None for an address
        that does not normalise (it can match no account)."""
        address = try_normalize_email(email)
        for key, limit in (
            (forgot_email_key(address or "-"), FORGOT_PER_EMAIL),
            (forgot_ip_key(ip_group(ip)), FORGOT_PER_IP),
        ):
            await take_attempt(self._store, key, limit, FORGOT_WINDOW)
        if address is None:
            return None
        return partial(self.send_reset_link, address)

    async def send_reset_link(self, address: str) -> bool:
        """Runs after the 202 is sent (``address`` normalised). True if a mail was sent."""
        try:
            async with self._db.transaction() as db:
                user = await db.scalar(select(User).where(User.email == address))
                if user is None or user.disabled:
                    return False
                token = secrets.token_urlsafe(32)
                now = self._clock.now()
                db.add(
                    PasswordResetToken(
                        user_id=user.id,
                        token_hash=hash_opaque(token),
                        created_at=now,
                        expires_at=now + self._rules.reset_ttl,
                    )
                )
                await self._audit.record(db, "password.forgot", subject=str(user.id))
        except Exception:
            log.exception("a password-reset request could not be recorded")
            return False
        link = f"{self._rules.reset_url}?{urlencode({'token': token})}"
        minutes = int(self._rules.reset_ttl.total_seconds()) // 60
        message = MailMessage(
            to=address,
            subject="Reset your password",
            text=(
                f"Someone asked to reset the password of {address}.\n\n"
                f"To choose a new password, open this link within {minutes} minutes:\n"
                f"{link}\n\nIf it was not you, ignore this mail: your password stays as it is."
            ),
        )
        return await send_quietly(self._mailer, message)

    async def reset(self, *, token: str, new_password: str) -> None:
        token_hash = hash_opaque(token)
        async with self._db.read() as db:
            row = await db.scalar(
                select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash)
            )
            user = await db.get(User, row.user_id) if row is not None else None
        if row is None or user is None or not _usable(row, self._clock.now()):
            raise InvalidResetTokenError()
        await self._policy.check(new_password, email=user.email)  # 422: token still usable
        new_hash = await self._hasher.hash(new_password)
        now = self._clock.now()
        async with self._db.transaction() as db:
            # Lock the user first, then re-read the token: two resets of one user queue here
            # instead of each locking its own token and waiting for the other's (a deadlock).
            locked = await db.scalar(select(User).where(User.id == user.id).with_for_update())
            current = await db.scalar(
                select(PasswordResetToken)
                .where(PasswordResetToken.token_hash == token_hash)
                .with_for_update()
            )
            if locked is None or locked.disabled or current is None or not _usable(current, now):
                raise InvalidResetTokenError()
            locked.password_hash = new_hash
            locked.password_changed_at = now
            locked.email_verified_at = locked.email_verified_at or now  # the link proves it
            locked.updated_at = now
            await db.execute(
                update(PasswordResetToken)
                .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
            await db.execute(
                update(EmailVerificationToken)
                .where(
                    EmailVerificationToken.user_id == user.id,
                    EmailVerificationToken.used_at.is_(None),
                )
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
            await self._sessions.revoke_all(db, user_id=user.id, reason="password_reset")
            await self._audit.record(db, "password.reset", subject=str(user.id))

    async def _replace_hash(self, db: AsyncSession, user: User, new_hash: str) -> bool:
        """Set the new hash only where the row still has the one the caller verified."""
        now = self._clock.now()
        result = await db.execute(
            update(User)
            .where(User.id == user.id, User.password_hash == user.password_hash)
            .values(password_hash=new_hash, password_changed_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1


def _usable(row: PasswordResetToken, now: datetime) -> bool:
    return row.used_at is None and now < row.expires_at
