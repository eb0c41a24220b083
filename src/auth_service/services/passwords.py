"""Password change and reset.

- Change: the current password is required (401 ``invalid_credentials``; wrong attempts
  count against the account's login limit); every other session is revoked.
- Forgot: the HTTP answer (202, one body) is sent before any lookup, so neither its content
  nor its timing depends on whether the account exists; ``request_reset`` then runs in the
  background: for a real, enabled account it stores a reset token (256 bits, SHA-256 only,
  ``AUTH_PASSWORD_RESET_TTL_SECONDS``) and mails the link. Failures are logged, never shown.
  Store keys ``forgot:email:<email>`` and ``forgot:ip:<ip>`` limit requests (429).
- Reset: a token that is unknown, used or expired is 400 ``invalid_reset_token``; the new
  password meets the policy (422); the token and every other outstanding reset token of the
  user are burnt and every session is revoked. Two-factor authentication stays on.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.crypto.passwords import PasswordHasher, hash_opaque
from auth_service.db.models import PasswordResetToken, User
from auth_service.errors import (
    InvalidCredentialsError,
    InvalidRequestError,
    InvalidResetTokenError,
    NotFoundError,
)
from auth_service.services.accounts import normalize_email, set_password
from auth_service.services.limits import account_key, take_attempt
from auth_service.services.mail import Mailer, MailMessage, send_quietly
from auth_service.services.sessions import SessionContext, revoke_all_sessions

log = logging.getLogger(__name__)

FORGOT_WINDOW = timedelta(hours=1)
FORGOT_PER_EMAIL = 5
FORGOT_PER_IP = 30


async def change_password(
    ctx: SessionContext,
    db: AsyncSession,
    hasher: PasswordHasher,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    current_password: str,
    new_password: str,
) -> None:
    user = await db.get(User, user_id)
    if user is None:
        raise NotFoundError("No such user.")
    await take_attempt(ctx.store, account_key(user.email), ctx.settings.login_account_failure_limit)
    if not await hasher.verify(user.password_hash, current_password):
        raise InvalidCredentialsError("The current password is wrong.")
    await set_password(db, hasher, ctx.clock, user, new_password)
    await revoke_all_sessions(ctx, db, user_id=user.id, reason="password_changed", keep=session_id)


async def limit_reset_requests(ctx: SessionContext, *, email: str, ip: str | None) -> None:
    """Per email and per client IP (429): the same for every address, existing or not."""
    for key, limit in (
        (f"forgot:email:{email}", FORGOT_PER_EMAIL),
        (f"forgot:ip:{ip}", FORGOT_PER_IP),
    ):
        await take_attempt(ctx.store, key, limit, FORGOT_WINDOW)


def canonical_email(raw: str) -> str | None:
    try:
        return normalize_email(raw)
    except InvalidRequestError:
        return None


async def request_reset(
    ctx: SessionContext,
    sessionmaker: async_sessionmaker[AsyncSession],
    mailer: Mailer,
    *,
    email: str,
    link_base: str,
) -> bool:
    """Runs after the 202 is sent. True if a mail was sent (tests and logs only)."""
    try:
        async with sessionmaker() as db, db.begin():
            user = await db.scalar(select(User).where(User.email == email))
            if user is None or user.disabled:
                return False
            token = secrets.token_urlsafe(32)
            now = ctx.clock.now()
            db.add(
                PasswordResetToken(
                    user_id=user.id,
                    token_hash=hash_opaque(token),
                    created_at=now,
                    expires_at=now + timedelta(seconds=ctx.settings.password_reset_ttl_seconds),
                )
            )
    except Exception:
        log.exception("a password-reset request could not be recorded")
        return False
    link = f"{link_base}?{urlencode({'token': token})}"
    minutes = ctx.settings.password_reset_ttl_seconds // 60
    message = MailMessage(
        to=email,
        subject="Reset your password",
        text=(
            f"Someone asked to reset the password of {email}.\n\n"
            f"To choose a new password, open this link within {minutes} minutes:\n{link}\n\n"
            "If it was not you, ignore this mail: your password stays as it is."
        ),
    )
    return await send_quietly(mailer, message)


async def reset_password(
    ctx: SessionContext,
    db: AsyncSession,
    hasher: PasswordHasher,
    *,
    token: str,
    new_password: str,
) -> None:
    now = ctx.clock.now()
    row = await db.scalar(
        select(PasswordResetToken).where(PasswordResetToken.token_hash == hash_opaque(token))
    )
    if row is None:
        raise InvalidResetTokenError()
    # Lock the user first, then re-read the token: two resets of one user queue here instead
    # of each locking its own token and then waiting for the other's (a deadlock on Postgres).
    user = await db.scalar(select(User).where(User.id == row.user_id).with_for_update())
    await db.refresh(row, with_for_update=True)
    if user is None or user.disabled or row.used_at is not None or now >= row.expires_at:
        raise InvalidResetTokenError()
    await set_password(db, hasher, ctx.clock, user, new_password)  # 422 leaves the token usable
    await db.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    await revoke_all_sessions(ctx, db, user_id=user.id, reason="password_reset")
