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
from auth_service.crypto.passwords import PasswordHasher, hash_opaque
from auth_service.db.models import RecoveryCode, User
from auth_service.errors import (
    InvalidCredentialsError,
    InvalidMfaCodeError,
    MfaAlreadyEnabledError,
)
from auth_service.services.limits import (
    MFA_USER_ATTEMPTS,
    account_key,
    mfa_user_key,
    take_attempt,
)
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
    hasher: PasswordHasher
    issuer_name: str
    account_attempts: int  # AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT: password guesses on disable

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, clock: Clock, hasher: PasswordHasher
    ) -> TotpContext:
        return cls(
            store=store,
            envelope=Envelope(settings.secret_value(), purpose=TOTP_PURPOSE),
            clock=clock,
            hasher=hasher,
            issuer_name=settings.totp_issuer_name,
            account_attempts=settings.login_account_failure_limit,
        )


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    otpauth_uri: str


async def begin_setup(ctx: TotpContext, db: AsyncSession, user: User) -> TotpSetup:
    """A fresh secret, stored sealed and inactive until ``confirm``."""
    if user.mfa_enabled:
        raise MfaAlreadyEnabledError()
    secret = pyotp.random_base32()  # 32 characters = 160 bits (RFC 4226 §4 recommends 160)
    user.totp_secret_encrypted = ctx.envelope.seal(secret.encode(), associated_data=str(user.id))
    user.updated_at = ctx.clock.now()
    await db.flush()
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ctx.issuer_name)
    return TotpSetup(secret=secret, otpauth_uri=uri)


async def confirm_setup(ctx: TotpContext, db: AsyncSession, user: User, code: str) -> list[str]:
    """Turn TOTP on with a valid code; returns the new recovery codes (shown once)."""
    if user.mfa_enabled:
        raise MfaAlreadyEnabledError()
    if user.totp_secret_encrypted is None:
        raise InvalidMfaCodeError("Start with /auth/mfa/totp/setup.", status_code=400)
    if not await accept_totp(ctx, user, code):
        raise InvalidMfaCodeError(status_code=400)
    now = ctx.clock.now()
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.add_all(
        RecoveryCode(user_id=user.id, code_hash=hash_opaque(_canonical(code)), created_at=now)
        for code in codes
    )
    user.mfa_enabled = True
    user.totp_confirmed_at = now
    user.updated_at = now
    await db.flush()
    return codes


async def disable(
    ctx: TotpContext, db: AsyncSession, user: User, *, password: str, code: str
) -> None:
    """Turn TOTP off: the password (401) and a current code (400) are both required. Both
    guesses count against the same limits as a login (a stolen access token alone must not
    become a password or code oracle)."""
    await take_attempt(ctx.store, account_key(user.email), ctx.account_attempts)
    if not await ctx.hasher.verify(user.password_hash, password):
        raise InvalidCredentialsError()
    await take_attempt(ctx.store, mfa_user_key(user.id), MFA_USER_ATTEMPTS)
    if not user.mfa_enabled or not await accept_totp(ctx, user, code):
        raise InvalidMfaCodeError(status_code=400)
    user.mfa_enabled = False
    user.totp_secret_encrypted = None
    user.totp_confirmed_at = None
    user.updated_at = ctx.clock.now()
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    await db.flush()


async def accept_totp(ctx: TotpContext, user: User, code: str) -> bool:
    """Whether ``code`` is the user's current TOTP (±1 step), and not used before."""
    secret = _open_secret(ctx, user)
    step = matching_step(secret, code, ctx.clock.now()) if secret is not None else None
    if step is None:
        return False
    return await ctx.store.put_if_absent(f"totp-used:{user.id}:{step}", "1", _USED_CODE_TTL)


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
