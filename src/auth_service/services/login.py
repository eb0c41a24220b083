"""The password step of a login, with per-account-and-IP and per-account attempt limits.

Store keys: ``login:ip:<email>:<ip>`` (``AUTH_LOGIN_FAILURE_LIMIT``) and ``login:acct:<email>``
(``AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT``), fixed 15-minute windows counting attempts; a
successful login resets both, so what they count is failures in a row. If the store cannot
be reached the login is refused (503): limits that cannot be enforced are not skipped.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.crypto.passwords import PasswordHasher
from auth_service.errors import RateLimitedError, ServiceUnavailableError
from auth_service.services.accounts import authenticate
from auth_service.services.sessions import SessionContext, TokenPair, start_session
from auth_service.store.base import StoreUnavailableError

LOGIN_WINDOW = timedelta(minutes=15)


def _counter_keys(email: str, ip: str | None) -> tuple[str, str]:
    subject = email.strip().lower()
    return f"login:ip:{subject}:{ip or '-'}", f"login:acct:{subject}"


async def login_with_password(
    ctx: SessionContext,
    db: AsyncSession,
    hasher: PasswordHasher,
    *,
    email: str,
    password: str,
    ip: str | None,
    user_agent: str | None,
) -> TokenPair:
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
    return await start_session(ctx, db, user, amr=["pwd"], ip=ip, user_agent=user_agent)
