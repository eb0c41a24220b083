"""TOTP two-factor authentication (RFC 6238 via pyotp: SHA-1, 6 digits, 30 s, ±1 step) and
recovery codes.

- The secret (160 random bits) is sealed with the envelope (purpose ``totp-secret``, AAD =
  the user id: a ciphertext moved to another user does not open). ``setup`` stores it while
  ``mfa_enabled`` stays false; ``confirm`` with a valid code turns it on and returns 10
  recovery codes, shown once.
- A code is accepted once per (user, time step), across instances: store key
  ``totp-used:<user id>:<step>`` set-if-absent, kept for longer than the ±1 step window.
- Recovery codes: 100 random bits (20 base32 characters, shown in groups of 5), stored as
  SHA-256 only, used once ever (``UPDATE ... WHERE used_at IS NULL`` in the caller's
  transaction, the one that issues the tokens).
"""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import RecoveryCode, User
from auth_service.errors import MfaAlreadyEnabledError, MfaCodeRejectedError, UnauthorizedError
from auth_service.services.limits import (
    MFA_USER_ATTEMPTS,
    mfa_user_key,
    reset_counters,
    take_attempt,
)
from auth_service.services.mail import MailMessage
from auth_service.services.passwords import verify_current_password
from auth_service.services.sessions import SessionContext, revoke_all_sessions
from auth_service.services.store_keys import totp_used_key
from auth_service.settings import Settings
from auth_service.store.base import Store

TOTP_PURPOSE = "totp-secret"
STEP_SECONDS = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32: 5 bits a character
_RECOVERY_LENGTH = 20  # 100 bits
_USED_CODE_TTL = timedelta(seconds=STEP_SECONDS * 4)  # outlives the ±1 step window
_SIX_DIGITS = re.compile(r"[0-9]{6}")  # ASCII only: \d would also match other scripts' digits


@dataclass(frozen=True, slots=True)
class TotpContext:
    store: Store
    envelope: Envelope
    clock: Clock
    issuer_name: str

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, clock: Clock) -> TotpContext:
        return cls(
            store=store,
            envelope=Envelope(settings.secret_value(), purpose=TOTP_PURPOSE),
            clock=clock,
            issuer_name=settings.totp_issuer_name,
        )


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    otpauth_uri: str


async def begin_setup(
    ctx: TotpContext, sessions: SessionContext, *, user_id: uuid.UUID, password: str
) -> TotpSetup:
    """A fresh secret, stored sealed and inactive until ``confirm``. The current password is
    required (a stolen access token alone cannot enrol an attacker's authenticator)."""
    user = await _signed_in_user(sessions, user_id)
    if user.mfa_enabled:
        raise MfaAlreadyEnabledError()
    await verify_current_password(sessions, user, password)
    secret = pyotp.random_base32()  # 32 characters = 160 bits (RFC 4226 §4 recommends 160)
    async with sessions.sessionmaker.begin() as db:
        current = await db.get(User, user_id, with_for_update=True)
        if current is None:
            raise UnauthorizedError("The access token is not valid (user_disabled).")
        if current.mfa_enabled:
            raise MfaAlreadyEnabledError()
        current.totp_secret_encrypted = ctx.envelope.seal(
            secret.encode(), associated_data=str(user.id)
        )
        current.updated_at = ctx.clock.now()
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ctx.issuer_name)
    return TotpSetup(secret=secret, otpauth_uri=uri)


async def confirm_setup(
    ctx: TotpContext,
    sessions: SessionContext,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    code: str,
) -> tuple[User, list[str]]:
    """Turn TOTP on with a valid code; the user's other sessions are revoked. Returns the user
    and the new recovery codes (shown once)."""
    user = await _signed_in_user(sessions, user_id)
    if user.mfa_enabled:
        raise MfaAlreadyEnabledError()
    if user.totp_secret_encrypted is None:
        raise MfaCodeRejectedError("Start with /auth/mfa/totp/setup.")
    if not await accept_totp(ctx, user, code):
        raise MfaCodeRejectedError()
    now = ctx.clock.now()
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    async with sessions.sessionmaker.begin() as db:
        current = await db.get(User, user_id, with_for_update=True)
        if current is None or current.totp_secret_encrypted != user.totp_secret_encrypted:
            raise MfaCodeRejectedError()  # a setup restarted meanwhile
        if current.mfa_enabled:
            raise MfaAlreadyEnabledError()
        await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        db.add_all(
            RecoveryCode(user_id=user.id, code_hash=hash_opaque(_canonical(c)), created_at=now)
            for c in codes
        )
        current.mfa_enabled = True
        current.totp_confirmed_at = now
        current.updated_at = now
        await revoke_all_sessions(
            sessions, db, user_id=user.id, reason="mfa_enabled", keep=session_id
        )
    return user, codes


