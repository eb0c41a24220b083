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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import pyotp
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import RecoveryCode, User
from auth_service.db.session import Database
from auth_service.errors import MfaAlreadyEnabledError, MfaCodeRejectedError, UnauthorizedError
from auth_service.services.audit import Audit
from auth_service.services.limits import (
    MFA_USER_ATTEMPTS,
    mfa_user_key,
    reset_counters,
    take_attempt,
)
from auth_service.services.mail import FollowUp, Mailer, MailMessage, send_quietly
from auth_service.services.passwords import Passwords
from auth_service.services.sessions import Sessions
from auth_service.services.store_keys import totp_used_key
from auth_service.store.base import Store

TOTP_PURPOSE = "totp-secret"
STEP_SECONDS = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32: 5 bits a character
_RECOVERY_LENGTH = 20  # 100 bits
_USED_CODE_TTL = timedelta(seconds=STEP_SECONDS * 4)  # outlives the ±1 step window
_SIX_DIGITS = re.compile(r"[0-9]{6}")  # ASCII only: \d would also match other scripts' digits


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True, slots=True)
class TotpEnabled:
    recovery_codes: list[str]
    notify: FollowUp  # the mail to the user, sent after the answer


class Totp:
    """Two-factor enrolment (setup, confirm, disable) and the check of a code at login."""

    def __init__(
        self,
        db: Database,
        store: Store,
        envelope: Envelope,
        passwords: Passwords,
        sessions: Sessions,
        mailer: Mailer,
        issuer_name: str,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self._db = db
        self._audit = audit
        self._store = store
        self._envelope = envelope
        self._passwords = passwords
        self._sessions = sessions
        self._mailer = mailer
        self._issuer_name = issuer_name
        self._clock = clock

    @staticmethod
    def envelope_for(secret: str | Sequence[str]) -> Envelope:
        return Envelope(secret, purpose=TOTP_PURPOSE)

    async def begin_setup(self, *, user_id: uuid.UUID, password: str) -> TotpSetup:
        """A fresh secret, stored sealed and inactive until ``confirm``. The current password
        is required (a stolen access token alone cannot enrol an attacker's authenticator)."""
        user = await self._signed_in_user(user_id)
        if user.mfa_enabled:
            raise MfaAlreadyEnabledError()
        await self._passwords.verify_current(user, password)
        secret = pyotp.random_base32()  # 32 characters = 160 bits (RFC 4226 §4: 160)
        async with self._db.transaction() as db:
            current = await db.get(User, user_id, with_for_update=True)
            if current is None:
                raise UnauthorizedError("The access token is not valid (user_disabled).")
            if current.mfa_enabled:
                raise MfaAlreadyEnabledError()
            current.totp_secret_encrypted = self._envelope.seal(
                secret.encode(), associated_data=str(user.id)
            )
            current.updated_at = self._clock.now()
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=self._issuer_name)
        return TotpSetup(secret=secret, otpauth_uri=uri)

    async def confirm_setup(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID, code: str
    ) -> TotpEnabled:
        """Turn TOTP on with a valid code; the user's other sessions are revoked. Returns the
        new recovery codes (shown once) and the mail to send."""
        user = await self._signed_in_user(user_id)
        if user.mfa_enabled:
            raise MfaAlreadyEnabledError()
        if user.totp_secret_encrypted is None:
            raise MfaCodeRejectedError("Start with /auth/mfa/totp/setup.")
        if not await self.accept(user, code.strip()):
            raise MfaCodeRejectedError()
        now = self._clock.now()
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        async with self._db.transaction() as db:
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
            await self._sessions.revoke_all(
                db, user_id=user.id, reason="mfa_enabled", keep=session_id
            )
            await self._audit.record(db, "mfa.enabled", subject=str(user.id))
        return TotpEnabled(codes, self._notice(user.email, enabled=True))

    async def disable(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID, password: str, code: str
    ) -> FollowUp:
        """Turn TOTP off: the password (401) and a current code (400) are both required, both
        counted against the same limits as a login (a stolen access token alone must not
        become a password or code oracle). The user's other sessions are revoked. Returns the
        mail to send."""
        user = await self._signed_in_user(user_id)
        await self._passwords.verify_current(user, password)
        await take_attempt(self._store, mfa_user_key(user.id), MFA_USER_ATTEMPTS)
        if not user.mfa_enabled or not await self.accept(user, code.strip()):
            raise MfaCodeRejectedError()
        async with self._db.transaction() as db:
            current = await db.get(User, user_id, with_for_update=True)
            if current is None or not current.mfa_enabled:
                raise MfaCodeRejectedError()
            current.mfa_enabled = False
            current.totp_secret_encrypted = None
            current.totp_confirmed_at = None
            current.updated_at = self._clock.now()
            await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
            await self._sessions.revoke_all(
                db, user_id=user.id, reason="mfa_disabled", keep=session_id
            )
            await self._audit.record(db, "mfa.disabled", subject=str(user.id))
        await reset_counters(self._store, [mfa_user_key(user.id)])
        return self._notice(user.email, enabled=False)

    async def accept(self, user: User, code: str) -> bool:
        """Whether ``code`` is the user's current TOTP (±1 step), and not used before."""
        secret = self._open_secret(user)
        step = matching_step(secret, code, self._clock.now()) if secret is not None else None
        if step is None:
            return False
        return await self._store.put_if_absent(totp_used_key(user.id, step), "1", _USED_CODE_TTL)

    def _notice(self, email: str, *, enabled: bool) -> FollowUp:
        return partial(send_quietly, self._mailer, change_notice(email, enabled=enabled))

    async def _signed_in_user(self, user_id: uuid.UUID) -> User:
        async with self._db.read() as db:
            user = await db.get(User, user_id)
        if user is None:
            raise UnauthorizedError("The access token is not valid (user_disabled).")
        return user

    def _open_secret(self, user: User) -> str | None:
        if user.totp_secret_encrypted is None:
            return None
        try:
            opened = self._envelope.open(user.totp_secret_encrypted, associated_data=str(user.id))
        except EnvelopeError:
            return None  # a row moved between users, or another secret: never a valid code
        return opened.decode()


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


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
    return "-".join(raw[i : i + 5] for i in range(0, _RECOVERY_LENGTH, 5))


def _canonical(code: str) -> str:
    """Recovery codes are typed by people: case, spaces and hyphens do not matter."""
    return re.sub(r"[\s-]", "", code).upper()
