"""Login: the password step, with per-account-and-IP and per-account attempt limits, and the
second (TOTP or recovery code) step for users with two-factor authentication on.

Store keys: ``login:ip:<email>:<ip>`` (``AUTH_LOGIN_FAILURE_LIMIT``) and ``login:acct:<email>``
(``AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT``), fixed 15-minute windows counting attempts; a
successful login resets both, so what they count is failures in a row. If the store cannot
be reached the login is refused (503): limits that cannot be enforced are not skipped.

Second step: ``mfa:<sha256(mfa_token)>`` → ``{"user_id"}`` for ``AUTH_MFA_TOKEN_TTL_SECONDS``
(opaque, 256 bits, bound to the user, deleted on use: single use even under concurrency);
``mfa-fail:<sha256>`` counts its wrong codes and the 5th burns it; ``mfa:user:<id>`` limits
second-step attempts per user across mfa tokens (``MFA_USER_ATTEMPTS`` per 15 minutes).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.crypto.passwords import PasswordHasher, hash_opaque
from auth_service.db.models import User
from auth_service.errors import (
    InvalidMfaCodeError,
    InvalidMfaTokenError,
    RateLimitedError,
    ServiceUnavailableError,
)
from auth_service.services.accounts import authenticate
from auth_service.services.limits import (
    LOGIN_WINDOW,
    MFA_USER_ATTEMPTS,
    account_key,
    guard_store,
    mfa_user_key,
    take_attempt,
)
from auth_service.services.sessions import SessionContext, TokenPair, start_session
from auth_service.services.totp import TotpContext, accept_totp, looks_like_totp, use_recovery_code
from auth_service.store.base import StoreUnavailableError

MFA_TOKEN_FAILURES = 5  # wrong codes that burn an mfa_token


@dataclass(frozen=True, slots=True)
class MfaChallenge:
    mfa_token: str
    expires_in: int


def _counter_keys(email: str, ip: str | None) -> tuple[str, str]:
    subject = email.strip().lower()
    return f"login:ip:{subject}:{ip or '-'}", account_key(subject)


async def login_with_password(
    ctx: SessionContext,
    db: AsyncSession,
    hasher: PasswordHasher,
    *,
    email: str,
    password: str,
    ip: str | None,
    user_agent: str | None,
) -> TokenPair | MfaChallenge:
    settings = ctx.settings
    per_ip, per_account = _counter_keys(email, ip)
    try:
        by_ip = await ctx.store.hit(per_ip, settings.login_failure_limit, LOGIN_WINDOW)
        by_account = await ctx.store.hit(
            per_account, settings.login_account_failure_limit, LOGIN_WINDOW
        )
    except StoreUnavailableError as exc:
        raise ServiceUnavailableError("login is unavailable right now; retry shortly") from exc
    if not by_ip.allowed or not by_account.allowed:
        raise RateLimitedError(max(by_ip.retry_after_seconds, by_account.retry_after_seconds))
    user = await authenticate(db, hasher, ctx.clock, email=email, password=password)
    try:
        await ctx.store.reset_counter(per_ip)
        await ctx.store.reset_counter(per_account)
    except StoreUnavailableError as exc:
        raise ServiceUnavailableError("login is unavailable right now; retry shortly") from exc
    if user.mfa_enabled:
        return await _challenge(ctx, user)
    return await start_session(ctx, db, user, amr=["pwd"], ip=ip, user_agent=user_agent)


async def _challenge(ctx: SessionContext, user: User) -> MfaChallenge:
    token = secrets.token_urlsafe(32)
    ttl = ctx.settings.mfa_token_ttl_seconds
    await guard_store(
        ctx.store.put(
            _mfa_key(token), json.dumps({"user_id": str(user.id)}), timedelta(seconds=ttl)
        )
    )
    return MfaChallenge(mfa_token=token, expires_in=ttl)


async def login_with_second_factor(
    ctx: SessionContext,
    totp: TotpContext,
    db: AsyncSession,
    *,
    mfa_token: str,
    code: str,
    ip: str | None,
    user_agent: str | None,
) -> TokenPair:
    """The second step: a TOTP code (``amr: pwd, otp``) or a recovery code (``pwd, recovery``)."""
    key = _mfa_key(mfa_token)
    stored = (await guard_store(ctx.store.get_many([key])))[0]
    user = await _challenged_user(db, stored)
    if user is None:
        raise InvalidMfaTokenError()
    await take_attempt(ctx.store, mfa_user_key(user.id), MFA_USER_ATTEMPTS)
    if looks_like_totp(code):
        accepted, amr = await accept_totp(totp, user, code.strip()), ["pwd", "otp"]
    else:
        now = ctx.clock.now()
        accepted, amr = await use_recovery_code(db, user.id, code, now), ["pwd", "recovery"]
    if not accepted:
        window = timedelta(seconds=ctx.settings.mfa_token_ttl_seconds)
        failures = await guard_store(
            ctx.store.hit(f"mfa-fail:{hash_opaque(mfa_token)}", MFA_TOKEN_FAILURES, window)
        )
        if failures.count >= MFA_TOKEN_FAILURES:
            await guard_store(ctx.store.delete(key))
        raise InvalidMfaCodeError()
    # Consume the mfa_token: of two concurrent right answers only one deletes it. A recovery
    # code burnt above is rolled back with the caller's transaction if this fails.
    if not await guard_store(ctx.store.delete(key)):
        raise InvalidMfaTokenError()
    await guard_store(ctx.store.reset_counter(mfa_user_key(user.id)))
    return await start_session(ctx, db, user, amr=amr, ip=ip, user_agent=user_agent)


async def _challenged_user(db: AsyncSession, stored: str | None) -> User | None:
    if stored is None:
        return None
    user = await db.get(User, uuid.UUID(json.loads(stored)["user_id"]))
    if user is None or user.disabled or not user.mfa_enabled:
        return None
    return user


def _mfa_key(token: str) -> str:
    return f"mfa:{hash_opaque(token)}"