async def disable(
    ctx: TotpContext,
    sessions: SessionContext,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    password: str,
    code: str,
) -> User:
    """Turn TOTP off: the password (401) and a current code (400) are both required, both
    counted against the same limits as a login (a stolen access token alone must not become
    a password or code oracle). The user's other sessions are revoked."""
    user = await _signed_in_user(sessions, user_id)
    await verify_current_password(sessions, user, password)
    await take_attempt(ctx.store, mfa_user_key(user.id), MFA_USER_ATTEMPTS)
    if not user.mfa_enabled or not await accept_totp(ctx, user, code):
        raise MfaCodeRejectedError()
    async with sessions.sessionmaker.begin() as db:
        current = await db.get(User, user_id, with_for_update=True)
        if current is None or not current.mfa_enabled:
            raise MfaCodeRejectedError()
        current.mfa_enabled = False
        current.totp_secret_encrypted = None
        current.totp_confirmed_at = None
        current.updated_at = ctx.clock.now()
        await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        await revoke_all_sessions(
            sessions, db, user_id=user.id, reason="mfa_disabled", keep=session_id
        )
    await reset_counters(ctx.store, [mfa_user_key(user.id)])
    return user


def change_notice(email: str, *, enabled: bool) -> MailMessage:
    """The mail a user gets when two-factor authentication is turned on or off."""
    state = "turned on" if enabled else "turned off"
    return MailMessage(
        to=email,
        subject=f"Two-factor authentication was {state}",
        text=(
            f"Two-factor authentication was just {state} for {email}, and every other "
            "session of the account was signed out.\n\n"
            "If it was not you, reset your password at once and contact support."
        ),
    )


async def _signed_in_user(sessions: SessionContext, user_id: uuid.UUID) -> User:
    async with sessions.reader() as db:
        user = await db.get(User, user_id)
    if user is None:
        raise UnauthorizedError("The access token is not valid (user_disabled).")
    return user


async def accept_totp(ctx: TotpContext, user: User, code: str) -> bool:
    """Whether ``code`` is the user's current TOTP (±1 step), and not used before."""
    secret = _open_secret(ctx, user)
    step = matching_step(secret, code, ctx.clock.now()) if secret is not None else None
    if step is None:
        return False
    return await ctx.store.put_if_absent(totp_used_key(user.id, step), "1", _USED_CODE_TTL)


async def use_recovery_code(db: AsyncSession, user_id: uuid.UUID, code: str, now: datetime) -> bool:
    """Burn one unused recovery code of the user; False if none matches (or it is used)."""
    canonical = _canonical(code)
    if len(canonical) != _RECOVERY_LENGTH:
        return False
    result = await db.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == hash_opaque(canonical),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (±1 around ``now``) whose code equals ``code``, compared in constant time."""
    if not _SIX_DIGITS.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def looks_like_totp(code: str) -> bool:
    return bool(_SIX_DIGITS.fullmatch(code.strip()))


def _open_secret(ctx: TotpContext, user: User) -> str | None:
    if user.totp_secret_encrypted is None:
        return None
    try:
        return ctx.envelope.open(user.totp_secret_encrypted, associated_data=str(user.id)).decode()
    except EnvelopeError:
        return None  # a row moved between users, or another secret: never a valid code


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
    return "-".join(raw[i : i + 5] for i in range(0, _RECOVERY_LENGTH, 5))


def _canonical(code: str) -> str:
    """Recovery codes are typed by people: case, spaces and hyphens do not matter."""
    return re.sub(r"[\s-]", "", code).upper()
